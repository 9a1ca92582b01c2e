// The cpu backend gives the same bits on any thread count: the GEMM (fixed tiles of single-threaded
// library calls, engine/cpu/blas.h) and every reduction (fixed chunks, engine/cpu/ops.cpp). Three
// training steps at 1, 2 and 3 threads must leave bitwise equal weights, on both families, with
// shapes large enough that every parallel region and the GEMM tiling are entered; with each fp32
// GEMM library the machine has (oneDNN, OpenBLAS).
#include <omp.h>

#include <cstring>
#include <random>

#include <catch2/catch.hpp>

#include "engine/cpu/blas.h"
#include "engine/model.h"

extern "C" void openblas_set_num_threads(int);

using namespace ift;

namespace {

// What a test runs at `threads`: OpenMP's count and the BLAS's own setter, as a user might set them.
void use_threads(int threads) {
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);
}

struct Batch {
  std::vector<int32_t> tokens, targets, positions, cu;
  BatchView view() const { return {static_cast<int>(tokens.size()), tokens, targets, positions, cu}; }
};

// Rows of T tokens, each packing samples of uneven lengths; a few untrained (prompt) tokens.
Batch make_batch(int V, int rows, int T, uint32_t seed) {
  std::mt19937 rng(seed);
  Batch b;
  b.cu.push_back(0);
  for (int r = 0; r < rows; ++r) {
    int left = T;
    while (left > 0) {
      const int len = std::min(left, 17 + static_cast<int>(rng() % 90));
      for (int i = 0; i < len; ++i) {
        b.tokens.push_back(static_cast<int32_t>(rng() % V));
        b.positions.push_back(i);
      }
      b.cu.push_back(b.cu.back() + len);
      left -= len;
    }
  }
  for (size_t s = 0; s + 1 < b.cu.size(); ++s)
    for (int i = b.cu[s]; i < b.cu[s + 1]; ++i)
      b.targets.push_back(i + 1 < b.cu[s + 1] && rng() % 5 ? b.tokens[i + 1] : -1);
  return b;
}

std::vector<float> train_three_steps(const ModelConfig& config, int threads) {
  use_threads(threads);
  CpuModel<float> model(config);
  model.init_random(7);
  AdamWConfig adamw;
  adamw.weight_decay = 0.1f;
  model.enable_optimizer(adamw);
  for (int s = 0; s < 3; ++s) {
    const Batch batch = make_batch(config.vocab_size, 2, 160, 100 + s);
    const BatchView view = batch.view();
    model.zero_grads();
    model.forward(view, static_cast<double>(view.trained_tokens()));
    model.backward();
    model.step(3e-3f);
  }
  return model.params_to_host();
}

// Runs `body` once per fp32 GEMM library this machine has (oneDNN where installed, and OpenBLAS),
// then restores the library of the process.
template <class F>
void for_each_fp32_library(F body) {
  const std::string saved = cpu::gemm_kernels().fp32;
  std::vector<std::string> libraries = {"OpenBLAS"};
  if (cpu::onednn_available()) libraries.insert(libraries.begin(), "oneDNN");
  for (const std::string& library : libraries) {
    INFO("fp32 GEMM: " << library);
    cpu::use_fp32_gemm(library);
    body();
  }
  cpu::use_fp32_gemm(saved);
}

void check_thread_independent(const ModelConfig& config) {
  const int saved = omp_get_max_threads();
  for_each_fp32_library([&] {
    const std::vector<float> one = train_three_steps(config, 1);
    for (int threads : {2, 3}) {
      const std::vector<float> many = train_three_steps(config, threads);
      REQUIRE(many.size() == one.size());
      size_t differ = 0, first = 0;
      for (size_t i = 0; i < one.size(); ++i)
        if (std::memcmp(&one[i], &many[i], sizeof(float)) != 0 && differ++ == 0) first = i;
      INFO("threads " << threads << ": " << differ << " of " << one.size() << " weights differ from one thread's"
                      << (differ ? ", the first at flat index " + std::to_string(first) : std::string()));
      CHECK(differ == 0);
    }
  });
  use_threads(saved);
}

}  // namespace

TEST_CASE("training steps give bitwise the same weights on 1, 2 and 3 threads: gpt2", "[threads]") {
  check_thread_independent(ModelConfig::from_json({{"model_type", "gpt2"}, {"vocab_size", 1500}, {"n_embd", 96},
                                                   {"n_layer", 2}, {"n_head", 3}, {"n_positions", 256}}));
}

TEST_CASE("training steps give bitwise the same weights on 1, 2 and 3 threads: llama", "[threads]") {
  check_thread_independent(ModelConfig::from_json({{"model_type", "llama"}, {"vocab_size", 1500}, {"hidden_size", 96},
                                                   {"num_hidden_layers", 2}, {"num_attention_heads", 6},
                                                   {"num_key_value_heads", 2}, {"intermediate_size", 200},
                                                   {"tie_word_embeddings", false}}));
}

TEST_CASE("the tiled GEMM is thread-independent and matches a double reference", "[threads]") {
  const int saved = omp_get_max_threads();
  struct Case {
    bool ta, tb;
    int m, n, k;
  };
  // Awkward sizes; the larger ones are cut into tiles, the smallest is one call.
  const Case cases[] = {{false, true, 97, 1025, 33},  {false, false, 320, 1500, 96}, {true, false, 96, 1500, 320},
                        {true, true, 513, 257, 129}, {false, true, 20, 30, 40},      {false, true, 1000, 2000, 64}};
  for_each_fp32_library([&] {
    for (const Case& c : cases) {
      const uint32_t seed = 11u * c.m + c.n;
      std::mt19937 rng(seed);
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      std::vector<float> a(size_t(c.m) * c.k), b(size_t(c.k) * c.n), c0(size_t(c.m) * c.n);
      for (float& x : a) x = u(rng);
      for (float& x : b) x = u(rng);
      for (float& x : c0) x = u(rng);
      const int lda = c.ta ? c.m : c.k, ldb = c.tb ? c.k : c.n;
      const auto A = [&](int i, int p) { return double(c.ta ? a[size_t(p) * lda + i] : a[size_t(i) * lda + p]); };
      const auto B = [&](int p, int j) { return double(c.tb ? b[size_t(j) * ldb + p] : b[size_t(p) * ldb + j]); };
      std::vector<float> first;
      for (int threads : {1, 2, 3}) {
        use_threads(threads);
        std::vector<float> out = c0;
        cpu::gemm(c.ta, c.tb, c.m, c.n, c.k, 0.75f, a.data(), lda, b.data(), ldb, 0.5f, out.data(), c.n);
        INFO("seed " << seed << ", " << c.m << "x" << c.n << "x" << c.k << " ta " << c.ta << " tb " << c.tb
                     << ", threads " << threads);
        if (threads == 1) {
          first = out;
          double worst = 0;
          for (int i = 0; i < c.m; i += 7)
            for (int j = 0; j < c.n; j += 5) {
              double ref = 0.5 * c0[size_t(i) * c.n + j];
              for (int p = 0; p < c.k; ++p) ref += 0.75 * A(i, p) * B(p, j);
              // fp32 accumulation over k terms of size <= 1: |error| <= k * 2^-23 * a few.
              worst = std::max(worst, std::abs(out[size_t(i) * c.n + j] - ref) / (c.k * 1.2e-7 * 4 + 1e-6));
            }
          CHECK(worst <= 1.0);
        } else {
          CHECK(std::memcmp(out.data(), first.data(), out.size() * sizeof(float)) == 0);
        }
      }
    }
  });
  use_threads(saved);
}
