// The elementwise and embedding kernels (kernels/elementwise.cu), run in the SIMT emulator, against
// the CPU reference (engine/cpu/ops.h) on awkward sizes, in fp32 and bf16 storage. Where the kernel
// and the float reference do the very same fp32 operations (embedding, residual add, casts, the
// in-order embedding scatter-add) results must be equal bit for bit. Otherwise:
//   fp32 storage: |got - ref| <= 1e-5 * |ref| + 1e-5 * max|ref| element by element, against the
//     CPU reference run in double on the same inputs. The max|ref| term covers outputs that are
//     sums with cancellation (normalised rows, gradients), whose small entries carry an absolute,
//     not a relative, fp32 error.
//   bf16 storage (FlashAttention's rule): max|got - ref| <= 2 * max|naive - ref| + 1e-5 * max|ref|,
//     where ref is the CPU reference in double on the bf16 inputs and naive is the same reference
//     run in float on the same inputs with its outputs rounded to bf16 (bf16 storage, fp32-or-
//     better math). The kernel may be at most twice as far from the truth as the unavoidable
//     rounding of a bf16 result.
// Outputs stored in fp32 (mean, rstd, parameter gradients) follow the fp32 rule whatever the input
// storage, since they are fp32 sums of exactly representable inputs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_bf16.h>

#include "engine/cpu/ops.h"
#include "engine/base/error.h"
#include "kernels/elementwise.h"
#include "kernels/simt/runtime.h"
#include "tests/kernels/kernel_support.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

KernelVector<int32_t> random_ids(int n, int hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, hi - 1);
  KernelVector<int32_t> ids(n);
  for (auto& id : ids) id = dist(rng);
  return ids;
}

// The backward as a backend runs it: the ids grouped on the host, the groups in kernel memory.
template <class T>
void embedding_backward_bucketed(float* dwte, float* dwpe, const T* dout, const int32_t* tokens, const int32_t* positions,
                                 const EmbeddingArgs& a) {
  KernelVector<int32_t> buckets(embedding_buckets_ints(a.N), -7);  // stale values must not matter
  embedding_buckets(buckets.data(), tokens, dwpe ? positions : nullptr, a);
  embedding_backward(dwte, dwpe, dout, buckets.data(), a, nullptr);
}

template <class T>
void check_embedding(int N, int C, bool with_wpe, uint64_t seed, float scale = 1, int V = 50) {
  INFO("embedding<" << type_name<T>() << "> N=" << N << " C=" << C << (with_wpe ? " +wpe" : "") << " scale=" << scale
                    << " V=" << V << " seed=" << seed);
  const int P = 40;
  const auto tokens = random_ids(N, V, seed);  // 50 ids for up to 1025 rows: many repeats; V = 1: one id only
  KernelVector<int32_t> positions(N);
  for (int n = 0; n < N; ++n) positions[n] = n % P;
  const auto wte = to_storage<T>(random_vector<float>(size_t(V) * C, seed + 1));
  const auto wpe = to_storage<T>(random_vector<float>(size_t(P) * C, seed + 2));

  // Forward: the sum of two stored values in fp32, rounded once, is what the float reference
  // computes too: equal bit for bit.
  KernelVector<T> out(size_t(N) * C);
  embedding_forward(out.data(), tokens.data(), with_wpe ? positions.data() : nullptr, wte.data(),
                    with_wpe ? wpe.data() : nullptr, EmbeddingArgs{N, C, V, P, scale}, nullptr);
  const auto wtef = to_floats(wte), wpef = to_floats(wpe);
  KernelVector<float> ref(size_t(N) * C);
  cpu::embedding_forward(ref.data(), tokens.data(), positions.data(), wtef.data(), with_wpe ? wpef.data() : nullptr, EmbeddingArgs{N, C, V, P, scale});
  CHECK(bitwise_equal(out, to_storage<T>(ref)));

  // Backward: rows summed in order in fp32, as the reference does: equal bit for bit, including
  // the accumulation (+=) into non-zero gradients.
  const auto dout = to_storage<T>(random_vector<float>(size_t(N) * C, seed + 3));
  const auto doutf = to_floats(dout);
  KernelVector<float> dwte = random_vector<float>(size_t(V) * C, seed + 4), dwpe = random_vector<float>(size_t(P) * C, seed + 5);
  KernelVector<float> dwte_ref = dwte, dwpe_ref = dwpe;
  embedding_backward_bucketed(dwte.data(), with_wpe ? dwpe.data() : nullptr, dout.data(), tokens.data(),
                              with_wpe ? positions.data() : nullptr, EmbeddingArgs{N, C, V, P, scale});
  cpu::embedding_backward(dwte_ref.data(), with_wpe ? dwpe_ref.data() : nullptr, doutf.data(), tokens.data(),
                          positions.data(), EmbeddingArgs{N, C, V, P, scale});
  CHECK(bitwise_equal(dwte, dwte_ref));
  CHECK(bitwise_equal(dwpe, dwpe_ref));
  // Against double: the fp32 rule.
  KernelVector<double> dwte_d(dwte_ref.size());
  {
    KernelVector<double> d0(dwte_ref.size());
    const KernelVector<float> init = random_vector<float>(size_t(V) * C, seed + 4);
    for (size_t i = 0; i < d0.size(); ++i) d0[i] = init[i];
    const auto doutd = to_double(dout);
    cpu::embedding_backward<double>(d0.data(), nullptr, doutd.data(), tokens.data(), nullptr,
                                    EmbeddingArgs{N, C, V, 0, scale});
    dwte_d = d0;
  }
  require_fp32_close("embedding_backward dwte vs double", to_double(dwte), dwte_d);
}

