// LayerNorm and RMSNorm, forward (optionally with the residual add fused in front) and backward
// (declared in kernels/norm.h). One kernel serves both norms: RMSNorm is LayerNorm without the mean
// and the bias. Activation gradients are written (=); parameter gradients (fp32) accumulate (+=)
// through per-block partial sums and a fixed-order second stage, never float atomics.
#include "kernels/common.cuh"
#include "kernels/elementwise.h"
#include "kernels/norm.h"

#include <algorithm>
#include <cmath>

IFT_KERNELS_BEGIN

namespace {

// x rounded to the storage type and back: what a later kernel reading the stored value sees.
template <class T>
__device__ __forceinline__ float round_to(float x) {
  return to_float(from_float<T>(x));
}

}  // namespace

template <class T>
struct NormForwardParams {
  T* out;             // (N, C) normalised rows
  T* residual_out;    // (N, C) x + residual, rounded to T (residual kernels only); may alias x
  float* mean;        // (N) row means, saved for backward (LayerNorm only)
  float* rstd;        // (N) 1 / sqrt(variance + eps), or 1 / sqrt(mean square + eps) for RMSNorm
  const T* x;         // (N, C) input rows
  const T* residual;  // (N, C) added to x before normalising (residual kernels only)
  const T* weight;    // (C) scale
  const T* bias;      // (C) shift, or null (always null for RMSNorm)
  NormArgs args;      // N, C, eps, weight offset (kernels/args.h)
};

template <class T>
struct NormBackwardParams {
  T* dx;               // (N, C) written: dres + dnorm/dx . dout
  float* partials;     // (kAcc, gridDim.x, C) this block's column sums of dweight, then dbias, terms
  const T* dres;       // (N, C) gradient of the residual stream added to dx, or null; may alias dx
  const T* dout;       // (N, C) gradient of the normalised output
  const T* x;          // (N, C) forward input
  const T* weight;     // (C) scale
  const float* mean;   // (N) saved by forward (LayerNorm only)
  const float* rstd;   // (N) saved by forward
  NormArgs args;       // N, C, weight offset (kernels/args.h)
};

// ---- kernels ------------------------------------------------------------------------------------

// One block per row; each thread strides over packs of K channels. Two-pass statistics (mean, then
// the sum of squared deviations, from re-read rows that sit in L1/L2) rather than E[x^2] - E[x]^2,
// which cancels catastrophically for rows with a large mean.
template <int K, bool kRms, bool kResidual, class T>
static __global__ void norm_forward_kernel(const NormForwardParams<T> p) {
  const int64_t row = blockIdx.x;
  const int C = p.args.C, packs = C / K;
  const T* g_x = p.x + row * C;
  // With a residual, the row normalised is the rounded sum stored in residual_out: each value is
  // re-read by the thread that wrote it, so no barrier is needed.
  const T* g_src = kResidual ? p.residual_out + row * C : g_x;

  float r_sum = 0.0f;
  for (int i = threadIdx.x; i < packs; i += blockDim.x) {
    float r_v[K];
    load_floats(r_v, g_x + i * K);
    if constexpr (kResidual) {
      float r_r[K];
      load_floats(r_r, p.residual + row * C + i * K);
      for (int k = 0; k < K; ++k) r_v[k] = round_to<T>(r_v[k] + r_r[k]);
      store_floats(p.residual_out + row * C + i * K, r_v);
    }
    for (int k = 0; k < K; ++k) r_sum += kRms ? r_v[k] * r_v[k] : r_v[k];
  }

  float mean = 0.0f, variance;
  if constexpr (kRms) {
    variance = block_reduce_sum(r_sum) / C;  // the mean square
  } else {
    mean = block_reduce_sum(r_sum) / C;
    float r_var = 0.0f;
    for (int i = threadIdx.x; i < packs; i += blockDim.x) {
      float r_v[K];
      load_floats(r_v, g_src + i * K);
      for (int k = 0; k < K; ++k) r_var += (r_v[k] - mean) * (r_v[k] - mean);
    }
    variance = block_reduce_sum(r_var) / C;
  }
  const float rstd = 1.0f / sqrtf(variance + p.args.eps);

  T* g_out = p.out + row * C;
  for (int i = threadIdx.x; i < packs; i += blockDim.x) {
    float r_v[K], r_w[K], r_b[K];
    load_floats(r_v, g_src + i * K);
    load_floats(r_w, p.weight + i * K);
    for (int k = 0; k < K; ++k) r_w[k] += p.args.weight_offset;
    if (p.bias) {
      load_floats(r_b, p.bias + i * K);
    } else {
      for (int k = 0; k < K; ++k) r_b[k] = 0.0f;
    }
    for (int k = 0; k < K; ++k) r_v[k] = (r_v[k] - mean) * rstd * r_w[k] + r_b[k];
    store_floats(g_out + i * K, r_v);
  }
  if (threadIdx.x == 0) {
    if constexpr (!kRms) p.mean[row] = mean;
    p.rstd[row] = rstd;
  }
}

