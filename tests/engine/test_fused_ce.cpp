// The fused linear cross-entropy (ModelOptions::fused_ce, engine/transformer.inl): the classifier
// and loss over chunks of the trained rows must give the loss and every gradient of the unfused
// path (the (N, V) logits, one cross-entropy, one classifier backward), on every backend and
// precision, at awkward vocabularies and batch sizes, with untrained rows, whole untrained segments
// and all-masked batches.
//
// Tolerances. What differs is the order of the sums that cross chunks: the loss (per-chunk sums
// added on the host, in double) and the classifier's dW (accumulated chunk after chunk instead of in
// one GEMM over N). Every other value is the same per-row computation. fp32 (cpu and emu): loss 1e-6
// relative, gradients 1e-5 of the largest |value| of the tensor (fp32 roundoff is 6e-8; a sum of
// 100 terms re-associated moves it by a few of those). double (cpu): 1e-12. bf16 (emu): the logits
// and dlogits are rounded to bf16 the same way in both paths, and dW accumulates in fp32 either way:
// loss 1e-5 relative, gradients 1e-4 of the largest |value|.
#include <cmath>
#include <random>

#include "engine/model.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

using bf16 = __nv_bfloat16;

struct Batch {
  std::vector<int32_t> tokens, targets, positions, cu;
  BatchView view() const { return {static_cast<int>(tokens.size()), tokens, targets, positions, cu}; }
};

ModelConfig model_of(const std::string& family, int V) {
  if (family == "gpt2")
    return ModelConfig::from_json({{"model_type", "gpt2"}, {"vocab_size", V}, {"n_embd", 16}, {"n_layer", 1},
                                   {"n_head", 2}, {"n_positions", 128}});
  return ModelConfig::from_json({{"model_type", "llama"}, {"vocab_size", V}, {"hidden_size", 16},
                                 {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"num_key_value_heads", 1},
                                 {"intermediate_size", 24}, {"tie_word_embeddings", family == "llama_tied"}});
}

// N tokens in segments of up to 40; about a third of the targets masked at random, a whole segment
// masked (a row with no trained token) when there are three or more, and the last of each segment.
Batch batch_of(int N, int V, uint32_t seed, bool all_masked = false) {
  std::mt19937 rng(seed);
  Batch b;
  b.cu = {0};
  while (b.cu.back() < N) b.cu.push_back(std::min(N, b.cu.back() + 1 + int(rng() % 40)));
  for (size_t s = 0; s + 1 < b.cu.size(); ++s)
    for (int i = b.cu[s]; i < b.cu[s + 1]; ++i) {
      b.tokens.push_back(static_cast<int32_t>(rng() % V));
      b.positions.push_back(i - b.cu[s]);
    }
  for (size_t s = 0; s + 1 < b.cu.size(); ++s)
    for (int i = b.cu[s]; i < b.cu[s + 1]; ++i) {
      const bool masked = all_masked || i + 1 == b.cu[s + 1] || rng() % 3 == 0 || (b.cu.size() > 3 && s == 1);
      b.targets.push_back(masked ? -1 : static_cast<int32_t>(rng() % V));
    }
  if (!all_masked && N > 1) b.targets[0] = static_cast<int32_t>(rng() % V);  // at least one trained token
  if (N == 1 && !all_masked) b.targets[0] = static_cast<int32_t>(rng() % V);
  return b;
}

struct Result {
  double loss = 0;
  std::vector<float> grads;
};

template <class B>
Result run(const ModelConfig& config, const Batch& b, ModelOptions options, int passes = 1) {
  Model<B> model(config, options);
  model.init_random(7, 0.5);  // large enough weights that the softmax is far from uniform
  Result r;
  const int64_t trained = b.view().trained_tokens();
  for (int i = 0; i < passes; ++i) {  // passes > 1: gradients accumulate over backward calls
    r.loss = model.forward(b.view(), trained > 0 ? static_cast<double>(trained) : 1.0);
    model.backward();
  }
  r.grads = model.grads_to_host();
  return r;
}

template <class B>
void check_equal(const std::string& family, int V, int N, int chunk, double loss_rtol, double grads_rtol) {
  const char* precision = std::is_same_v<typename B::act_t, bf16> ? "bf16" : sizeof(typename B::act_t) == 8 ? "fp64" : "fp32";
  const uint32_t seed = static_cast<uint32_t>(V * 131 + N);
  INFO(family << " on " << name_of(B::kind) << " " << precision << ", V=" << V << " N=" << N << " chunk=" << chunk
              << " seed " << seed);
  const ModelConfig config = model_of(family, V);
  const Batch b = batch_of(N, V, seed);
  ModelOptions unfused, fused;
  unfused.fused_ce = false, fused.fused_ce = true, fused.fused_ce_chunk = chunk;
  const Result want = run<B>(config, b, unfused, 2), got = run<B>(config, b, fused, 2);
  INFO("loss " << got.loss << " vs " << want.loss);
  CHECK(std::abs(got.loss - want.loss) <= loss_rtol * std::abs(want.loss));
  const ParamLayout layout = ParamLayout::build(config);
  for (const ParamView& v : layout.views) {
    const auto first = static_cast<std::ptrdiff_t>(v.offset), last = first + v.numel();
    require_close_to_max(v.name, std::vector<float>(got.grads.begin() + first, got.grads.begin() + last),
                         std::vector<float>(want.grads.begin() + first, want.grads.begin() + last), grads_rtol);
  }
  // Something was trained (V > 1: the softmax over one column has a zero gradient everywhere).
  if (V > 1) {
    double norm = 0;
    for (float g : got.grads) norm += double(g) * g;
    CHECK(norm > 0);
  }
}

}  // namespace