template <class T>
void check_gelu(int64_t n, uint64_t seed) {
  const std::string name = std::string("gelu<") + type_name<T>() + "> n=" + std::to_string(n) + " seed=" + std::to_string(seed);
  INFO(name);
  const auto inp = to_storage<T>(random_vector<float>(n, seed, -5.0, 5.0));
  const auto dout = to_storage<T>(random_vector<float>(n, seed + 1));
  const auto inpd = to_double(inp), doutd = to_double(dout);
  const auto inpf = to_floats(inp), doutf = to_floats(dout);

  KernelVector<T> out(n), dinp(n);
  gelu_forward(out.data(), inp.data(), n, nullptr);
  gelu_backward(dinp.data(), inp.data(), dout.data(), n, nullptr);
  KernelVector<double> ref(n), dref(n);
  KernelVector<float> naive(n), dnaive(n);
  cpu::gelu_forward(ref.data(), inpd.data(), n);
  cpu::gelu_forward(naive.data(), inpf.data(), n);
  cpu::gelu_backward(dref.data(), inpd.data(), doutd.data(), n);
  cpu::gelu_backward(dnaive.data(), inpf.data(), doutf.data(), n);
  require_storage_close(name + " forward", out, ref, naive);
  require_storage_close(name + " backward", dinp, dref, dnaive);

  KernelVector<T> inplace = dout;  // dinp aliasing dout
  gelu_backward(inplace.data(), inp.data(), inplace.data(), n, nullptr);
  CHECK(bitwise_equal(inplace, dinp));
}

template <class T>
void check_glu(GluActivation act, int N, int F, uint64_t seed) {
  const std::string name = std::string(act == GluActivation::silu ? "swiglu<" : "geglu<") + type_name<T>() +
                           "> N=" + std::to_string(N) + " F=" + std::to_string(F) + " seed=" + std::to_string(seed);
  const GluArgs args{N, F, act};
  INFO(name);
  const size_t NF = size_t(N) * F;
  const auto inp = to_storage<T>(random_vector<float>(2 * NF, seed, -4.0, 4.0));
  const auto dout = to_storage<T>(random_vector<float>(NF, seed + 1));
  const auto inpd = to_double(inp), doutd = to_double(dout);
  const auto inpf = to_floats(inp), doutf = to_floats(dout);

  KernelVector<T> out(NF), dinp(2 * NF);
  glu_forward(out.data(), inp.data(), args, nullptr);
  glu_backward(dinp.data(), inp.data(), dout.data(), args, nullptr);
  KernelVector<double> ref(NF), dref(2 * NF);
  KernelVector<float> naive(NF), dnaive(2 * NF);
  cpu::glu_forward(ref.data(), inpd.data(), args);
  cpu::glu_forward(naive.data(), inpf.data(), args);
  cpu::glu_backward(dref.data(), inpd.data(), doutd.data(), args);
  cpu::glu_backward(dnaive.data(), inpf.data(), doutf.data(), args);
  require_storage_close(name + " forward", out, ref, naive);
  require_storage_close(name + " backward", dinp, dref, dnaive);
}