// Blocks loop over rows row = blockIdx.x, + gridDim.x, ... in order. Per row: pass 1 computes
// the two row means of the input gradient (block reductions) and adds this row's dweight / dbias
// terms to the block's shared column sums; pass 2 writes dx. Each thread owns the same channels in
// every loop, so its shared sums are only ever touched by itself (no barrier, no atomics, a fixed
// order). At the end the block writes its sums to its row of partials.
template <int K, bool kRms, class T>
static __global__ void norm_backward_kernel(const NormBackwardParams<T> p) {
  constexpr int kAcc = kRms ? 1 : 2;
  IFT_DYNAMIC_SHARED(float, s_acc);  // (kAcc, C): dweight sums, then dbias sums
  const int C = p.args.C, packs = C / K;
  for (int i = threadIdx.x; i < packs; i += blockDim.x)
    for (int a = 0; a < kAcc; ++a)
      for (int k = 0; k < K; ++k) s_acc[a * C + i * K + k] = 0.0f;

  for (int64_t row = blockIdx.x; row < p.args.N; row += gridDim.x) {
    const float mean = kRms ? 0.0f : p.mean[row], rstd = p.rstd[row];
    const T* g_dout = p.dout + row * C;
    const T* g_x = p.x + row * C;
    float r_dy = 0.0f, r_dy_xhat = 0.0f;
    for (int i = threadIdx.x; i < packs; i += blockDim.x) {
      float r_d[K], r_x[K], r_w[K];
      load_floats(r_d, g_dout + i * K);
      load_floats(r_x, g_x + i * K);
      load_floats(r_w, p.weight + i * K);
      for (int k = 0; k < K; ++k) r_w[k] += p.args.weight_offset;
      for (int k = 0; k < K; ++k) {
        const float xhat = (r_x[k] - mean) * rstd, dy = r_d[k] * r_w[k];
        r_dy += dy;
        r_dy_xhat += dy * xhat;
        s_acc[i * K + k] += r_d[k] * xhat;
        if constexpr (!kRms) s_acc[C + i * K + k] += r_d[k];
      }
    }
    const float mean_dy = kRms ? 0.0f : block_reduce_sum(r_dy) / C;
    const float mean_dy_xhat = block_reduce_sum(r_dy_xhat) / C;

    T* g_dx = p.dx + row * C;
    const T* g_dres = p.dres ? p.dres + row * C : nullptr;
    for (int i = threadIdx.x; i < packs; i += blockDim.x) {
      float r_d[K], r_x[K], r_w[K], r_g[K];
      load_floats(r_d, g_dout + i * K);
      load_floats(r_x, g_x + i * K);
      load_floats(r_w, p.weight + i * K);
      for (int k = 0; k < K; ++k) r_w[k] += p.args.weight_offset;
      if (g_dres) {
        load_floats(r_g, g_dres + i * K);  // read before dx is written: dres may alias dx
      } else {
        for (int k = 0; k < K; ++k) r_g[k] = 0.0f;
      }
      for (int k = 0; k < K; ++k) {
        const float xhat = (r_x[k] - mean) * rstd;
        r_g[k] += (r_d[k] * r_w[k] - mean_dy - xhat * mean_dy_xhat) * rstd;
      }
      store_floats(g_dx + i * K, r_g);
    }
  }

  for (int i = threadIdx.x; i < packs; i += blockDim.x)
    for (int a = 0; a < kAcc; ++a) {
      float r_s[K];
      for (int k = 0; k < K; ++k) r_s[k] = s_acc[a * C + i * K + k];
      store_floats(p.partials + (static_cast<int64_t>(a) * gridDim.x + blockIdx.x) * C + i * K, r_s);
    }
}

