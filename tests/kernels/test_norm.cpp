// The normalisation kernels (kernels/norm.cu), run in the SIMT emulator, against the CPU reference
// (engine/cpu/ops.h) on awkward sizes, in fp32 and bf16 storage. Accuracy rules:
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
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_bf16.h>

#include "engine/cpu/ops.h"
#include "engine/base/error.h"
#include "kernels/norm.h"
#include "kernels/simt/runtime.h"
#include "tests/kernels/kernel_support.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

struct NormCase {
  int N, C;
};
// Awkward sizes: one row, odd rows, C below / not a multiple of / a multiple of the vector width;
// each register bucket of the warp-per-row forward (C <= 256, 1024, 4096, 8192 values a lane), the
// backward's warp (C <= 1024) and block paths (4097: odd, the scalar block path), and a row wider
// than a warp holds (9000: a block per row in both passes).
const NormCase kCases[] = {{1, 37}, {97, 100}, {1025, 64}, {33, 768}, {4, 5}, {97, 4097}, {3, 4104}, {2, 9000}};

// Inputs of one case, as stored (T) and as the references see them.
template <class T>
struct NormInputs {
  KernelVector<T> x, w, b;
  KernelVector<double> xd, wd, bd;
  NormInputs(int N, int C, uint64_t seed)
      : x(to_storage<T>(random_vector<float>(size_t(N) * C, seed, -2.0, 3.0))),
        w(to_storage<T>(random_vector<float>(C, seed + 1, 0.5, 1.5))),
        b(to_storage<T>(random_vector<float>(C, seed + 2, -0.5, 0.5))),
        xd(to_double(x)), wd(to_double(w)), bd(to_double(b)) {}
};

