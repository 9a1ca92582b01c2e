// The optimizer kernels (kernels/adamw.cu, run by the SIMT emulator) against the CPU reference:
// adamw_update against cpu::adamw_update with the same AdamWArgs (kernels/args.h: per-run weight
// decay), sum_of_squares against cpu::sum_of_squares.
//
// Tolerances. The kernel computes in fp32, the reference in double rounded to float once, so they
// differ by a few float roundings: after several steps, master weights within 1e-6 relative (plus
// 1e-7 absolute), moments within 1e-6 relative plus 1e-6 of the largest moment (m = beta1 m +
// (1 - beta1) g cancels where g changes sign, so its small entries carry no relative meaning). The
// bf16 working copy must be exactly the kernel's master rounded to nearest even. The sum of squares
// is within 1e-5 relative of the double sum (fp32 per-thread and tree sums). Both are bit-for-bit
// the same across runs; the ctest registration also runs every case under a random schedule.
#include <algorithm>
#include <cfloat>
#include <cmath>
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

// Random tensor sizes (1 to 3000) tiling [0, n), each decaying or not at random.
struct Segments {
  KernelVector<int64_t> ends;
  KernelVector<uint8_t> decays;
  // args with n and these runs (the arrays: host memory for the cpu, device memory, here the same, for the kernel)
  AdamWArgs over(AdamWArgs a, int64_t n) const {
    a.n = n, a.runs = static_cast<int>(ends.size()), a.run_ends = ends.data(), a.run_decays = decays.data();
    return a;
  }
};
Segments make_segments(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Segments s;
  int64_t at = 0;
  while (at < n) {
    at = std::min<int64_t>(n, at + 1 + static_cast<int64_t>(rng() % 3000));
    s.ends.push_back(at);
    s.decays.push_back(static_cast<uint8_t>(rng() % 2));
  }
  return s;
}

// The reference: cpu::adamw_update with the same arguments (its runs in host memory).
void reference_step(KernelVector<float>& w, const KernelVector<float>& g, KernelVector<float>& m,
                    KernelVector<float>& v, const AdamWArgs& a) {
  cpu::adamw_update<float>(w.data(), g.data(), m.data(), v.data(), a);
}

// The largest |err| / (atol + rtol |ref|): the share of the tolerance used (<= 1 passes).
double tolerance_used(const KernelVector<float>& got, const KernelVector<float>& ref, double atol, double rtol) {
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - ref[i]) / (atol + rtol * std::abs(ref[i])));
  return worst;
}

// `steps` AdamW steps with gradient type G, kernel against reference; with bf16 grads the reference
// takes the same rounded gradients. Returns the kernel's final state for determinism checks.
template <class G>
KernelVector<float> check_steps(int64_t n, uint64_t seed, int steps, bool bf16_copy) {
  INFO("n = " << n << ", seed " << seed << (sizeof(G) == 2 ? ", bf16 grads" : ", fp32 grads"));
  const Segments seg = make_segments(n, seed);
  KernelVector<float> w = random_vector<float>(n, seed + 1), m(n, 0.0f), v(n, 0.0f);
  KernelVector<float> rw = w, rm = m, rv = v;
  KernelVector<__nv_bfloat16> copy(bf16_copy ? n : 0);
  AdamWArgs u;
  u.beta1 = 0.9f, u.beta2 = 0.95f, u.eps = 1e-8f, u.weight_decay = 0.1f;
  u = seg.over(u, n);
  __nv_bfloat16* params_bf16 = bf16_copy ? copy.data() : nullptr;
  for (int t = 1; t <= steps; ++t) {
    KernelVector<float> g = random_vector<float>(n, seed + 100 + t, -2.0, 2.0);
    u.lr = 1e-2f / t, u.grad_scale = t == 2 ? 0.25f : 1.0f, u.t = t;
    if constexpr (sizeof(G) == 2) {
      const KernelVector<__nv_bfloat16> gb = to_storage<bf16>(g);
      g = to_floats(gb);
      adamw_update(u, w.data(), m.data(), v.data(), params_bf16, gb.data(), nullptr);
    } else {
      adamw_update(u, w.data(), m.data(), v.data(), params_bf16, g.data(), nullptr);
    }
    reference_step(rw, g, rm, rv, u);
  }
  require_close("master weights", w, rw, 1e-7, 1e-6);
  require_close("m", m, rm, 1e-6 * max_abs(rm), 1e-6);
  require_close("v", v, rv, 1e-6 * max_abs(rv), 1e-6);
  const std::string tag = std::string(sizeof(G) == 2 ? "bf16" : "fp32") + " grads n=" + std::to_string(n);
  report(tag + " master: share of tolerance used", tolerance_used(w, rw, 1e-7, 1e-6));
  report(tag + " m: share of tolerance used", tolerance_used(m, rm, 1e-6 * max_abs(rm), 1e-6));
  report(tag + " v: share of tolerance used", tolerance_used(v, rv, 1e-6 * max_abs(rv), 1e-6));
  if (bf16_copy) {
    size_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const __nv_bfloat16 want = __float2bfloat16(w[i]);
      if (std::memcmp(&copy[i], &want, sizeof(want)) != 0) ++bad;
    }
    INFO(bad << " bf16 parameters are not the rounded master");
    CHECK(bad == 0);
  }
  KernelVector<float> state = w;
  state.insert(state.end(), m.begin(), m.end());
  state.insert(state.end(), v.begin(), v.end());
  return state;
}

