// Masked cross-entropy kernels (kernels/cross_entropy.cu, run by the SIMT emulator) against
// cpu::cross_entropy_forward.
//
// Tolerances. fp32 storage: the loss within 1e-5 relative of the CPU reference (which sums in
// double); each gradient entry within |err| <= 1e-5 |ref| + 1e-6 max|ref| (the kernel computes
// exp(x - lse) in fp32, whose rounding of x - lse alone is ~1e-6 relative at |logits| ~ 10). bf16
// storage (FlashAttention's rule): the error against an fp64 reference computed from the same bf16
// logits is at most 2x that of a naive bf16-storage, fp32-math CPU implementation, plus 1e-6 of the
// largest reference magnitude. The loss is bit-for-bit the same across runs; the ctest registration
// also runs every case under a random thread and block schedule.
#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_bf16.h>

#include "engine/cpu/ops.h"
#include "engine/base/error.h"
#include "kernels/kernels.h"
#include "kernels/simt/runtime.h"
#include "tests/kernels/kernel_support.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

// Random targets in [0, V), every `ignore_every`-th row (and row 1 when N > 2) ignored with -100.
KernelVector<int32_t> make_targets(int N, int V, uint64_t seed, int ignore_every) {
  std::mt19937_64 rng(seed);
  KernelVector<int32_t> t(N);
  for (int n = 0; n < N; ++n) t[n] = static_cast<int32_t>(rng() % static_cast<uint64_t>(V));
  for (int n = 0; n < N; ++n)
    if ((ignore_every > 0 && n % ignore_every == ignore_every - 1) || (N > 2 && n == 1)) t[n] = -100;
  return t;
}

double trained(const KernelVector<int32_t>& t) {
  return static_cast<double>(std::count_if(t.begin(), t.end(), [](int32_t x) { return x >= 0; }));
}

struct Result {
  float loss = 0;
  KernelVector<float> grad;  // in place of the logits (as floats)
};

template <class T>
Result run_kernel(KernelVector<T> logits, const KernelVector<int32_t>& targets, int N, int V, float normaliser) {
  KernelVector<float2> scratch((cross_entropy_scratch_bytes(N, V) + sizeof(float2) - 1) / sizeof(float2));
  Result r;
  KernelVector<float> loss(1, 0.0f);  // a device float
  cross_entropy_forward({N, V, V, normaliser}, loss.data(), logits.data(), logits.data(), targets.data(),
                        scratch.data(), scratch.size() * sizeof(float2), nullptr);
  r.loss = loss[0];
  r.grad.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) r.grad[i] = static_cast<float>(logits[i]);
  return r;
}

// The naive bf16 implementation the bf16 rule compares with: bf16 storage, fp32 math in one
// sequential pass per row, gradient rounded to bf16.
double naive_bf16(KernelVector<float>& grad, const KernelVector<__nv_bfloat16>& logits, const KernelVector<int32_t>& targets,
                  int N, int V, float normaliser) {
  float total = 0;
  grad.assign(logits.size(), 0.0f);
  for (int n = 0; n < N; ++n) {
    const int t = targets[n];
    if (t < 0) continue;
    const __nv_bfloat16* l = logits.data() + static_cast<size_t>(n) * V;
    float mx = -INFINITY;
    for (int i = 0; i < V; ++i) mx = std::max(mx, __bfloat162float(l[i]));
    float sum = 0;
    for (int i = 0; i < V; ++i) sum += std::exp(__bfloat162float(l[i]) - mx);
    const float lse = mx + std::log(sum);
    total += lse - __bfloat162float(l[t]);
    for (int i = 0; i < V; ++i) {
      const float p = std::exp(__bfloat162float(l[i]) - lse);
      grad[static_cast<size_t>(n) * V + i] = __bfloat162float(__float2bfloat16(((i == t ? p - 1.0f : p)) / normaliser));
    }
  }
  return total / normaliser;
}