template <class T>
void check_residual(int64_t n, uint64_t seed, int offset = 0) {
  INFO("residual<" << type_name<T>() << "> n=" << n << (offset ? " misaligned" : "") << " seed=" << seed);
  const auto a = to_storage<T>(random_vector<float>(n + offset, seed));
  const auto b = to_storage<T>(random_vector<float>(n + offset, seed + 1));
  KernelVector<T> out(n + offset);
  residual_forward(out.data() + offset, a.data() + offset, b.data() + offset, n, nullptr);
  const auto af = to_floats(a), bf = to_floats(b);
  KernelVector<float> ref(n + offset);
  cpu::residual_forward(ref.data(), af.data(), bf.data(), n + offset);
  const KernelVector<T> got(out.begin() + offset, out.end());
  const KernelVector<T> want = to_storage<T>(KernelVector<float>(ref.begin() + offset, ref.end()));
  CHECK(bitwise_equal(got, want));  // one fp32 add, rounded once: exactly the reference's
  KernelVector<T> inplace = a;       // out aliasing a
  residual_forward(inplace.data() + offset, inplace.data() + offset, b.data() + offset, n, nullptr);
  CHECK(bitwise_equal(KernelVector<T>(inplace.begin() + offset, inplace.end()), want));
}

template <class T>
KernelVector<float> run_bias_backward(const KernelVector<T>& dout, const KernelVector<float>& db0, int N, int O) {
  KernelVector<float> db = db0;
  KernelVector<float> scratch(bias_backward_scratch_floats(N, O), std::nanf(""));
  bias_backward(db.data(), dout.data(), N, O, scratch.data(), scratch.size(), nullptr);
  return db;
}

template <class T>
void check_bias_backward(int N, int O, uint64_t seed) {
  const std::string name = std::string("bias_backward<") + type_name<T>() + "> N=" + std::to_string(N) + " O=" +
                           std::to_string(O) + " seed=" + std::to_string(seed);
  INFO(name);
  const auto dout = to_storage<T>(random_vector<float>(size_t(N) * O, seed));
  const KernelVector<float> db0 = random_vector<float>(O, seed + 1);
  const auto db = run_bias_backward<T>(dout, db0, N, O);
  // The reference: matmul_backward's db (column sums of dout, +=), in double.
  KernelVector<double> ref(db0.begin(), db0.end());
  const auto doutd = to_double(dout);
  KernelVector<double> dw(O, 0.0), inp(1, 0.0), w(O, 0.0);
  cpu::matmul_backward<double>(nullptr, dw.data(), ref.data(), doutd.data(), inp.data(), w.data(), {N, 1, O});
  (void)dw;
  require_fp32_close(name, to_double(db), ref);
}

}  // namespace

TEST_CASE("elementwise kernels: embedding forward and deterministic backward", "[kernels][elementwise]") {
  uint64_t seed = 100;
  for (int N : {1, 97, 1025})
    for (int C : {37, 64, 768}) {
      if (N * C > 1025 * 64) continue;  // keep the emulated run short
      for (bool with_wpe : {true, false}) {
        check_embedding<float>(N, C, with_wpe, seed);
        check_embedding<bf16>(N, C, with_wpe, seed + 1);
        // Gemma's scale: sqrt(hidden) rounded to the storage type, as the model passes it
        const float scale = static_cast<float>(static_cast<bf16>(std::sqrt(float(C))));
        check_embedding<float>(N, C, with_wpe, seed + 2, scale);
        check_embedding<bf16>(N, C, with_wpe, seed + 3, scale);
        seed += 10;
      }
    }
  // One id only: every row in one bucket, summed in row order by one block per channel slice.
  check_embedding<float>(97, 100, true, 170, 1, 1);
  check_embedding<bf16>(97, 37, false, 171, 1, 1);
  check_embedding<float>(1, 64, true, 172, 1, 1);
}

