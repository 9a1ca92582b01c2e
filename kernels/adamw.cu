// The optimizer's kernels (kernels/adamw.h): the sum of squares behind the global gradient norm,
// in two deterministic stages, and the fused AdamW step. Master weights, moments and the optional
// bf16 working copy are written (=) in place; the gradient is only read.
#include "kernels/common.cuh"

#include <algorithm>
#include <cmath>

#include "kernels/adamw.h"

IFT_KERNELS_BEGIN

constexpr int kSsqThreads = 256;           // threads of both sum-of-squares stages
constexpr int kSsqValuesPerThread = 8;     // values a stage-1 thread reads before the grid is capped
constexpr int kSsqMaxBlocks = 1024;        // stage-1 blocks at most (= floats of scratch)
constexpr int kAdamWThreads = 256;
constexpr int64_t kAdamWMaxBlocks = 4096;  // beyond this the grid strides

// ---- sum of squares ------------------------------------------------------------------------------
// The number of stage-1 blocks depends only on n, and every value has a fixed thread and place in
// the sums, so the result is the same bits on every run and every GPU.

// Stage 1: block b writes the sum of squares of its grid-strided share of x to g_partial[b]. K values
// a thread at a time: the 16-byte pack (one 128-bit load) when x is 16-byte aligned, else 1; the
// n % K values past the last pack go to the first threads of block 0.
template <int K, class T>
static __global__ void sum_of_squares_partial_kernel(float* __restrict__ g_partial,  // (gridDim.x)
                                                     const T* __restrict__ g_x,      // (n)
                                                     int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x, packs = n / K;
  float r_sum = 0.0f;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < packs; p += stride) {
    float r[K];
    load_floats<K>(r, g_x + p * K);
    for (int k = 0; k < K; ++k) r_sum += r[k] * r[k];
  }
  if (blockIdx.x == 0)
    for (int64_t i = packs * K + threadIdx.x; i < n; i += blockDim.x) {
      const float x = to_float(g_x[i]);
      r_sum += x * x;
    }
  r_sum = block_reduce_sum(r_sum);
  if (threadIdx.x == 0) g_partial[blockIdx.x] = r_sum;
}

// Stage 2: one block sums the `blocks` partials (thread j takes j, j + blockDim, ... in order).
static __global__ void sum_of_squares_final_kernel(float* __restrict__ g_out, const float* __restrict__ g_partial,
                                                   int blocks) {
  float r_sum = 0.0f;
  for (int j = threadIdx.x; j < blocks; j += blockDim.x) r_sum += g_partial[j];
  r_sum = block_reduce_sum(r_sum);
  if (threadIdx.x == 0) *g_out = r_sum;
}

// ---- AdamW ---------------------------------------------------------------------------------------

// What the launcher derives once from AdamWArgs, in double as cpu::adamw_update does, rounded once.
struct AdamWFactors {
  float decay;         // 1 - lr * weight_decay, for the elements that decay
  float bias1, bias2;  // 1 - beta1^t, 1 - beta2^t
};

// The segment holding element i, searching from `from` (a thread's indices only grow, so its last
// segment is a lower bound): the first s >= from with ends[s] > i, or the last segment when none is
// (a malformed mask, which then cannot read out of bounds).
__device__ __forceinline__ int adamw_segment(const int64_t* __restrict__ g_ends, int count, int from, int64_t i) {
  if (g_ends[from] > i) return from;
  int lo = from + 1, hi = count - 1;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (g_ends[mid] > i)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo < count ? lo : count - 1;
}

template <class G>
static __global__ void adamw_kernel(AdamWArgs a, AdamWFactors f,
                                    float* __restrict__ g_master,     // (n) fp32 master weights
                                    float* __restrict__ g_m,          // (n) first moments
                                    float* __restrict__ g_v,          // (n) second moments
                                    bf16* __restrict__ g_params_bf16, // (n) or null: the rounded copy of the master
                                    const G* __restrict__ g_grad) {   // (n)
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int r_seg = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.n; i += stride) {
    float decay = f.decay;
    if (a.runs > 0) {
      r_seg = adamw_segment(a.run_ends, a.runs, r_seg, i);
      if (!a.run_decays[r_seg]) decay = 1.0f;
    }
    const float g = to_float(g_grad[i]) * a.grad_scale;
    const float m = a.beta1 * g_m[i] + (1.0f - a.beta1) * g;
    const float v = a.beta2 * g_v[i] + (1.0f - a.beta2) * g * g;
    g_m[i] = m;
    g_v[i] = v;
    const float w = g_master[i] * decay - a.lr * (m / f.bias1) / (sqrtf(v / f.bias2) + a.eps);
    g_master[i] = w;
    if (g_params_bf16) g_params_bf16[i] = from_float<bf16>(w);
  }
}

// launchers

static int sum_of_squares_blocks(int64_t n) {
  const int64_t per_block = static_cast<int64_t>(kSsqThreads) * kSsqValuesPerThread;
  return static_cast<int>(std::clamp<int64_t>((n + per_block - 1) / per_block, 1, kSsqMaxBlocks));
}

template <class T>
static void launch_sum_of_squares(float* out, const T* x, int64_t n, float* scratch, cudaStream_t stream) {
  const int blocks = sum_of_squares_blocks(n);
  constexpr int P = Pack128<T>::kSize;
  if (aligned16(x))
    launch_kernel(sum_of_squares_partial_kernel<P, T>, blocks, kSsqThreads, 0, stream, scratch, x, n);
  else
    launch_kernel(sum_of_squares_partial_kernel<1, T>, blocks, kSsqThreads, 0, stream, scratch, x, n);
  launch_kernel(sum_of_squares_final_kernel, 1, kSsqThreads, 0, stream, out, scratch, blocks);
}