// ---- launchers ----------------------------------------------------------------------------------

namespace {

constexpr int kMaxThreads = 256;
// Blocks of the backward pass (each loops over N / blocks rows). A function of N only, so that the
// scratch size and the summation order do not depend on the device.
constexpr int kBackwardBlocks = 256;
// One thread per pack up to kMaxThreads, in whole warps (the block reductions need them).
int threads_for(int packs) { return std::clamp((packs + 31) / 32 * 32, 32, kMaxThreads); }

int backward_blocks(int N) { return std::min(N, kBackwardBlocks); }

void check_shape(const char* op, int N, int C) {
  IFT_CHECK(N > 0 && C > 0, op, ": empty shape N = ", N, ", C = ", C);
}

void check_eps(const char* op, float eps) {
  IFT_CHECK(std::isfinite(eps) && eps >= 0.0f, op, ": eps = ", eps, " must be finite and non-negative");
}

template <bool kRms, bool kResidual, class T>
void launch_norm_forward(const NormForwardParams<T>& p, cudaStream_t stream) {
  constexpr int K = Pack128<T>::kSize;
  const bool vec = p.args.C % K == 0 && aligned16(p.out) && aligned16(p.x) && aligned16(p.weight) &&
                   (!p.bias || aligned16(p.bias)) && (!kResidual || (aligned16(p.residual) && aligned16(p.residual_out)));
  if (vec)
    launch_kernel(norm_forward_kernel<K, kRms, kResidual, T>, p.args.N, threads_for(p.args.C / K), 0, stream, p);
  else
    launch_kernel(norm_forward_kernel<1, kRms, kResidual, T>, p.args.N, threads_for(p.args.C), 0, stream, p);
}

template <bool kRms, class T>
void launch_norm_backward(const char* op, const NormBackwardParams<T>& p, float* dweight, float* dbias,
                          size_t scratch_floats, cudaStream_t stream) {
  constexpr int kAcc = kRms ? 1 : 2;
  const size_t smem = sizeof(float) * kAcc * static_cast<size_t>(p.args.C);
  // The column sums (dynamic) plus block_reduce's partials (static): opted in above 48 KiB (C > 6128
  // for LayerNorm, 12256 for RMSNorm), an error past the device's maximum (sm_90: C > 29040, 58080).
  const size_t most = max_shared_bytes_optin();
  IFT_CHECK(smem + kBlockReduceSharedBytes <= most, op, ": C = ", p.args.C, " is too large: the block's column sums and reductions need ",
            smem + kBlockReduceSharedBytes, " bytes of shared memory, more than the ", most, " a block can have");
  const auto reserve = [&](auto kernel) { reserve_shared_memory(op, kernel, smem, kBlockReduceSharedBytes); };
  const int blocks = backward_blocks(p.args.N);
  const size_t need = static_cast<size_t>(kAcc) * blocks * p.args.C;
  IFT_CHECK(scratch_floats >= need, op, ": scratch holds ", scratch_floats, " floats, needs ", need, " (",
            op, "_scratch_floats)");
  constexpr int K = Pack128<T>::kSize;
  const bool vec = p.args.C % K == 0 && aligned16(p.dx) && (!p.dres || aligned16(p.dres)) && aligned16(p.dout) &&
                   aligned16(p.x) && aligned16(p.weight) && aligned16(p.partials);
  if (vec) {
    reserve(norm_backward_kernel<K, kRms, T>);
    launch_kernel(norm_backward_kernel<K, kRms, T>, blocks, threads_for(p.args.C / K), smem, stream, p);
  } else {
    reserve(norm_backward_kernel<1, kRms, T>);
    launch_kernel(norm_backward_kernel<1, kRms, T>, blocks, threads_for(p.args.C), smem, stream, p);
  }
  column_sums_accumulate(dweight, p.partials, blocks, p.args.C, stream);
  if (dbias) column_sums_accumulate(dbias, p.partials + static_cast<size_t>(blocks) * p.args.C, blocks, p.args.C, stream);
}

}  // namespace