// fp32: kernel against the CPU reference, in place, out of place and loss-only, and determinism.
void check_fp32(int N, int V, uint64_t seed, int ignore_every, double scale) {
  INFO("N = " << N << ", V = " << V << ", seed " << seed);
  const KernelVector<float> logits = random_vector<float>(static_cast<size_t>(N) * V, seed, -scale, scale);
  const KernelVector<int32_t> targets = make_targets(N, V, seed + 1, ignore_every);
  const double normaliser = trained(targets) + 3.0;  // not the row count: the normaliser is the caller's

  KernelVector<float> ref_grad(logits.size());
  const double ref_loss =
      cpu::cross_entropy_forward<float>(ref_grad.data(), logits.data(), targets.data(), {N, V, V, normaliser});

  const Result r = run_kernel(logits, targets, N, V, static_cast<float>(normaliser));
  CHECK(std::abs(r.loss - ref_loss) <= 1e-5 * std::abs(ref_loss) + 1e-30);
  double ref_max = 0;
  for (float g : ref_grad) ref_max = std::max(ref_max, static_cast<double>(std::abs(g)));
  require_close("dlogits (in place)", r.grad, ref_grad, 1e-6 * ref_max, 1e-5);
  report("fp32 N=" + std::to_string(N) + " V=" + std::to_string(V) + " loss rel err",
         std::abs(r.loss - ref_loss) / std::max(std::abs(ref_loss), 1e-30));
  double worst = 0;
  for (size_t i = 0; i < ref_grad.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(r.grad[i]) - ref_grad[i]) / (std::abs(ref_grad[i]) + 1e-6 * ref_max));
  report("fp32 N=" + std::to_string(N) + " V=" + std::to_string(V) + " grad err / (|ref| + 1e-6 max)", worst);

  // Rows that are not trained get exactly zero gradient.
  for (int n = 0; n < N; ++n)
    if (targets[n] < 0)
      for (int i = 0; i < V; ++i) REQUIRE(r.grad[static_cast<size_t>(n) * V + i] == 0.0f);

  // Out of place: the same bits, the logits untouched. Loss only: the same loss, logits untouched.
  KernelVector<float2> scratch((cross_entropy_scratch_bytes(N, V) + 7) / 8);
  KernelVector<float> in = logits, out(logits.size(), 7.0f);
  KernelVector<float> loss2(1, 0.0f), loss3(1, 0.0f);  // device floats
  cross_entropy_forward({N, V, V, static_cast<float>(normaliser)}, loss2.data(), out.data(), in.data(), targets.data(),
                        scratch.data(), scratch.size() * 8, nullptr);
  CHECK(std::memcmp(loss2.data(), &r.loss, sizeof(float)) == 0);
  CHECK(std::memcmp(out.data(), r.grad.data(), out.size() * sizeof(float)) == 0);
  CHECK(in == logits);
  cross_entropy_forward({N, V, V, static_cast<float>(normaliser)}, loss3.data(), static_cast<float*>(nullptr),
                        in.data(), targets.data(), scratch.data(), scratch.size() * 8, nullptr);
  CHECK(std::memcmp(loss3.data(), &r.loss, sizeof(float)) == 0);
  CHECK(in == logits);

  // Deterministic: a second run gives the same bits.
  const Result again = run_kernel(logits, targets, N, V, static_cast<float>(normaliser));
  CHECK(std::memcmp(&again.loss, &r.loss, sizeof(float)) == 0);
  CHECK(std::memcmp(again.grad.data(), r.grad.data(), r.grad.size() * sizeof(float)) == 0);
}