TEST_CASE("fused cross-entropy equals the unfused path: cpu fp32 and fp64", "[fused_ce]") {
  for (const std::string family : {"gpt2", "llama", "llama_tied"})
    for (const int V : {1, 61})
      for (const int N : {1, 97})
        for (const int chunk : {1, 7, 0}) {
          check_equal<CpuBackend<float>>(family, V, N, chunk, 1e-6, 1e-5);
          check_equal<CpuBackend<double>>(family, V, N, chunk, 1e-12, 1e-12);
        }
  check_equal<CpuBackend<float>>("llama", 50257, 97, 0, 1e-6, 1e-5);
  check_equal<CpuBackend<float>>("gpt2", 50257, 97, 13, 1e-6, 1e-5);
}

TEST_CASE("fused cross-entropy equals the unfused path: emu fp32 and bf16", "[fused_ce]") {
  for (const std::string family : {"gpt2", "llama_tied"})
    for (const int V : {1, 61})
      for (const int N : {1, 97}) {
        check_equal<EmuBackend<float>>(family, V, N, 7, 1e-6, 1e-5);
        check_equal<EmuBackend<bf16>>(family, V, N, 7, 1e-5, 1e-4);
      }
  check_equal<EmuBackend<float>>("llama", 61, 97, 0, 1e-6, 1e-5);
  check_equal<EmuBackend<bf16>>("llama", 61, 97, 1, 1e-5, 1e-4);
}

TEST_CASE("fused cross-entropy at a 50257 vocabulary in the emulator", "[fused_ce][slow]") {
  check_equal<EmuBackend<float>>("gpt2", 50257, 97, 13, 1e-6, 1e-5);
  check_equal<EmuBackend<bf16>>("llama", 50257, 97, 0, 1e-5, 1e-4);
}

TEST_CASE("fused cross-entropy: an all-masked batch has zero loss and zero gradients", "[fused_ce]") {
  const auto check = [&]<class B>() {
    INFO(name_of(B::kind));
    const ModelConfig config = model_of("llama", 61);
    const Batch b = batch_of(33, 61, 5, true);
    ModelOptions fused;
    fused.fused_ce = true, fused.fused_ce_chunk = 4;
    const Result got = run<B>(config, b, fused);
    CHECK(got.loss == 0.0);
    for (size_t i = 0; i < got.grads.size(); ++i) {
      INFO("gradient " << i);
      REQUIRE(got.grads[i] == 0.0f);
    }
  };
  check.template operator()<CpuBackend<float>>();
  check.template operator()<EmuBackend<float>>();
  check.template operator()<EmuBackend<bf16>>();
}

TEST_CASE("fused cross-entropy: on by default above a 32k vocabulary - the logits are refused", "[fused_ce]") {
  CHECK_FALSE(ModelOptions{}.fused(model_of("llama", 32768)));
  CHECK(ModelOptions{}.fused(model_of("llama", 32769)));
  ModelOptions off;
  off.fused_ce = false;
  CHECK_FALSE(off.fused(model_of("llama", 128256)));
  // The automatic chunk: about N C / Vp rows, rounded up to 64, at least 256, at most N.
  const ModelConfig big = ModelConfig::from_json({{"model_type", "llama"}, {"vocab_size", 128256},
                                                  {"hidden_size", 4096}, {"num_hidden_layers", 1},
                                                  {"num_attention_heads", 32}, {"intermediate_size", 64}});
  CHECK(fused_ce_chunk_rows(big, 8192, {}) == 320);  // 8192 x 4096 / 128256 = 261.6
  CHECK(fused_ce_chunk_rows(big, 100, {}) == 100);
  CHECK(fused_ce_chunk_rows(big, 1000, {}) == 256);
  CHECK(fused_ce_chunk_rows(big, 8192, off) == 0);
  // The plan holds one chunk of logits instead of all N rows.
  const int64_t Vp = big.padded_vocab(), N = 8192;
  const int64_t saved = Model<EmuBackend<bf16>>::plan(big, N, off, true)[MemoryPart::activations] -
                        Model<EmuBackend<bf16>>::plan(big, N, {}, true)[MemoryPart::activations];
  CHECK(saved == (N - 320) * Vp * 2);

  const ModelConfig config = model_of("llama", 61);
  const Batch b = batch_of(20, 61, 3);
  ModelOptions fused;
  fused.fused_ce = true;
  Model<CpuBackend<float>> model(config, fused);
  model.init_random(1);
  model.forward(b.view(), 10.0);
  CHECK_THROWS_WITH(model.logits(), Catch::Contains("keeps no (N, V) logits"));
}