template <class F>
void require_error(F&& f, const std::string& op, const std::string& part) {
  std::string message;
  try {
    f();
  } catch (const Error& e) {
    message = e.what();
  }
  INFO("error message: '" << message << "'");
  CHECK(message.find(op) != std::string::npos);
  CHECK(message.find(part) != std::string::npos);
}

}  // namespace

TEST_CASE("adamw_update matches cpu::adamw_update over several steps, per-segment decay", "[kernels][adamw]") {
  for (int64_t n : {1, 37, 1025, 100003}) {
    const KernelVector<float> a = check_steps<float>(n, 10 + n, 4, false);
    CHECK(check_steps<float>(n, 10 + n, 4, false) == a);  // deterministic (bitwise: no NaNs here)
  }
}

TEST_CASE("adamw_update with bf16 gradients writes the bf16 copy of the master", "[kernels][adamw]") {
  for (int64_t n : {1, 97, 65537}) {
    const KernelVector<float> a = check_steps<__nv_bfloat16>(n, 20 + n, 3, true);
    CHECK(check_steps<__nv_bfloat16>(n, 20 + n, 3, true) == a);
  }
  check_steps<float>(4099, 7, 2, true);  // fp32 gradients with a bf16 copy
}

TEST_CASE("adamw_update: the decay mask decides exactly which parameters decay", "[kernels][adamw]") {
  // With zero gradients the update is exactly w * (1 - lr wd) where the mask decays and w elsewhere.
  const int64_t n = 5000;
  const Segments seg = make_segments(n, 3);
  const KernelVector<float> w0 = random_vector<float>(n, 4);
  KernelVector<float> w = w0, m(n, 0.0f), v(n, 0.0f), g(n, 0.0f);
  AdamWArgs u;
  u.lr = 0.5f, u.weight_decay = 0.1f;
  u = seg.over(u, n);
  adamw_update(u, w.data(), m.data(), v.data(), nullptr, g.data(), nullptr);
  // The reference reads the same runs: unchanged where they do not decay, shrunk where they do.
  KernelVector<float> rw = w0, rm(n, 0.0f), rv(n, 0.0f);
  cpu::adamw_update<float>(rw.data(), g.data(), rm.data(), rv.data(), u);
  const float decay = static_cast<float>(1.0 - 0.5 * static_cast<double>(0.1f));
  int64_t begin = 0;
  size_t decayed = 0;
  for (size_t s = 0; s < seg.ends.size(); ++s) {
    for (int64_t i = begin; i < seg.ends[s]; ++i) {
      INFO("element " << i << " of segment " << s << " (decays " << int(seg.decays[s]) << ")");
      REQUIRE(w[i] == (seg.decays[s] ? w0[i] * decay : w0[i]));
      if (seg.decays[s])  // the cpu rounds w (1 - lr wd) once from double, the kernel decay and product: an ulp apart
        REQUIRE(std::abs(rw[i] - w0[i] * decay) <= 2 * FLT_EPSILON * std::abs(w0[i]));
      else
        REQUIRE(rw[i] == w0[i]);
    }
    decayed += seg.decays[s];
    begin = seg.ends[s];
  }
  CHECK(decayed > 0);
  CHECK(decayed < seg.ends.size());

  // No runs: everything decays.
  w = w0;
  u.runs = 0, u.run_ends = nullptr, u.run_decays = nullptr;
  adamw_update(u, w.data(), m.data(), v.data(), nullptr, g.data(), nullptr);
  for (int64_t i = 0; i < n; ++i) REQUIRE(w[i] == w0[i] * decay);
}