template <class T>
static void layernorm_forward_impl(T* out, float* mean, float* rstd, const T* x, const T* weight, const T* bias, const NormArgs& a, cudaStream_t stream) {
  check_shape("layernorm_forward", a.N, a.C);
  check_eps("layernorm_forward", a.eps);
  IFT_CHECK(out && mean && rstd && x && weight, "layernorm_forward: out, mean, rstd, x and weight must not be null");
  launch_norm_forward<false, false>(NormForwardParams<T>{out, nullptr, mean, rstd, x, nullptr, weight, bias, a},
                                    stream);
}

template <class T>
static void layernorm_residual_forward_impl(T* residual_out, T* out, float* mean, float* rstd, const T* x, const T* residual,
                                const T* weight, const T* bias, const NormArgs& a, cudaStream_t stream) {
  check_shape("layernorm_residual_forward", a.N, a.C);
  check_eps("layernorm_residual_forward", a.eps);
  IFT_CHECK(residual_out && out && mean && rstd && x && residual && weight,
            "layernorm_residual_forward: residual_out, out, mean, rstd, x, residual and weight must not be null");
  launch_norm_forward<false, true>(
      NormForwardParams<T>{out, residual_out, mean, rstd, x, residual, weight, bias, a}, stream);
}

template <class T>
static void layernorm_backward_impl(T* dx, float* dweight, float* dbias, const T* dres, const T* dout, const T* x,
                        const T* weight, const float* mean, const float* rstd, const NormArgs& a, float* scratch, size_t scratch_floats, cudaStream_t stream) {
  check_shape("layernorm_backward", a.N, a.C);
  IFT_CHECK(dx && dweight && dout && x && weight && mean && rstd && scratch,
            "layernorm_backward: dx, dweight, dout, x, weight, mean, rstd and scratch must not be null");
  launch_norm_backward<false>("layernorm_backward",
                              NormBackwardParams<T>{dx, scratch, dres, dout, x, weight, mean, rstd, a}, dweight,
                              dbias, scratch_floats, stream);
}

size_t layernorm_backward_scratch_floats(int N, int C) {
  check_shape("layernorm_backward", N, C);
  return 2 * static_cast<size_t>(backward_blocks(N)) * C;
}

template <class T>
static void rmsnorm_forward_impl(T* out, float* rstd, const T* x, const T* weight, const NormArgs& a, cudaStream_t stream) {
  check_shape("rmsnorm_forward", a.N, a.C);
  check_eps("rmsnorm_forward", a.eps);
  IFT_CHECK(out && rstd && x && weight, "rmsnorm_forward: out, rstd, x and weight must not be null");
  launch_norm_forward<true, false>(NormForwardParams<T>{out, nullptr, nullptr, rstd, x, nullptr, weight, nullptr, a},
                                   stream);
}