// bf16: kernel and naive implementation against an fp64 reference from the same bf16 logits.
void check_bf16(int N, int V, uint64_t seed, int ignore_every, double scale) {
  INFO("N = " << N << ", V = " << V << ", seed " << seed);
  const KernelVector<__nv_bfloat16> logits =
      to_storage<bf16>(random_vector<float>(static_cast<size_t>(N) * V, seed, -scale, scale));
  const KernelVector<int32_t> targets = make_targets(N, V, seed + 1, ignore_every);
  const double normaliser = trained(targets) + 1.0;

  KernelVector<double> logits64(logits.size()), ref_grad(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) logits64[i] = __bfloat162float(logits[i]);
  const double ref_loss =
      cpu::cross_entropy_forward<double>(ref_grad.data(), logits64.data(), targets.data(), {N, V, V, normaliser});
  KernelVector<float> naive_grad;
  const double naive_loss = naive_bf16(naive_grad, logits, targets, N, V, static_cast<float>(normaliser));

  const Result r = run_kernel(logits, targets, N, V, static_cast<float>(normaliser));
  const double ref_max = max_abs(ref_grad);
  const double naive_grad_err = max_error(naive_grad, ref_grad), grad_err = max_error(r.grad, ref_grad);
  const double naive_loss_err = std::abs(naive_loss - ref_loss), loss_err = std::abs(r.loss - ref_loss);
  INFO("grad error " << grad_err << " (naive " << naive_grad_err << "), loss error " << loss_err << " (naive "
                     << naive_loss_err << ")");
  CHECK(grad_err <= 2 * naive_grad_err + 1e-6 * ref_max);
  CHECK(loss_err <= 2 * naive_loss_err + 1e-6 * std::abs(ref_loss));
  report("bf16 N=" + std::to_string(N) + " V=" + std::to_string(V) + " grad max err (naive)", grad_err);
  report("  naive", naive_grad_err);
  report("bf16 N=" + std::to_string(N) + " V=" + std::to_string(V) + " loss err (naive)", loss_err);
  report("  naive", naive_loss_err);
  for (int n = 0; n < N; ++n)
    if (targets[n] < 0)
      for (int i = 0; i < V; ++i) REQUIRE(r.grad[static_cast<size_t>(n) * V + i] == 0.0f);

  const Result again = run_kernel(logits, targets, N, V, static_cast<float>(normaliser));
  CHECK(std::memcmp(&again.loss, &r.loss, sizeof(float)) == 0);
  CHECK(std::memcmp(again.grad.data(), r.grad.data(), r.grad.size() * sizeof(float)) == 0);
}

template <class F>
void require_error(F&& f, const std::string& part) {
  std::string message;
  try {
    f();
  } catch (const Error& e) {
    message = e.what();
  }
  INFO("error message: '" << message << "'");
  CHECK(message.find("cross_entropy_forward") != std::string::npos);
  CHECK(message.find(part) != std::string::npos);
}

}  // namespace

TEST_CASE("cross_entropy_forward fp32 matches the CPU reference on awkward sizes", "[kernels][cross_entropy]") {
  check_fp32(1, 1, 11, 0, 4.0);     // one logit: loss 0, gradient 0
  check_fp32(1, 37, 12, 0, 4.0);
  check_fp32(97, 37, 13, 5, 8.0);   // every 5th row and row 1 ignored
  check_fp32(97, 1, 14, 3, 8.0);
  check_fp32(5, 100, 18, 2, 8.0);   // a multiple of the float pack: the 128-bit path, one block of 32
  check_fp32(3, 4097, 15, 0, 8.0);  // a chunk of 4096 plus a chunk of one
  check_fp32(2, 8192, 16, 0, 8.0);  // exactly two chunks
  check_fp32(3, 50257, 17, 0, 10.0);
}

TEST_CASE("cross_entropy_forward fp32 with a 128256 vocabulary (32 chunks a row)", "[kernels][cross_entropy]") {
  check_fp32(2, 128256, 21, 0, 10.0);
}

TEST_CASE("cross_entropy_forward bf16 is within 2x the error of a naive bf16 implementation", "[kernels][cross_entropy]") {
  check_bf16(1, 37, 31, 0, 4.0);
  check_bf16(97, 37, 32, 4, 8.0);
  check_bf16(3, 4097, 33, 0, 8.0);
  check_bf16(4, 4096, 36, 0, 8.0);  // a multiple of the bf16 pack: the 128-bit path
  check_bf16(2, 50257, 34, 0, 10.0);
  check_bf16(2, 128256, 35, 0, 10.0);
}