TEST_CASE("sum_of_squares matches cpu::sum_of_squares and is deterministic", "[kernels][adamw]") {
  for (int64_t n : {0, 1, 37, 97, 100, 1025, 4097, 1000003}) {
    INFO("n = " << n);
    const KernelVector<float> x = random_vector<float>(n, 70 + n, -3.0, 3.0);
    const KernelVector<__nv_bfloat16> xb = to_storage<bf16>(x);
    const KernelVector<float> xbf = to_floats(xb);
    KernelVector<float> scratch(sum_of_squares_scratch_floats(n));
    KernelVector<float> out_b(1, -1.0f), again_b(1, -1.0f), outb_b(1, -1.0f);  // device floats
    sum_of_squares(out_b.data(), x.data(), n, scratch.data(), scratch.size(), nullptr);
    sum_of_squares(again_b.data(), x.data(), n, scratch.data(), scratch.size(), nullptr);
    sum_of_squares(outb_b.data(), xb.data(), n, scratch.data(), scratch.size(), nullptr);
    const float out = out_b[0], again = again_b[0], outb = outb_b[0];
    const double ref = cpu::sum_of_squares(x.data(), n), refb = cpu::sum_of_squares(xbf.data(), n);
    CHECK(std::abs(out - ref) <= 1e-5 * ref);
    CHECK(std::abs(outb - refb) <= 1e-5 * refb);
    CHECK(std::memcmp(&out, &again, sizeof(float)) == 0);
    if (n > 0) {
      report("sum_of_squares fp32 n=" + std::to_string(n) + " rel err", std::abs(out - ref) / ref);
      report("sum_of_squares bf16 n=" + std::to_string(n) + " rel err", std::abs(outb - refb) / refb);
    }
    // One element in: not 16-byte aligned, so one value a thread instead of 128-bit packs.
    if (n > 1) {
      KernelVector<float> off_b(1, -1.0f), offb_b(1, -1.0f);
      sum_of_squares(off_b.data(), x.data() + 1, n - 1, scratch.data(), scratch.size(), nullptr);
      sum_of_squares(offb_b.data(), xb.data() + 1, n - 1, scratch.data(), scratch.size(), nullptr);
      const double ref1 = cpu::sum_of_squares(x.data() + 1, n - 1), refb1 = cpu::sum_of_squares(xbf.data() + 1, n - 1);
      CHECK(std::abs(off_b[0] - ref1) <= 1e-5 * ref1);
      CHECK(std::abs(offb_b[0] - refb1) <= 1e-5 * refb1);
    }
  }
}