#if IFT_TEST_EMULATED  // the emulator's schedules
TEST_CASE("elementwise kernels: embedding backward is bitwise the same under every schedule", "[kernels][elementwise]") {
  const int N = 300, C = 72, V = 7, P = 40;
  const auto tokens = random_ids(N, V, 180);
  KernelVector<int32_t> positions(N);
  for (int n = 0; n < N; ++n) positions[n] = n % P;
  const auto dout = to_storage<bf16>(random_vector<float>(size_t(N) * C, 181));
  const auto run = [&] {
    KernelVector<float> dwte = random_vector<float>(size_t(V) * C, 182), dwpe = random_vector<float>(size_t(P) * C, 183);
    embedding_backward_bucketed(dwte.data(), dwpe.data(), dout.data(), tokens.data(), positions.data(),
                                EmbeddingArgs{N, C, V, P, 1.5f});
    dwte.insert(dwte.end(), dwpe.begin(), dwpe.end());
    return dwte;
  };
  const KernelVector<float> first = run();
  for (uint64_t s : {5u, 9u}) {
    simt::Options o = simt::options();
    o.schedule = simt::Schedule::random;
    o.seed = s;
    simt::ScopedOptions scope(o);
    CHECK(bitwise_equal(run(), first));
  }
  simt::Options o = simt::options();
  o.schedule = simt::Schedule::reverse;
  o.workers = 1;
  simt::ScopedOptions scope(o);
  CHECK(bitwise_equal(run(), first));
}
#endif

TEST_CASE("elementwise kernels: embedding rows with out-of-range ids are NaN, and skipped by backward",
          "[kernels][elementwise]") {
  const int N = 9, C = 16, V = 5, P = 4;
  KernelVector<int32_t> tokens = {0, 4, 5, 1, -1, 2, 3, 0, 4}, positions = {0, 1, 2, 3, 0, 9, 2, -2, 3};
  const KernelVector<float> wte = random_vector<float>(V * C, 1), wpe = random_vector<float>(P * C, 2);
  KernelVector<float> out(N * C);
  embedding_forward(out.data(), tokens.data(), positions.data(), wte.data(), wpe.data(), EmbeddingArgs{N, C, V, P}, nullptr);
  for (int n = 0; n < N; ++n) {
    const bool bad = tokens[n] < 0 || tokens[n] >= V || positions[n] < 0 || positions[n] >= P;
    INFO("row " << n);
    for (int c = 0; c < C; ++c) {
      if (bad)
        CHECK(std::isnan(out[n * C + c]));
      else
        CHECK(out[n * C + c] == wte[tokens[n] * C + c] + wpe[positions[n] * C + c]);
    }
  }
  const KernelVector<float> dout = random_vector<float>(N * C, 3);
  KernelVector<float> dwte(V * C, 0.0f), dwpe(P * C, 0.0f), ref_wte = dwte, ref_wpe = dwpe;
  embedding_backward_bucketed(dwte.data(), dwpe.data(), dout.data(), tokens.data(), positions.data(), EmbeddingArgs{N, C, V, P});
  for (int n = 0; n < N; ++n) {
    if (tokens[n] < 0 || tokens[n] >= V || positions[n] < 0 || positions[n] >= P) continue;
    for (int c = 0; c < C; ++c) ref_wte[tokens[n] * C + c] += dout[n * C + c], ref_wpe[positions[n] * C + c] += dout[n * C + c];
  }
  CHECK(bitwise_equal(dwte, ref_wte));
  CHECK(bitwise_equal(dwpe, ref_wpe));
}