// Forward of one norm through the kernel. `offset` shifts every pointer by that many elements, so
// that the vector path is refused (misaligned) and the scalar path is taken.
template <class T>
void check_norm_forward(bool rms, bool residual, bool with_bias, int N, int C, uint64_t seed, int offset = 0,
                        float weight_offset = 0, bool baseline = false) {
  const std::string name = std::string(rms ? "rmsnorm" : "layernorm") + (residual ? "_residual" : "") + "_forward<" +
                           type_name<T>() + "> N=" + std::to_string(N) + " C=" + std::to_string(C) +
                           (with_bias ? "" : " no bias") + (offset ? " misaligned" : "") + (baseline ? " baseline" : "") +
                           " seed=" + std::to_string(seed);
  INFO(name);
  const size_t NC = size_t(N) * C;
  NormInputs<T> in(N, C, seed);
  const KernelVector<T> r = to_storage<T>(random_vector<float>(NC, seed + 3, -1.0, 1.0));
  const float eps = 1e-5f;

  // The rows actually normalised: x, or the residual sum as the kernel stores it (a float sum of
  // the stored values, rounded once to T).
  KernelVector<float> src_f = to_floats(in.x);
  if (residual)
    for (size_t i = 0; i < NC; ++i) src_f[i] = to_f(in.x[i]) + to_f(r[i]);
  const KernelVector<T> src = to_storage<T>(src_f);
  const KernelVector<double> srcd = to_double(src);
  const KernelVector<double> bd = with_bias ? in.bd : KernelVector<double>(C, 0.0);

  // Reference in double and naive in float, on the same stored inputs.
  KernelVector<double> ref(NC), mean_ref(N), rstd_ref(N);
  KernelVector<float> naive(NC), mean_n(N), rstd_n(N);
  const KernelVector<float> srcf = to_floats(src), wf = to_floats(in.w);
  KernelVector<float> bf(C, 0.0f);
  if (with_bias) bf = to_floats(in.b);
  if (rms) {
    cpu::rmsnorm_forward(ref.data(), rstd_ref.data(), srcd.data(), in.wd.data(), NormArgs{N, C, eps, weight_offset});
    cpu::rmsnorm_forward(naive.data(), rstd_n.data(), srcf.data(), wf.data(), NormArgs{N, C, eps, weight_offset});
  } else {
    cpu::layernorm_forward(ref.data(), mean_ref.data(), rstd_ref.data(), srcd.data(), in.wd.data(), bd.data(), NormArgs{N, C, eps, weight_offset});
    cpu::layernorm_forward(naive.data(), mean_n.data(), rstd_n.data(), srcf.data(), wf.data(), bf.data(), NormArgs{N, C, eps, weight_offset});
  }

  // Kernel buffers with room for the offset.
  KernelVector<T> x(NC + offset), rr(NC + offset), w(C + offset), b(C + offset), out(NC + offset), res_out(NC + offset);
  std::copy(in.x.begin(), in.x.end(), x.begin() + offset);
  std::copy(r.begin(), r.end(), rr.begin() + offset);
  std::copy(in.w.begin(), in.w.end(), w.begin() + offset);
  std::copy(in.b.begin(), in.b.end(), b.begin() + offset);
  KernelVector<float> mean(N, -1.0f), rstd(N, -1.0f);
  const T* bias = with_bias ? b.data() + offset : nullptr;
  if (rms && residual)
    rmsnorm_residual_forward(res_out.data() + offset, out.data() + offset, rstd.data(), x.data() + offset,
                             rr.data() + offset, w.data() + offset, NormArgs{N, C, eps, weight_offset}, nullptr);
  else if (rms && baseline)
    rmsnorm_forward_baseline(out.data() + offset, rstd.data(), x.data() + offset, w.data() + offset, NormArgs{N, C, eps, weight_offset},
                             nullptr);
  else if (rms)
    rmsnorm_forward(out.data() + offset, rstd.data(), x.data() + offset, w.data() + offset, NormArgs{N, C, eps, weight_offset}, nullptr);
  else if (residual)
    layernorm_residual_forward(res_out.data() + offset, out.data() + offset, mean.data(), rstd.data(),
                               x.data() + offset, rr.data() + offset, w.data() + offset, bias, NormArgs{N, C, eps, weight_offset}, nullptr);
  else if (baseline)
    layernorm_forward_baseline(out.data() + offset, mean.data(), rstd.data(), x.data() + offset, w.data() + offset, bias,
                               NormArgs{N, C, eps, weight_offset}, nullptr);
  else
    layernorm_forward(out.data() + offset, mean.data(), rstd.data(), x.data() + offset, w.data() + offset, bias, NormArgs{N, C, eps, weight_offset}, nullptr);

  const KernelVector<T> got(out.begin() + offset, out.end());
  require_storage_close(name + " out", got, ref, naive);
  require_fp32_close(name + " rstd", to_double(rstd), rstd_ref);
  if (!rms) require_fp32_close(name + " mean", to_double(mean), mean_ref);
  if (residual) {
    const KernelVector<T> got_res(res_out.begin() + offset, res_out.end());
    CHECK(bitwise_equal(got_res, src));  // x + r computed in fp32 and rounded once, like the naive sum
  }
}

// Inputs and outputs of one backward run.
template <class T>
struct NormBackward {
  KernelVector<T> dx;
  KernelVector<float> dw, db;
};

// Backward through the kernel (or the baseline it replaced). dw and db start from `dw0`/`db0` (they
// accumulate).
template <class T>
NormBackward<T> run_norm_backward(bool rms, const NormInputs<T>& in, const KernelVector<T>& dout,
                                  const KernelVector<T>* dres, bool alias, const KernelVector<float>& mean,
                                  const KernelVector<float>& rstd, const KernelVector<float>& dw0,
                                  const KernelVector<float>& db0, int N, int C, float weight_offset = 0,
                                  bool baseline = false) {
  NormBackward<T> o{KernelVector<T>(size_t(N) * C, from_f<T>(7.0f)), dw0, db0};
  const size_t scratch_n = rms ? rmsnorm_backward_scratch_floats(N, C) : layernorm_backward_scratch_floats(N, C);
  KernelVector<float> scratch(scratch_n, std::nanf(""));  // stale NaNs must never leak into results
  if (alias) o.dx = *dres;
  const T* dres_ptr = alias ? o.dx.data() : dres ? dres->data() : nullptr;
  const NormArgs a{N, C, 1e-5f, weight_offset};
  if (rms && baseline)
    rmsnorm_backward_baseline(o.dx.data(), o.dw.data(), dres_ptr, dout.data(), in.x.data(), in.w.data(), rstd.data(), a,
                              scratch.data(), scratch.size(), nullptr);
  else if (rms)
    rmsnorm_backward(o.dx.data(), o.dw.data(), dres_ptr, dout.data(), in.x.data(), in.w.data(), rstd.data(), a,
                     scratch.data(), scratch.size(), nullptr);
  else if (baseline)
    layernorm_backward_baseline(o.dx.data(), o.dw.data(), o.db.data(), dres_ptr, dout.data(), in.x.data(), in.w.data(),
                                mean.data(), rstd.data(), a, scratch.data(), scratch.size(), nullptr);
  else
    layernorm_backward(o.dx.data(), o.dw.data(), o.db.data(), dres_ptr, dout.data(), in.x.data(), in.w.data(),
                       mean.data(), rstd.data(), a, scratch.data(), scratch.size(), nullptr);
  return o;
}