TEST_CASE("adamw_update and sum_of_squares reject bad arguments, naming them", "[kernels][adamw]") {
  const int64_t n = 10;
  KernelVector<float> w(n, 1.0f), m(n, 0.0f), v(n, 0.0f), g(n, 0.5f);
  AdamWArgs ok;
  ok.n = n, ok.lr = 1e-3f;
  struct Call {
    AdamWArgs a;
    float *master, *m, *v;
  };
  auto with = [&](auto change) {
    Call c{ok, w.data(), m.data(), v.data()};
    change(c);
    return [=, &g] { adamw_update(c.a, c.master, c.m, c.v, nullptr, g.data(), nullptr); };
  };
  require_error(with([](Call& c) { c.a.n = -1; }), "adamw_update", "n must not be negative");
  require_error(with([](Call& c) { c.master = nullptr; }), "adamw_update", "master is null");
  require_error(with([](Call& c) { c.m = nullptr; }), "adamw_update", "m is null");
  require_error(with([](Call& c) { c.v = nullptr; }), "adamw_update", "v is null");
  require_error(
      [&] { adamw_update(ok, w.data(), m.data(), v.data(), nullptr, static_cast<const float*>(nullptr), nullptr); },
      "adamw_update", "grads is null");
  require_error(with([](Call& c) { c.a.t = 0; }), "adamw_update", "step t");
  require_error(with([](Call& c) { c.a.beta1 = 1.0f; }), "adamw_update", "beta1");
  require_error(with([](Call& c) { c.a.beta2 = -0.1f; }), "adamw_update", "beta2");
  require_error(with([](Call& c) { c.a.eps = -1.0f; }), "adamw_update", "eps");
  require_error(with([](Call& c) { c.a.lr = NAN; }), "adamw_update", "lr");
  require_error(with([](Call& c) { c.a.weight_decay = -0.1f; }), "adamw_update", "weight_decay");
  require_error(with([](Call& c) { c.a.grad_scale = INFINITY; }), "adamw_update", "grad_scale");
  require_error(with([](Call& c) { c.a.runs = 2; }), "adamw_update", "null run_ends or run_decays");
  require_error(with([](Call& c) { c.a.runs = -1; }), "adamw_update", "runs must not be negative");
  CHECK(w == KernelVector<float>(n, 1.0f));  // nothing ran

  float out = 0;
  KernelVector<float> scratch(sum_of_squares_scratch_floats(1 << 20));
  require_error([&] { sum_of_squares(&out, g.data(), -1, scratch.data(), scratch.size(), nullptr); }, "sum_of_squares",
                "n must not be negative");
  require_error([&] { sum_of_squares(nullptr, g.data(), n, scratch.data(), scratch.size(), nullptr); }, "sum_of_squares",
                "out is null");
  require_error([&] { sum_of_squares(&out, static_cast<const float*>(nullptr), n, scratch.data(), scratch.size(), nullptr); },
                "sum_of_squares", "x is null");
  require_error([&] { sum_of_squares(&out, g.data(), n, nullptr, scratch.size(), nullptr); }, "sum_of_squares",
                "scratch is null");
  require_error([&] { sum_of_squares(&out, g.data(), 1 << 20, scratch.data(), scratch.size() - 1, nullptr); },
                "sum_of_squares", "sum_of_squares_scratch_floats");
}

#if IFT_TEST_EMULATED  // the emulator's thread and block schedules
TEST_CASE("adamw_update and sum_of_squares give the same bits under every schedule", "[kernels][adamw]") {
  const int64_t n = 300001;
  const KernelVector<float> x = random_vector<float>(n, 81, -2.0, 2.0);
  KernelVector<float> scratch(sum_of_squares_scratch_floats(n));
  KernelVector<float> base(1, 0.0f);
  sum_of_squares(base.data(), x.data(), n, scratch.data(), scratch.size(), nullptr);
  const KernelVector<float> base_state = check_steps<__nv_bfloat16>(5003, 82, 2, true);
  for (auto [schedule, seed] : {std::pair{simt::Schedule::reverse, 1}, {simt::Schedule::random, 3}, {simt::Schedule::random, 99}}) {
    simt::Options o = simt::options();
    o.schedule = schedule, o.seed = static_cast<uint64_t>(seed);
    const simt::ScopedOptions scoped(o);
    INFO("schedule " << static_cast<int>(schedule) << ", seed " << seed);
    KernelVector<float> out(1, 0.0f);
    sum_of_squares(out.data(), x.data(), n, scratch.data(), scratch.size(), nullptr);
    CHECK(std::memcmp(out.data(), base.data(), sizeof(float)) == 0);
    CHECK(check_steps<__nv_bfloat16>(5003, 82, 2, true) == base_state);
  }
}
#endif