TEST_CASE("elementwise kernels: GELU forward and backward", "[kernels][elementwise]") {
  uint64_t seed = 200;
  for (int64_t n : {1, 97, 1024, 1025, 4099}) {
    check_gelu<float>(n, seed);
    check_gelu<bf16>(n, seed + 1);
    seed += 10;
  }
}

TEST_CASE("elementwise kernels: SwiGLU and GeGLU forward and backward", "[kernels][elementwise]") {
  uint64_t seed = 300;
  const int shapes[][2] = {{1, 37}, {97, 64}, {33, 100}, {5, 768}, {1025, 8}};
  for (GluActivation act : {GluActivation::silu, GluActivation::gelu_tanh})
    for (const auto& s : shapes) {
      check_glu<float>(act, s[0], s[1], seed);
      check_glu<bf16>(act, s[0], s[1], seed + 1);
      seed += 10;
    }
}

TEST_CASE("elementwise kernels: residual add, aligned and not, in place", "[kernels][elementwise]") {
  uint64_t seed = 400;
  for (int64_t n : {1, 97, 1024, 1025}) {
    check_residual<float>(n, seed);
    check_residual<bf16>(n, seed + 1);
    seed += 10;
  }
  check_residual<float>(1024, 5, 1);
  check_residual<bf16>(1024, 6, 3);
}

TEST_CASE("elementwise kernels: bias gradient (column sums, +=)", "[kernels][elementwise]") {
  uint64_t seed = 500;
  const int shapes[][2] = {{1, 37}, {97, 100}, {1025, 64}, {1025, 37}, {33, 768}, {8000, 8}};
  for (const auto& s : shapes) {
    check_bias_backward<float>(s[0], s[1], seed);
    check_bias_backward<bf16>(s[0], s[1], seed + 1);
    seed += 10;
  }
}

#if IFT_TEST_EMULATED  // the emulator's thread and block schedules
TEST_CASE("elementwise kernels: bias gradient is bitwise reproducible across runs, schedules and workers",
          "[kernels][elementwise]") {
  const int N = 1025, O = 100;
  const auto dout = to_storage<bf16>(random_vector<float>(size_t(N) * O, 61));
  const KernelVector<float> db0 = random_vector<float>(O, 62);
  const auto first = run_bias_backward<bf16>(dout, db0, N, O);
  CHECK(bitwise_equal(run_bias_backward<bf16>(dout, db0, N, O), first));
  for (uint64_t s : {3u, 11u}) {
    simt::Options o = simt::options();
    o.schedule = simt::Schedule::random;
    o.seed = s;
    simt::ScopedOptions scope(o);
    CHECK(bitwise_equal(run_bias_backward<bf16>(dout, db0, N, O), first));
  }
  simt::Options o = simt::options();
  o.schedule = simt::Schedule::reverse;
  o.workers = 1;
  simt::ScopedOptions scope(o);
  CHECK(bitwise_equal(run_bias_backward<bf16>(dout, db0, N, O), first));
}
#endif

TEST_CASE("elementwise kernels: fp32 <-> bf16 casts round to nearest even, bit for bit", "[kernels][elementwise]") {
  KernelVector<float> in = random_vector<float>(1031, 71, -1e4, 1e4);  // n = 1030 at offset 1
  const float specials[] = {0.0f, -0.0f, 1.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 512, -1.0f - 1.0f / 256,
                            INFINITY, -INFINITY, 1e-40f, -1e-41f, 3.0e38f, 3.4e38f, 1e-45f, 65504.0f};
  std::copy(std::begin(specials), std::end(specials), in.begin());
  for (int64_t n : {int64_t(1030), int64_t(1024), int64_t(1)}) {
    for (int offset : {0, 1}) {
      INFO("n=" << n << " offset=" << offset);
      KernelVector<bf16> out(n + offset);
      cast(out.data() + offset, in.data() + offset, n, nullptr);
      KernelVector<bf16> want(n);
      for (int64_t i = 0; i < n; ++i) want[i] = __float2bfloat16(in[i + offset]);
      CHECK(bitwise_equal(KernelVector<bf16>(out.begin() + offset, out.end()), want));
      KernelVector<float> back(n + offset);
      cast(back.data() + offset, out.data() + offset, n, nullptr);
      KernelVector<float> want_back(n);
      for (int64_t i = 0; i < n; ++i) want_back[i] = __bfloat162float(want[i]);
      CHECK(bitwise_equal(KernelVector<float>(back.begin() + offset, back.end()), want_back));
    }
  }
}