template <class T>
void check_norm_backward(bool rms, bool with_dres, int N, int C, uint64_t seed, float weight_offset = 0,
                         bool baseline = false) {
  const std::string name = std::string(rms ? "rmsnorm" : "layernorm") + "_backward<" + type_name<T>() +
                           "> N=" + std::to_string(N) + " C=" + std::to_string(C) + (with_dres ? " +dres" : "") +
                           (baseline ? " baseline" : "") + " seed=" + std::to_string(seed);
  INFO(name);
  const size_t NC = size_t(N) * C;
  const float eps = 1e-5f;
  NormInputs<T> in(N, C, seed);
  const KernelVector<T> dout = to_storage<T>(random_vector<float>(NC, seed + 4, -1.0, 1.0));
  const KernelVector<T> dres = to_storage<T>(random_vector<float>(NC, seed + 5, -1.0, 1.0));
  const KernelVector<float> dw0 = random_vector<float>(C, seed + 6), db0 = random_vector<float>(C, seed + 7);

  // Saved statistics: the double forward's, rounded to fp32 (what the forward kernel saves); all
  // three backward computations use these same values.
  KernelVector<double> tmp(NC), mean_d(N), rstd_d(N);
  if (rms)
    cpu::rmsnorm_forward(tmp.data(), rstd_d.data(), in.xd.data(), in.wd.data(), NormArgs{N, C, eps, weight_offset});
  else
    cpu::layernorm_forward(tmp.data(), mean_d.data(), rstd_d.data(), in.xd.data(), in.wd.data(), in.bd.data(), NormArgs{N, C, eps, weight_offset});
  KernelVector<float> mean(N), rstd(N);
  for (int n = 0; n < N; ++n) mean[n] = static_cast<float>(mean_d[n]), rstd[n] = static_cast<float>(rstd_d[n]);
  const KernelVector<double> meand(mean.begin(), mean.end()), rstdd(rstd.begin(), rstd.end());

  // Reference (double) and naive (float) backward.
  const KernelVector<double> doutd = to_double(dout), dresd = to_double(dres);
  KernelVector<double> dx_ref(NC), dw_ref(dw0.begin(), dw0.end()), db_ref(db0.begin(), db0.end());
  const KernelVector<float> xf = to_floats(in.x), wf = to_floats(in.w), doutf = to_floats(dout), dresf = to_floats(dres);
  KernelVector<float> dx_naive(NC), dw_naive = dw0, db_naive = db0;
  if (rms) {
    cpu::rmsnorm_backward(dx_ref.data(), dw_ref.data(), with_dres ? dresd.data() : nullptr, doutd.data(), in.xd.data(),
                          in.wd.data(), rstdd.data(), NormArgs{N, C, eps, weight_offset});
    cpu::rmsnorm_backward(dx_naive.data(), dw_naive.data(), with_dres ? dresf.data() : nullptr, doutf.data(), xf.data(),
                          wf.data(), rstd.data(), NormArgs{N, C, eps, weight_offset});
  } else {
    cpu::layernorm_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), with_dres ? dresd.data() : nullptr,
                            doutd.data(), in.xd.data(), in.wd.data(), meand.data(), rstdd.data(), NormArgs{N, C, eps, weight_offset});
    cpu::layernorm_backward(dx_naive.data(), dw_naive.data(), db_naive.data(), with_dres ? dresf.data() : nullptr,
                            doutf.data(), xf.data(), wf.data(), mean.data(), rstd.data(), NormArgs{N, C, eps, weight_offset});
  }

  const NormBackward<T> got = run_norm_backward(rms, in, dout, with_dres ? &dres : nullptr, false, mean, rstd, dw0, db0, N, C, weight_offset,
                                                baseline);
  require_storage_close(name + " dx", got.dx, dx_ref, dx_naive);
  require_fp32_close(name + " dweight (+=)", to_double(got.dw), dw_ref);
  if (!rms) require_fp32_close(name + " dbias (+=)", to_double(got.db), db_ref);

  if (with_dres) {  // dres aliasing dx (the residual stream's gradient updated in place): same bits
    const NormBackward<T> inplace = run_norm_backward(rms, in, dout, &dres, true, mean, rstd, dw0, db0, N, C, weight_offset, baseline);
    CHECK(bitwise_equal(inplace.dx, got.dx));
    CHECK(bitwise_equal(inplace.dw, got.dw));
  }
}

}  // namespace