TEST_CASE("cross_entropy_forward with every row ignored gives zero loss and gradient", "[kernels][cross_entropy]") {
  const int N = 5, V = 4100;
  const KernelVector<float> logits = random_vector<float>(static_cast<size_t>(N) * V, 41, -3, 3);
  const KernelVector<int32_t> targets(N, -100);
  const Result r = run_kernel(logits, targets, N, V, 1.0f);
  CHECK(r.loss == 0.0f);
  CHECK(std::all_of(r.grad.begin(), r.grad.end(), [](float g) { return g == 0.0f; }));

  // bf16 in place, too.
  const Result rb = run_kernel<bf16>(to_storage<bf16>(logits), KernelVector<int32_t>(N, -1), N, V, 2.0f);
  CHECK(rb.loss == 0.0f);
  CHECK(std::all_of(rb.grad.begin(), rb.grad.end(), [](float g) { return g == 0.0f; }));
}

TEST_CASE("cross_entropy_forward: a target outside the vocabulary makes the loss and its row NaN",
          "[kernels][cross_entropy]") {
  const int N = 3, V = 37;
  const KernelVector<float> logits = random_vector<float>(static_cast<size_t>(N) * V, 51);
  const Result r = run_kernel(logits, {0, V, 2}, N, V, 2.0f);
  CHECK(std::isnan(r.loss));
  for (int i = 0; i < V; ++i) {
    CHECK(std::isnan(r.grad[V + i]));
    CHECK(std::isfinite(r.grad[i]));
    CHECK(std::isfinite(r.grad[2 * V + i]));
  }
}

TEST_CASE("cross_entropy_forward rejects bad arguments, naming them", "[kernels][cross_entropy]") {
  const int N = 4, V = 37;
  KernelVector<float> logits = random_vector<float>(static_cast<size_t>(N) * V, 61);
  KernelVector<int32_t> targets = {1, 2, 3, 4};
  KernelVector<float2> scratch((cross_entropy_scratch_bytes(N, V) + 7) / 8 + 1);
  const size_t bytes = cross_entropy_scratch_bytes(N, V);
  float loss = 0;
  float* d = logits.data();
  const float* l = logits.data();
  auto call = [&](float* lo, float* dl, const float* lg, const int32_t* tg, int n, int v, float norm, void* s,
                  size_t sb) {
    return [=] { cross_entropy_forward({n, v, v, norm}, lo, dl, lg, tg, s, sb, nullptr); };
  };
  require_error(call(&loss, d, l, targets.data(), 0, V, 1.0f, scratch.data(), bytes), "N, V > 0");
  require_error(call(&loss, d, l, targets.data(), N, 0, 1.0f, scratch.data(), bytes), "N, V > 0");
  require_error(call(&loss, d, l, targets.data(), N, V, 0.0f, scratch.data(), bytes), "normaliser");
  require_error(call(&loss, d, l, targets.data(), N, V, NAN, scratch.data(), bytes), "normaliser");
  require_error(call(nullptr, d, l, targets.data(), N, V, 1.0f, scratch.data(), bytes), "loss is null");
  require_error(call(&loss, d, nullptr, targets.data(), N, V, 1.0f, scratch.data(), bytes), "logits is null");
  require_error(call(&loss, d, l, nullptr, N, V, 1.0f, scratch.data(), bytes), "targets is null");
  require_error(call(&loss, d, l, targets.data(), N, V, 1.0f, nullptr, bytes), "scratch is null");
  require_error(call(&loss, d, l, targets.data(), N, V, 1.0f, scratch.data(), bytes - 1), "cross_entropy_scratch_bytes");
  require_error(call(&loss, d, l, targets.data(), N, V, 1.0f, reinterpret_cast<char*>(scratch.data()) + 4, bytes),
                "aligned");
  require_error(call(&loss, d + 1, l, targets.data(), N, V, 1.0f, scratch.data(), bytes), "dlogits partly overlaps");
  require_error(call(&loss, d, l, targets.data(), N, V, 1.0f, d + 8, bytes), "scratch overlaps");
  CHECK(cross_entropy_scratch_bytes(0, V) == 0);
  CHECK(cross_entropy_scratch_bytes(2, 4097) == 2 * sizeof(float));  // one loss a row
  CHECK(cross_entropy_baseline_scratch_bytes(2, 4097) == 2 * 2 * sizeof(float2) + 2 * sizeof(float));
}