TEST_CASE("elementwise kernels: bad arguments are ift::Error naming the op and the argument", "[kernels][elementwise]") {
  KernelVector<float> a(64, 1.0f), b(64, 1.0f), out(64);
  KernelVector<int32_t> ids(4, 0);
  CHECK_THROWS_AS(gelu_forward(out.data(), a.data(), -1, nullptr), Error);
  CHECK_THROWS_WITH(gelu_forward(out.data(), a.data(), -1, nullptr), Catch::Contains("gelu_forward: negative element count"));
  CHECK_THROWS_WITH(gelu_backward(out.data(), nullptr, a.data(), 8, nullptr), Catch::Contains("gelu_backward") && Catch::Contains("inp"));
  CHECK_THROWS_WITH(glu_forward(out.data(), a.data(), GluArgs{4, 0}, nullptr), Catch::Contains("glu_forward: empty shape N = 4, F = 0"));
  CHECK_THROWS_WITH(glu_backward(out.data(), a.data(), nullptr, GluArgs{4, 4}, nullptr), Catch::Contains("glu_backward") && Catch::Contains("dout"));
  CHECK_THROWS_WITH(residual_forward(out.data(), a.data(), nullptr, 4, nullptr), Catch::Contains("residual_forward"));
  CHECK_THROWS_WITH(embedding_forward(out.data(), ids.data(), nullptr, a.data(), nullptr, EmbeddingArgs{4, 16, 0, 0}, nullptr),
                    Catch::Contains("embedding_forward: vocabulary size V = 0"));
  CHECK_THROWS_WITH(embedding_forward(out.data(), ids.data(), nullptr, a.data(), b.data(), EmbeddingArgs{4, 16, 4, 4}, nullptr),
                    Catch::Contains("embedding_forward: wpe given without positions"));
  KernelVector<int32_t> buckets(embedding_buckets_ints(4));
  CHECK_THROWS_WITH(embedding_backward(out.data(), nullptr, a.data(), buckets.data(), EmbeddingArgs{0, 16, 4, 0}, nullptr),
                    Catch::Contains("embedding_backward: empty shape N = 0"));
  CHECK_THROWS_WITH(embedding_backward(out.data(), nullptr, a.data(), nullptr, EmbeddingArgs{4, 16, 4, 0}, nullptr),
                    Catch::Contains("embedding_backward: dwte, dout and buckets must not be null"));
  CHECK_THROWS_WITH(embedding_buckets(buckets.data(), ids.data(), ids.data(), EmbeddingArgs{4, 16, 4, 0}),
                    Catch::Contains("embedding_buckets: positions given with P = 0"));
  KernelVector<float> scratch(bias_backward_scratch_floats(4, 16));
  CHECK_THROWS_WITH(bias_backward(out.data(), a.data(), 4, 16, scratch.data(), scratch.size() - 1, nullptr),
                    Catch::Contains("bias_backward: scratch holds"));
  CHECK_THROWS_WITH(bias_backward(out.data(), a.data(), 4, -16, scratch.data(), scratch.size(), nullptr),
                    Catch::Contains("bias_backward: empty shape"));
  CHECK_THROWS_WITH(column_sums_accumulate(out.data(), nullptr, 4, 16, nullptr), Catch::Contains("column_sums_accumulate"));
  CHECK_THROWS_WITH(cast(static_cast<bf16*>(nullptr), a.data(), 4, nullptr), Catch::Contains("cast: out and in"));
  // n == 0 is a no-op, not an error.
  CHECK_NOTHROW(gelu_forward(out.data(), a.data(), 0, nullptr));
}