TEST_CASE("norm kernels: layernorm forward against the CPU reference", "[kernels][norm]") {
  uint64_t seed = 100;
  for (const auto& c : kCases) {
    check_norm_forward<float>(false, false, true, c.N, c.C, seed);
    check_norm_forward<bf16>(false, false, true, c.N, c.C, seed + 10);
    seed += 20;
  }
  check_norm_forward<float>(false, false, false, 97, 64, 7);   // no bias
  check_norm_forward<float>(false, false, true, 97, 64, 8, 1);  // misaligned: the scalar path
  check_norm_forward<bf16>(false, false, true, 97, 64, 9, 1);
}

TEST_CASE("norm kernels: layernorm with the residual add fused in front", "[kernels][norm]") {
  uint64_t seed = 300;
  for (const auto& c : kCases) {
    check_norm_forward<float>(false, true, true, c.N, c.C, seed);
    check_norm_forward<bf16>(false, true, true, c.N, c.C, seed + 10);
    seed += 20;
  }
  // residual_out aliasing x: the residual stream updated in place.
  const int N = 97, C = 100;
  NormInputs<bf16> in(N, C, 31);
  const auto r = to_storage<bf16>(random_vector<float>(size_t(N) * C, 32));
  KernelVector<bf16> res(size_t(N) * C), out1(res.size()), out2(res.size());
  KernelVector<float> mean(N), rstd(N);
  layernorm_residual_forward(res.data(), out1.data(), mean.data(), rstd.data(), in.x.data(), r.data(), in.w.data(),
                             in.b.data(), NormArgs{N, C, 1e-5f}, nullptr);
  KernelVector<bf16> x = in.x;
  layernorm_residual_forward(x.data(), out2.data(), mean.data(), rstd.data(), x.data(), r.data(), in.w.data(),
                             in.b.data(), NormArgs{N, C, 1e-5f}, nullptr);
  CHECK(bitwise_equal(x, res));
  CHECK(bitwise_equal(out2, out1));
}

TEST_CASE("norm kernels: rmsnorm forward, plain and with the fused residual", "[kernels][norm]") {
  uint64_t seed = 500;
  for (const auto& c : kCases) {
    check_norm_forward<float>(true, false, false, c.N, c.C, seed);
    check_norm_forward<bf16>(true, false, false, c.N, c.C, seed + 10);
    check_norm_forward<float>(true, true, false, c.N, c.C, seed + 20);
    check_norm_forward<bf16>(true, true, false, c.N, c.C, seed + 30);
    seed += 40;
  }
  check_norm_forward<float>(true, false, false, 33, 768, 9, 1);  // misaligned: the scalar path
  // Gemma's x * (1 + w): the offset added to the weight in fp32, in every path.
  check_norm_forward<float>(true, false, false, 97, 64, 11, 0, 1.0f);
  check_norm_forward<bf16>(true, true, false, 33, 100, 12, 0, 1.0f);
  check_norm_forward<bf16>(true, false, false, 5, 37, 13, 1, 1.0f);
}

TEST_CASE("norm kernels: layernorm backward, dx with and without dres, dweight/dbias +=", "[kernels][norm]") {
  uint64_t seed = 700;
  for (const auto& c : kCases) {
    for (bool with_dres : {false, true}) {
      check_norm_backward<float>(false, with_dres, c.N, c.C, seed);
      check_norm_backward<bf16>(false, with_dres, c.N, c.C, seed + 10);
      seed += 20;
    }
  }
}