#if IFT_TEST_EMULATED  // the emulator's thread and block schedules
TEST_CASE("cross_entropy_forward gives the same bits under every thread and block schedule", "[kernels][cross_entropy]") {
  const int N = 7, V = 9000;  // three chunks a row
  const KernelVector<float> logits = random_vector<float>(static_cast<size_t>(N) * V, 71, -6, 6);
  const KernelVector<int32_t> targets = make_targets(N, V, 72, 3);
  const Result base = run_kernel(logits, targets, N, V, 5.0f);
  const Result base_bf16 = run_kernel<bf16>(to_storage<bf16>(logits), targets, N, V, 5.0f);
  for (auto [schedule, seed] : {std::pair{simt::Schedule::reverse, 1}, {simt::Schedule::random, 3}, {simt::Schedule::random, 99}}) {
    simt::Options o = simt::options();
    o.schedule = schedule, o.seed = static_cast<uint64_t>(seed);
    const simt::ScopedOptions scoped(o);
    INFO("schedule " << static_cast<int>(schedule) << ", seed " << seed);
    const Result r = run_kernel(logits, targets, N, V, 5.0f);
    CHECK(std::memcmp(&r.loss, &base.loss, sizeof(float)) == 0);
    CHECK(std::memcmp(r.grad.data(), base.grad.data(), r.grad.size() * sizeof(float)) == 0);
    const Result rb = run_kernel<bf16>(to_storage<bf16>(logits), targets, N, V, 5.0f);
    CHECK(std::memcmp(&rb.loss, &base_bf16.loss, sizeof(float)) == 0);
    CHECK(std::memcmp(rb.grad.data(), base_bf16.grad.data(), rb.grad.size() * sizeof(float)) == 0);
  }
}
#endif

TEST_CASE("cross-entropy over rows of stride ld > V: padding not read, its gradient zero", "[kernels][ce]") {
  const int N = 37, V = 1000, ld = 1024;  // V not a multiple of the chunk; ld as the model pads it
  const KernelVector<float> dense = random_vector<float>(size_t(N) * V, 5, -4, 4);
  const KernelVector<int32_t> targets = make_targets(N, V, 6, 5);
  const float norm = static_cast<float>(trained(targets));
  const Result want = run_kernel(dense, targets, N, V, norm);
  KernelVector<float> padded(size_t(N) * ld, std::numeric_limits<float>::quiet_NaN());
  for (int n = 0; n < N; ++n)
    std::copy(dense.begin() + size_t(n) * V, dense.begin() + size_t(n + 1) * V, padded.begin() + size_t(n) * ld);
  KernelVector<float2> scratch((cross_entropy_scratch_bytes(N, V) + sizeof(float2) - 1) / sizeof(float2));
  KernelVector<float> loss(1, 0.0f);
  cross_entropy_forward({N, V, ld, norm}, loss.data(), padded.data(), padded.data(), targets.data(), scratch.data(),
                        scratch.size() * sizeof(float2), nullptr);
  CHECK(loss[0] == want.loss);
  for (int n = 0; n < N; ++n) {
    for (int v = 0; v < V; ++v) REQUIRE(padded[size_t(n) * ld + v] == want.grad[size_t(n) * V + v]);
    for (int v = V; v < ld; ++v) REQUIRE(padded[size_t(n) * ld + v] == 0.0f);
  }
  CHECK_THROWS_WITH(cross_entropy_forward({N, V, V - 1, norm}, loss.data(), padded.data(), padded.data(),
                                          targets.data(), scratch.data(), scratch.size() * sizeof(float2), nullptr),
                    Catch::Contains("row stride"));
}