template <class T>
static void rmsnorm_residual_forward_impl(T* residual_out, T* out, float* rstd, const T* x, const T* residual, const T* weight,
                              const NormArgs& a, cudaStream_t stream) {
  check_shape("rmsnorm_residual_forward", a.N, a.C);
  check_eps("rmsnorm_residual_forward", a.eps);
  IFT_CHECK(residual_out && out && rstd && x && residual && weight,
            "rmsnorm_residual_forward: residual_out, out, rstd, x, residual and weight must not be null");
  launch_norm_forward<true, true>(
      NormForwardParams<T>{out, residual_out, nullptr, rstd, x, residual, weight, nullptr, a}, stream);
}

template <class T>
static void rmsnorm_backward_impl(T* dx, float* dweight, const T* dres, const T* dout, const T* x, const T* weight,
                      const float* rstd, const NormArgs& a, float* scratch, size_t scratch_floats, cudaStream_t stream) {
  check_shape("rmsnorm_backward", a.N, a.C);
  IFT_CHECK(dx && dweight && dout && x && weight && rstd && scratch,
            "rmsnorm_backward: dx, dweight, dout, x, weight, rstd and scratch must not be null");
  launch_norm_backward<true>("rmsnorm_backward",
                             NormBackwardParams<T>{dx, scratch, dres, dout, x, weight, nullptr, rstd, a}, dweight,
                             nullptr, scratch_floats, stream);
}

size_t rmsnorm_backward_scratch_floats(int N, int C) {
  check_shape("rmsnorm_backward", N, C);
  return static_cast<size_t>(backward_blocks(N)) * C;
}

// The public overloads (kernels/norm.h), one per storage type.
#define IFT_DEFINE_NORM(T)                                                                                            \
  void layernorm_forward(T* out, float* mean, float* rstd, const T* x, const T* weight, const T* bias,                \
                         const NormArgs& a, cudaStream_t stream) {                                                    \
    layernorm_forward_impl(out, mean, rstd, x, weight, bias, a, stream);                                              \
  }                                                                                                                   \
  void layernorm_residual_forward(T* residual_out, T* out, float* mean, float* rstd, const T* x, const T* residual,   \
                                  const T* weight, const T* bias, const NormArgs& a, cudaStream_t stream) {           \
    layernorm_residual_forward_impl(residual_out, out, mean, rstd, x, residual, weight, bias, a, stream);             \
  }                                                                                                                   \
  void layernorm_backward(T* dx, float* dweight, float* dbias, const T* dres, const T* dout, const T* x,              \
                          const T* weight, const float* mean, const float* rstd, const NormArgs& a, float* scratch,   \
                          size_t scratch_floats, cudaStream_t stream) {                                               \
    layernorm_backward_impl(dx, dweight, dbias, dres, dout, x, weight, mean, rstd, a, scratch, scratch_floats,       \
                            stream);                                                                                  \
  }                                                                                                                   \
  void rmsnorm_forward(T* out, float* rstd, const T* x, const T* weight, const NormArgs& a, cudaStream_t stream) {    \
    rmsnorm_forward_impl(out, rstd, x, weight, a, stream);                                                            \
  }                                                                                                                   \
  void rmsnorm_residual_forward(T* residual_out, T* out, float* rstd, const T* x, const T* residual, const T* weight, \
                                const NormArgs& a, cudaStream_t stream) {                                             \
    rmsnorm_residual_forward_impl(residual_out, out, rstd, x, residual, weight, a, stream);                           \
  }                                                                                                                   \
  void rmsnorm_backward(T* dx, float* dweight, const T* dres, const T* dout, const T* x, const T* weight,             \
                        const float* rstd, const NormArgs& a, float* scratch, size_t scratch_floats,                  \
                        cudaStream_t stream) {                                                                        \
    rmsnorm_backward_impl(dx, dweight, dres, dout, x, weight, rstd, a, scratch, scratch_floats, stream);              \
  }
IFT_DEFINE_NORM(float)
IFT_DEFINE_NORM(bf16)
#undef IFT_DEFINE_NORM

IFT_KERNELS_END