TEST_CASE("norm kernels: rmsnorm backward, dx with and without dres, dweight +=", "[kernels][norm]") {
  uint64_t seed = 900;
  for (const auto& c : kCases) {
    for (bool with_dres : {false, true}) {
      check_norm_backward<float>(true, with_dres, c.N, c.C, seed);
      check_norm_backward<bf16>(true, with_dres, c.N, c.C, seed + 10);
      seed += 20;
    }
  }
  check_norm_backward<float>(true, true, 97, 64, 990, 1.0f);  // Gemma's weight offset
  check_norm_backward<bf16>(true, false, 33, 100, 991, 1.0f);
}

// Wide rows: a block per row in both passes, 32 channels a thread up to C = 32768 and 64 above
// (40000). The baselines keep their shared-memory column sums: past the 48 KiB a block gets without
// opting in (6145: odd, the scalar path; 12300 RMSNorm; 29040, LayerNorm's largest C on sm_90).
TEST_CASE("norm kernels: wide rows, a block per row - the baselines past the 48 KiB shared-memory line", "[kernels][norm]") {
  check_norm_backward<float>(false, true, 3, 6144, 1100);
  check_norm_backward<bf16>(false, false, 2, 6145, 1101);
  check_norm_backward<float>(true, true, 3, 12300, 1102);
  check_norm_backward<bf16>(false, true, 2, 29040, 1103);
  check_norm_backward<float>(true, false, 2, 40000, 1104);
  check_norm_forward<bf16>(false, true, true, 2, 40000, 1105);
  check_norm_backward<bf16>(false, false, 2, 6145, 1111, 0, true);
  check_norm_backward<float>(true, true, 3, 12300, 1112, 0, true);
  check_norm_backward<bf16>(false, true, 2, 29040, 1113, 0, true);
}

// The replaced kernels stay callable (ift bench kernels times them beside the new ones): same
// contract, same rules.
TEST_CASE("norm kernels: the baselines against the CPU reference", "[kernels][norm]") {
  for (bool rms : {false, true}) {
    check_norm_forward<float>(rms, false, !rms, 97, 100, 1200 + rms, 0, 0, true);
    check_norm_forward<bf16>(rms, false, !rms, 33, 768, 1202 + rms, 0, 0, true);
    check_norm_backward<float>(rms, true, 97, 100, 1204 + rms, 0, true);
    check_norm_backward<bf16>(rms, false, 33, 768, 1206 + rms, 0, true);
  }
}

#if IFT_TEST_EMULATED  // the emulator's thread and block schedules
// The backward of one shape run under the default, two random and the reverse single-worker
// schedules: dx, dweight and dbias bitwise the same every time.
template <class T>
void check_backward_reproducible(bool rms, int N, int C, uint64_t seed) {
  INFO((rms ? "rmsnorm" : "layernorm") << "<" << type_name<T>() << "> N=" << N << " C=" << C << " seed=" << seed);
  NormInputs<T> in(N, C, seed);
  const auto dout = to_storage<T>(random_vector<float>(size_t(N) * C, seed + 1));
  const auto dres = to_storage<T>(random_vector<float>(size_t(N) * C, seed + 2));
  const KernelVector<float> mean = random_vector<float>(N, seed + 3), rstd = random_vector<float>(N, seed + 4, 0.5, 2.0);
  const KernelVector<float> dw0 = random_vector<float>(C, seed + 5), db0 = random_vector<float>(C, seed + 6);
  const auto run = [&] { return run_norm_backward(rms, in, dout, &dres, false, mean, rstd, dw0, db0, N, C); };
  const NormBackward<T> first = run();
  const auto same = [&](const NormBackward<T>& o) {
    CHECK(bitwise_equal(o.dx, first.dx));
    CHECK(bitwise_equal(o.dw, first.dw));
    CHECK(bitwise_equal(o.db, first.db));
  };
  same(run());
  for (uint64_t s : {3u, 11u}) {
    simt::Options o = simt::options();
    o.schedule = simt::Schedule::random;
    o.seed = s;
    simt::ScopedOptions scope(o);
    same(run());
  }
  {
    simt::Options o = simt::options();
    o.schedule = simt::Schedule::reverse;
    o.workers = 1;
    simt::ScopedOptions scope(o);
    same(run());
  }
}