// The row kernel takes 128-bit packs when the row stride is a multiple of the pack and the rows are
// 16-byte aligned, else one value a thread: both against the reference, at C = 37, 100 and 4097
// columns under a padded stride (the packed path with a scalar tail) and a dense one.
TEST_CASE("cross-entropy: the packed and the scalar path both match the reference", "[kernels][cross_entropy]") {
  for (const int V : {37, 100, 4097})
    for (const int pad : {0, 128 - V % 128}) {
      const int N = 9, ld = V + pad;
      INFO("V = " << V << ", ld = " << ld);
      KernelVector<float> logits(size_t(N) * ld, std::numeric_limits<float>::quiet_NaN());
      const KernelVector<float> dense = random_vector<float>(size_t(N) * V, 80 + V, -7, 7);
      for (int n = 0; n < N; ++n)
        std::copy(dense.begin() + size_t(n) * V, dense.begin() + size_t(n + 1) * V, logits.begin() + size_t(n) * ld);
      const KernelVector<int32_t> targets = make_targets(N, V, 81, 4);
      const double norm = trained(targets);
      KernelVector<float> ref(size_t(N) * ld);
      const double ref_loss =
          cpu::cross_entropy_forward<float>(ref.data(), logits.data(), targets.data(), {N, V, ld, norm});
      for (const bool bf : {false, true}) {
        INFO((bf ? "bf16" : "fp32"));
        KernelVector<float2> scratch(N);
        KernelVector<float> loss(1, 0.0f), got(logits.size());
        if (bf) {
          // bf16: the reference from the same rounded logits, each entry within two bf16 half-ulps (2^-8 relative)
          KernelVector<bf16> lb = to_storage<bf16>(logits);
          KernelVector<double> l64(lb.size()), ref64(lb.size());
          for (size_t i = 0; i < lb.size(); ++i) l64[i] = __bfloat162float(lb[i]);
          const double loss64 =
              cpu::cross_entropy_forward<double>(ref64.data(), l64.data(), targets.data(), {N, V, ld, norm});
          cross_entropy_forward({N, V, ld, float(norm)}, loss.data(), lb.data(), lb.data(), targets.data(),
                                scratch.data(), scratch.size() * sizeof(float2), nullptr);
          for (size_t i = 0; i < lb.size(); ++i) got[i] = __bfloat162float(lb[i]);
          CHECK(std::abs(loss[0] - loss64) <= 1e-5 * std::abs(loss64));
          require_close("bf16 dlogits", got, ref64, 1e-6 * max_abs(ref64), 1.0 / 256);
        } else {
          KernelVector<float> l = logits;
          cross_entropy_forward({N, V, ld, float(norm)}, loss.data(), l.data(), l.data(), targets.data(),
                                scratch.data(), scratch.size() * sizeof(float2), nullptr);
          CHECK(std::abs(loss[0] - ref_loss) <= 1e-5 * std::abs(ref_loss));
          require_close("fp32 dlogits", l, ref, 1e-6 * max_abs(ref), 1e-5);
        }
      }
    }
}

// The replaced kernel stays callable (ift bench kernels times it beside the new one): same contract.
TEST_CASE("cross_entropy_forward_baseline still matches the reference", "[kernels][cross_entropy]") {
  const int N = 6, V = 4099;
  const KernelVector<float> logits = random_vector<float>(size_t(N) * V, 91, -8, 8);
  const KernelVector<int32_t> targets = make_targets(N, V, 92, 3);
  const double norm = trained(targets) + 1.0;
  KernelVector<float> ref(logits.size());
  const double ref_loss = cpu::cross_entropy_forward<float>(ref.data(), logits.data(), targets.data(), {N, V, V, norm});
  KernelVector<float2> scratch((cross_entropy_baseline_scratch_bytes(N, V) + 7) / 8);
  KernelVector<float> loss(1, 0.0f), l = logits;
  cross_entropy_forward_baseline({N, V, V, float(norm)}, loss.data(), l.data(), l.data(), targets.data(),
                                 scratch.data(), scratch.size() * sizeof(float2), nullptr);
  CHECK(std::abs(loss[0] - ref_loss) <= 1e-5 * std::abs(ref_loss));
  require_close("baseline dlogits", l, ref, 1e-6 * max_abs(ref), 1e-5);
}