template <class T>
static void sum_of_squares_checked(float* out, const T* x, int64_t n, float* scratch, size_t scratch_floats,
                                   cudaStream_t stream) {
  IFT_CHECK(n >= 0, "sum_of_squares: n must not be negative, got ", n);
  IFT_CHECK(out != nullptr, "sum_of_squares: out is null");
  IFT_CHECK(x != nullptr || n == 0, "sum_of_squares: x is null");
  IFT_CHECK(scratch != nullptr, "sum_of_squares: scratch is null");
  IFT_CHECK(scratch_floats >= sum_of_squares_scratch_floats(n), "sum_of_squares: scratch holds ", scratch_floats,
            " floats, n = ", n, " needs ", sum_of_squares_scratch_floats(n), " (sum_of_squares_scratch_floats)");
  launch_sum_of_squares(out, x, n, scratch, stream);
}

template <class G>
static void launch_adamw(const AdamWArgs& a, const AdamWFactors& f, float* master, float* m, float* v,
                         bf16* params_bf16, const G* grads, cudaStream_t stream) {
  const int blocks = static_cast<int>(std::min<int64_t>((a.n + kAdamWThreads - 1) / kAdamWThreads, kAdamWMaxBlocks));
  launch_kernel(adamw_kernel<G>, blocks, kAdamWThreads, 0, stream, a, f, master, m, v, params_bf16, grads);
}

template <class G>
static void adamw_checked(const AdamWArgs& a, float* master, float* m, float* v, bf16* params_bf16, const G* grads,
                          cudaStream_t stream) {
  IFT_CHECK(a.n >= 0, "adamw_update: n must not be negative, got ", a.n);
  IFT_CHECK(a.n == 0 || master != nullptr, "adamw_update: master is null");
  IFT_CHECK(a.n == 0 || m != nullptr, "adamw_update: m is null");
  IFT_CHECK(a.n == 0 || v != nullptr, "adamw_update: v is null");
  IFT_CHECK(a.n == 0 || grads != nullptr, "adamw_update: grads is null");
  IFT_CHECK(a.t >= 1, "adamw_update: step t must be >= 1 (1-based, for bias correction), got ", a.t);
  IFT_CHECK(a.beta1 >= 0.0f && a.beta1 < 1.0f, "adamw_update: beta1 must be in [0, 1), got ", a.beta1);
  IFT_CHECK(a.beta2 >= 0.0f && a.beta2 < 1.0f, "adamw_update: beta2 must be in [0, 1), got ", a.beta2);
  IFT_CHECK(a.eps >= 0.0f && std::isfinite(a.eps), "adamw_update: eps must be finite and >= 0, got ", a.eps);
  IFT_CHECK(a.lr >= 0.0f && std::isfinite(a.lr), "adamw_update: lr must be finite and >= 0, got ", a.lr);
  IFT_CHECK(a.weight_decay >= 0.0f && std::isfinite(a.weight_decay),
            "adamw_update: weight_decay must be finite and >= 0, got ", a.weight_decay);
  IFT_CHECK(std::isfinite(a.grad_scale), "adamw_update: grad_scale must be finite, got ", a.grad_scale,
            " (skip the step when the gradient norm is not finite)");
  IFT_CHECK(a.runs >= 0, "adamw_update: runs must not be negative, got ", a.runs);
  IFT_CHECK(a.runs == 0 || (a.run_ends != nullptr && a.run_decays != nullptr),
            "adamw_update: ", a.runs, " decay runs but null run_ends or run_decays");
  IFT_CHECK(a.runs <= a.n || a.n == 0, "adamw_update: ", a.runs, " decay runs for ", a.n,
            " elements (runs are not empty)");
  if (a.n == 0) return;
  // Bias corrections and decay in double, as cpu::adamw_update computes them, then rounded once.
  const double t = static_cast<double>(a.t);
  AdamWFactors f{};
  f.decay = static_cast<float>(1.0 - static_cast<double>(a.lr) * a.weight_decay);
  f.bias1 = static_cast<float>(1.0 - std::pow(static_cast<double>(a.beta1), t));
  f.bias2 = static_cast<float>(1.0 - std::pow(static_cast<double>(a.beta2), t));
  IFT_CHECK(f.bias1 > 0.0f && f.bias2 > 0.0f, "adamw_update: bias correction 1 - beta^t is 0 (beta1 ", a.beta1,
            ", beta2 ", a.beta2, ", t ", a.t, ")");
  launch_adamw(a, f, master, m, v, params_bf16, grads, stream);
}

size_t sum_of_squares_scratch_floats(int64_t n) { return static_cast<size_t>(sum_of_squares_blocks(n)); }

void sum_of_squares(float* out, const float* x, int64_t n, float* scratch, size_t scratch_floats, cudaStream_t stream) {
  sum_of_squares_checked(out, x, n, scratch, scratch_floats, stream);
}

void sum_of_squares(float* out, const bf16* x, int64_t n, float* scratch, size_t scratch_floats, cudaStream_t stream) {
  sum_of_squares_checked(out, x, n, scratch, scratch_floats, stream);
}

void adamw_update(const AdamWArgs& args, float* master, float* m, float* v, bf16* params_bf16, const float* grads,
                  cudaStream_t stream) {
  adamw_checked(args, master, m, v, params_bf16, grads, stream);
}

void adamw_update(const AdamWArgs& args, float* master, float* m, float* v, bf16* params_bf16, const bf16* grads,
                  cudaStream_t stream) {
  adamw_checked(args, master, m, v, params_bf16, grads, stream);
}

IFT_KERNELS_END