TEST_CASE("norm kernels: backward reductions are bitwise reproducible across runs, schedules and workers",
          "[kernels][norm]") {
  for (bool rms : {false, true}) {
    // The warp path: 256 blocks of 4 warps, each warp 1 or 2 rows (bf16, the vector path).
    check_backward_reproducible<bf16>(rms, 1025, 40, 41);
    // The scalar warp path (fp32, odd C) and the block path (C > 1024, blocks of 2 or 3 rows).
    check_backward_reproducible<float>(rms, 97, 37, 51);
    check_backward_reproducible<float>(rms, 600, 1100, 61);
  }
}
#endif

TEST_CASE("norm kernels: bad arguments are ift::Error naming the op and the argument", "[kernels][norm]") {
  const int N = 4, C = 8;
  KernelVector<float> x(N * C, 1.0f), out(N * C), w(C, 1.0f), b(C), mean(N), rstd(N), dw(C), db(C);
  KernelVector<float> scratch(layernorm_backward_scratch_floats(N, C));
  CHECK_THROWS_AS(layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), NormArgs{0, C, 1e-5f},
                                    nullptr),
                  Error);
  CHECK_THROWS_WITH(layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), NormArgs{0, C, 1e-5f},
                                      nullptr),
                    Catch::Equals("layernorm_forward: empty shape N = 0, C = 8"));
  CHECK_THROWS_WITH(rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), NormArgs{N, -3, 1e-5f}, nullptr),
                    Catch::Contains("rmsnorm_forward: empty shape"));
  CHECK_THROWS_WITH(layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), NormArgs{N, C, -1.0f},
                                      nullptr),
                    Catch::Contains("layernorm_forward: eps = -1"));
  CHECK_THROWS_WITH(layernorm_forward(out.data(), mean.data(), nullptr, x.data(), w.data(), b.data(), NormArgs{N, C, 1e-5f}, nullptr),
                    Catch::Contains("layernorm_forward") && Catch::Contains("rstd"));
  CHECK_THROWS_WITH(rmsnorm_residual_forward(out.data(), out.data(), rstd.data(), x.data(), nullptr, w.data(), NormArgs{N, C, 1e-5f}, nullptr),
                    Catch::Contains("rmsnorm_residual_forward") && Catch::Contains("residual"));
  CHECK_THROWS_WITH(layernorm_backward(out.data(), dw.data(), db.data(), nullptr, x.data(), x.data(), w.data(),
                                       mean.data(), rstd.data(), NormArgs{N, C}, scratch.data(), scratch.size() - 1, nullptr),
                    Catch::Contains("layernorm_backward: scratch holds"));
  CHECK_THROWS_WITH(rmsnorm_backward(out.data(), nullptr, nullptr, x.data(), x.data(), w.data(), rstd.data(), NormArgs{N, C},
                                     scratch.data(), scratch.size(), nullptr),
                    Catch::Contains("rmsnorm_backward") && Catch::Contains("dweight"));
  // C beyond what the baseline backward's shared-memory column sums hold even with the opt-in (227
  // KiB), and beyond the 65536 channels a block of 1024 threads holds in registers.
  const int big = 29041, huge = 65537;
  KernelVector<float> bx(huge), bw(huge), bdw(huge), bdb(huge), bs(layernorm_backward_scratch_floats(1, huge));
  CHECK_THROWS_WITH(layernorm_backward_baseline(bx.data(), bdw.data(), bdb.data(), nullptr, bx.data(), bx.data(), bw.data(),
                                                mean.data(), rstd.data(), NormArgs{1, big}, bs.data(), bs.size(), nullptr),
                    Catch::Contains("layernorm_backward: C = 29041 is too large"));
  CHECK_THROWS_WITH(layernorm_backward(bx.data(), bdw.data(), bdb.data(), nullptr, bx.data(), bx.data(), bw.data(),
                                       mean.data(), rstd.data(), NormArgs{1, huge}, bs.data(), bs.size(), nullptr),
                    Catch::Contains("layernorm_backward: C = 65537 is too large"));
  CHECK_THROWS_WITH(rmsnorm_residual_forward(bx.data(), bdw.data(), rstd.data(), bx.data(), bx.data(), bw.data(),
                                             NormArgs{1, huge}, nullptr),
                    Catch::Contains("rmsnorm_residual_forward: C = 65537 is too large"));
}
