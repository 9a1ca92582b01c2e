// LayerNorm and RMSNorm, forward (optionally with the residual add fused in front) and backward
// (declared in kernels/norm.h). One kernel serves both norms: RMSNorm is LayerNorm without the mean
// and the bias. Activation gradients are written (=); parameter gradients (fp32) accumulate (+=)
// through per-block partial sums and a fixed-order second stage, never float atomics.
//
// A row is read once: a row group (a warp, or a whole block for wide rows) holds it in registers,
// each thread kVals values of it in 16-byte packs (thread t of G holds packs t, t + G, ...: the
// group's loads are coalesced), and reduces with warp shuffles (a warp) or block_reduce (a block).
// The kernels these replaced (a block per row re-reading the row, shared-memory column sums) stay
// below as the *_baseline functions, which `ift bench kernels` times beside the new ones.
#include "kernels/common.cuh"
#include "kernels/elementwise.h"
#include "kernels/norm.h"

#include <algorithm>
#include <cmath>

// Unrolled loops over the register arrays keep them in registers under nvcc; g++ has no
// `#pragma unroll`.
#if IFT_EMULATED
#define IFT_NORM_UNROLL
#else
#define IFT_NORM_UNROLL _Pragma("unroll")
#endif

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
  float* partials;     // (kAcc, gridDim.x, C) each block's column sums of the dweight, then dbias, terms
  const T* dres;       // (N, C) gradient of the residual stream added to dx, or null; may alias dx
  const T* dout;       // (N, C) gradient of the normalised output
  const T* x;          // (N, C) forward input
  const T* weight;     // (C) scale
  const float* mean;   // (N) saved by forward (LayerNorm only)
  const float* rstd;   // (N) saved by forward
  NormArgs args;       // N, C, weight offset (kernels/args.h)
};

// ---- kernels ------------------------------------------------------------------------------------

// Rows of a block in the warp-per-row path: one per warp.
constexpr int kRowWarps = 4;

// The sum over a row group: a warp (butterfly shuffles, no barrier) or the whole block.
template <bool kWarpRow>
__device__ __forceinline__ float row_sum(float r_x) {
  if constexpr (kWarpRow)
    return warp_reduce_sum(r_x);
  else
    return block_reduce_sum(r_x);
}

// One row per row group: with kWarpRow, warp w of block b normalises row b * kRowWarps + w; else
// block b normalises row b. Thread t of the G threads of the group holds packs t + j G (j <
// kVals / K) of the row in r_v, so the row is read from memory once: the mean and the variance
// (two-pass, from registers: E[x^2] - E[x]^2 would cancel catastrophically for rows with a large
// mean) and the output all come from the registers.
template <int K, int kVals, bool kWarpRow, bool kRms, bool kResidual, class T>
static __global__ void norm_forward_kernel(const NormForwardParams<T> p) {
  constexpr int kPacks = kVals / K;
  static_assert(kVals % K == 0, "a thread holds whole packs");
  const int C = p.args.C, packs = C / K;
  const int G = kWarpRow ? 32 : blockDim.x, t = kWarpRow ? threadIdx.x % 32 : threadIdx.x;
  const int64_t row = kWarpRow ? int64_t(blockIdx.x) * kRowWarps + threadIdx.x / 32 : int64_t(blockIdx.x);
  if (row >= p.args.N) return;  // whole warps of the last block (warp path only: no barrier follows there)
  const T* g_x = p.x + row * C;

  float r_v[kPacks][K];
  float r_sum = 0.0f;
  IFT_NORM_UNROLL
  for (int j = 0; j < kPacks; ++j) {
    const int i = t + j * G;
    if (i < packs) {
      load_floats(r_v[j], g_x + i * K);
      if constexpr (kResidual) {  // residual_out may alias x: each value is read before it is written
        float r_r[K];
        load_floats(r_r, p.residual + row * C + i * K);
        for (int k = 0; k < K; ++k) r_v[j][k] = round_to<T>(r_v[j][k] + r_r[k]);
        store_floats(p.residual_out + row * C + i * K, r_v[j]);
      }
      for (int k = 0; k < K; ++k) r_sum += kRms ? r_v[j][k] * r_v[j][k] : r_v[j][k];
    } else {
      for (int k = 0; k < K; ++k) r_v[j][k] = 0.0f;
    }
  }

  float mean = 0.0f, variance;
  if constexpr (kRms) {
    variance = row_sum<kWarpRow>(r_sum) / C;  // the mean square
  } else {
    mean = row_sum<kWarpRow>(r_sum) / C;
    float r_var = 0.0f;
    IFT_NORM_UNROLL
    for (int j = 0; j < kPacks; ++j)
      if (t + j * G < packs)
        for (int k = 0; k < K; ++k) r_var += (r_v[j][k] - mean) * (r_v[j][k] - mean);
    variance = row_sum<kWarpRow>(r_var) / C;
  }
  // IEEE division and square root, once per row: rsqrtf would save nothing measurable and make
  // the GPU's rstd differ from the emulator's.
  const float rstd = 1.0f / sqrtf(variance + p.args.eps);

  T* g_out = p.out + row * C;
  IFT_NORM_UNROLL
  for (int j = 0; j < kPacks; ++j) {
    const int i = t + j * G;
    if (i >= packs) continue;
    float r_w[K], r_b[K], r_o[K];
    load_floats(r_w, p.weight + i * K);
    if (p.bias) {
      load_floats(r_b, p.bias + i * K);
    } else {
      for (int k = 0; k < K; ++k) r_b[k] = 0.0f;
    }
    for (int k = 0; k < K; ++k) r_o[k] = (r_v[j][k] - mean) * rstd * (r_w[k] + p.args.weight_offset) + r_b[k];
    store_floats(g_out + i * K, r_o);
  }
  if (t == 0) {
    if constexpr (!kRms) p.mean[row] = mean;
    p.rstd[row] = rstd;
  }
}

// Row groups (as in the forward) loop over rows group, group + groups, ... in order, holding each
// row's xhat and dy = dout * (w + offset) in registers between the row reductions and the dx
// write, and their own dweight / dbias column sums in registers across rows. At the end the groups
// of a block add their sums into the block's row of partials one after the other (group 0 writes,
// group 1 adds, ..., a barrier between turns): the same association every run, whatever the
// schedule. The grid is a function of N alone (backward_blocks), so the order is too.
template <int K, int kVals, bool kWarpRow, bool kRms, class T>
static __global__ void norm_backward_kernel(const NormBackwardParams<T> p) {
  constexpr int kPacks = kVals / K, kAcc = kRms ? 1 : 2;
  static_assert(kVals % K == 0, "a thread holds whole packs");
  const int C = p.args.C, packs = C / K;
  const int G = kWarpRow ? 32 : blockDim.x, t = kWarpRow ? threadIdx.x % 32 : threadIdx.x;
  const int groups_per_block = kWarpRow ? blockDim.x / 32 : 1, group = kWarpRow ? threadIdx.x / 32 : 0;
  const int64_t groups = int64_t(gridDim.x) * groups_per_block;
  const float off = p.args.weight_offset;

  float r_acc[kAcc][kPacks][K];  // dweight sums, then dbias sums
  IFT_NORM_UNROLL
  for (int a = 0; a < kAcc; ++a) {
    IFT_NORM_UNROLL
    for (int j = 0; j < kPacks; ++j)
      for (int k = 0; k < K; ++k) r_acc[a][j][k] = 0.0f;
  }

  for (int64_t row = int64_t(blockIdx.x) * groups_per_block + group; row < p.args.N; row += groups) {
    const float mean = kRms ? 0.0f : p.mean[row], rstd = p.rstd[row];
    const T* g_dout = p.dout + row * C;
    const T* g_x = p.x + row * C;
    float r_xhat[kPacks][K], r_dy[kPacks][K];
    float r_sum_dy = 0.0f, r_sum_dy_xhat = 0.0f;
    IFT_NORM_UNROLL
    for (int j = 0; j < kPacks; ++j) {
      const int i = t + j * G;
      if (i >= packs) continue;
      float r_d[K], r_w[K];
      load_floats(r_d, g_dout + i * K);
      load_floats(r_xhat[j], g_x + i * K);
      load_floats(r_w, p.weight + i * K);
      for (int k = 0; k < K; ++k) {
        const float xhat = (r_xhat[j][k] - mean) * rstd, dy = r_d[k] * (r_w[k] + off);
        r_xhat[j][k] = xhat, r_dy[j][k] = dy;
        r_sum_dy += dy;
        r_sum_dy_xhat += dy * xhat;
        r_acc[0][j][k] += r_d[k] * xhat;
        if constexpr (!kRms) r_acc[kAcc - 1][j][k] += r_d[k];
      }
    }
    const float mean_dy = kRms ? 0.0f : row_sum<kWarpRow>(r_sum_dy) / C;
    const float mean_dy_xhat = row_sum<kWarpRow>(r_sum_dy_xhat) / C;

    T* g_dx = p.dx + row * C;
    const T* g_dres = p.dres ? p.dres + row * C : nullptr;
    IFT_NORM_UNROLL
    for (int j = 0; j < kPacks; ++j) {
      const int i = t + j * G;
      if (i >= packs) continue;
      float r_g[K];
      if (g_dres) {
        load_floats(r_g, g_dres + i * K);  // read before dx is written: dres may alias dx
      } else {
        for (int k = 0; k < K; ++k) r_g[k] = 0.0f;
      }
      for (int k = 0; k < K; ++k) r_g[k] += (r_dy[j][k] - mean_dy - r_xhat[j][k] * mean_dy_xhat) * rstd;
      store_floats(g_dx + i * K, r_g);
    }
  }

  for (int turn = 0; turn < groups_per_block; ++turn) {
    if (turn == group) {
      IFT_NORM_UNROLL
      for (int a = 0; a < kAcc; ++a) {
        float* g_part = p.partials + (int64_t(a) * gridDim.x + blockIdx.x) * C;
        IFT_NORM_UNROLL
        for (int j = 0; j < kPacks; ++j) {
          const int i = t + j * G;
          if (i >= packs) continue;
          float r_s[K];
          if (turn == 0) {
            for (int k = 0; k < K; ++k) r_s[k] = r_acc[a][j][k];
          } else {
            load_floats(r_s, g_part + i * K);
            for (int k = 0; k < K; ++k) r_s[k] += r_acc[a][j][k];
          }
          store_floats(g_part + i * K, r_s);
        }
      }
    }
    if constexpr (kWarpRow) __syncthreads();  // the next group reads what this one wrote
  }
}

// ---- the replaced kernels, kept as the benchmark's baseline (*_baseline in kernels/norm.h) -------

// One block per row; each thread strides over packs of K channels. Two-pass statistics (mean, then
// the sum of squared deviations, from re-read rows that sit in L1/L2) rather than E[x^2] - E[x]^2,
// which cancels catastrophically for rows with a large mean.
template <int K, bool kRms, bool kResidual, class T>
static __global__ void norm_forward_baseline_kernel(const NormForwardParams<T> p) {
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
static __global__ void norm_backward_baseline_kernel(const NormBackwardParams<T> p) {
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

constexpr int kMaxThreads = 256;  // the baseline's block size limit
// Blocks of the backward pass (each loops over its rows). A function of N only, so that the scratch
// size and the summation order do not depend on the device.
constexpr int kBackwardBlocks = 256;
// The widest row a warp holds (the forward: one value per channel in registers, 256 a lane at
// C = 8192); wider rows take a block each.
constexpr int kForwardWarpMaxC = 8192;
// The backward holds about four values per channel it owns (xhat, dy and the dweight and dbias
// sums), so a warp per row stops at C = 1024 (128 values a lane); wider rows take a block each,
// sized so that each thread again holds 32 (up to C = 32768) or 64 (up to 65536) channels.
constexpr int kBackwardWarpMaxC = 1024;
constexpr int kRowBlockMaxThreads = 1024;
constexpr int kMaxC = kRowBlockMaxThreads * 64;  // the widest row either pass takes

// One thread per pack up to kMaxThreads, in whole warps (the block reductions need them).
int threads_for(int packs) { return std::clamp((packs + 31) / 32 * 32, 32, kMaxThreads); }

int baseline_backward_blocks(int N) { return std::min(N, kBackwardBlocks); }

// Blocks of the new backward: kRowWarps rows at a time in the warp path, one in the block path.
int backward_blocks(int N, int C) {
  return C <= kBackwardWarpMaxC ? std::min((N + kRowWarps - 1) / kRowWarps, kBackwardBlocks)
                                : std::min(N, kBackwardBlocks);
}

void check_shape(const char* op, int N, int C) {
  IFT_CHECK(N > 0 && C > 0, op, ": empty shape N = ", N, ", C = ", C);
}

void check_width(const char* op, int C) {
  IFT_CHECK(C <= kMaxC, op, ": C = ", C, " is too large: a row is held in the registers of one block, at most ",
            kMaxC, " channels");
}

void check_eps(const char* op, float eps) {
  IFT_CHECK(std::isfinite(eps) && eps >= 0.0f, op, ": eps = ", eps, " must be finite and non-negative");
}

// A block per row of `packs` packs of K, kVals values a thread: whole warps.
template <int K, int kVals>
int block_row_threads(int packs) {
  constexpr int per = kVals / K;
  return std::clamp(((packs + per - 1) / per + 31) / 32 * 32, 32, kRowBlockMaxThreads);
}

template <int K, bool kRms, bool kResidual, class T>
void launch_norm_forward_packed(const NormForwardParams<T>& p, cudaStream_t stream) {
  const int N = p.args.N, C = p.args.C, packs = C / K;
  if (C <= kForwardWarpMaxC) {
    const int per_lane = (packs + 31) / 32 * K;  // values a lane holds
    const unsigned blocks = static_cast<unsigned>((N + kRowWarps - 1) / kRowWarps);
    const int threads = 32 * kRowWarps;
    if (per_lane <= 32)
      launch_kernel(norm_forward_kernel<K, 32, true, kRms, kResidual, T>, blocks, threads, 0, stream, p);
    else if (per_lane <= 128)
      launch_kernel(norm_forward_kernel<K, 128, true, kRms, kResidual, T>, blocks, threads, 0, stream, p);
    else
      launch_kernel(norm_forward_kernel<K, 256, true, kRms, kResidual, T>, blocks, threads, 0, stream, p);
  } else {
    launch_kernel(norm_forward_kernel<K, 64, false, kRms, kResidual, T>, N, block_row_threads<K, 64>(packs), 0, stream,
                  p);
  }
}

template <bool kRms, bool kResidual, class T>
void launch_norm_forward(const NormForwardParams<T>& p, bool baseline, cudaStream_t stream) {
  constexpr int K = Pack128<T>::kSize;
  const bool vec = p.args.C % K == 0 && aligned16(p.out) && aligned16(p.x) && aligned16(p.weight) &&
                   (!p.bias || aligned16(p.bias)) && (!kResidual || (aligned16(p.residual) && aligned16(p.residual_out)));
  if (baseline) {
    if (vec)
      launch_kernel(norm_forward_baseline_kernel<K, kRms, kResidual, T>, p.args.N, threads_for(p.args.C / K), 0, stream, p);
    else
      launch_kernel(norm_forward_baseline_kernel<1, kRms, kResidual, T>, p.args.N, threads_for(p.args.C), 0, stream, p);
    return;
  }
  if (vec)
    launch_norm_forward_packed<K, kRms, kResidual>(p, stream);
  else
    launch_norm_forward_packed<1, kRms, kResidual>(p, stream);
}

template <int K, bool kRms, class T>
void launch_norm_backward_packed(const NormBackwardParams<T>& p, int blocks, cudaStream_t stream) {
  const int C = p.args.C, packs = C / K;
  if (C <= kBackwardWarpMaxC)
    launch_kernel(norm_backward_kernel<K, 32, true, kRms, T>, blocks, 32 * kRowWarps, 0, stream, p);
  else if (C <= kRowBlockMaxThreads * 32)
    launch_kernel(norm_backward_kernel<K, 32, false, kRms, T>, blocks, block_row_threads<K, 32>(packs), 0, stream, p);
  else
    launch_kernel(norm_backward_kernel<K, 64, false, kRms, T>, blocks, block_row_threads<K, 64>(packs), 0, stream, p);
}

// The baseline: blocks striding over rows, the column sums in shared memory.
template <int K, bool kRms, class T>
void launch_norm_backward_baseline(const char* op, const NormBackwardParams<T>& p, int blocks, cudaStream_t stream) {
  constexpr int kAcc = kRms ? 1 : 2;
  const size_t smem = sizeof(float) * kAcc * static_cast<size_t>(p.args.C);
  // The column sums (dynamic) plus block_reduce's partials (static): opted in above 48 KiB (C > 6128
  // for LayerNorm, 12256 for RMSNorm), an error past the device's maximum (sm_90: C > 29040, 58080).
  const size_t most = max_shared_bytes_optin();
  IFT_CHECK(smem + kBlockReduceSharedBytes <= most, op, ": C = ", p.args.C, " is too large: the block's column sums and reductions need ",
            smem + kBlockReduceSharedBytes, " bytes of shared memory, more than the ", most, " a block can have");
  reserve_shared_memory(op, norm_backward_baseline_kernel<K, kRms, T>, smem, kBlockReduceSharedBytes);
  launch_kernel(norm_backward_baseline_kernel<K, kRms, T>, blocks, threads_for(p.args.C / K), smem, stream, p);
}

template <bool kRms, class T>
void launch_norm_backward(const char* op, const NormBackwardParams<T>& p, float* dweight, float* dbias,
                          size_t scratch_floats, bool baseline, cudaStream_t stream) {
  constexpr int kAcc = kRms ? 1 : 2;
  const int blocks = baseline ? baseline_backward_blocks(p.args.N) : backward_blocks(p.args.N, p.args.C);
  // The advertised size (*_backward_scratch_floats, the baseline's grid), whichever kernel runs.
  const size_t need = static_cast<size_t>(kAcc) * baseline_backward_blocks(p.args.N) * p.args.C;
  IFT_CHECK(scratch_floats >= need, op, ": scratch holds ", scratch_floats, " floats, needs ", need, " (",
            op, "_scratch_floats)");
  constexpr int K = Pack128<T>::kSize;
  const bool vec = p.args.C % K == 0 && aligned16(p.dx) && (!p.dres || aligned16(p.dres)) && aligned16(p.dout) &&
                   aligned16(p.x) && aligned16(p.weight) && aligned16(p.partials);
  if (baseline) {
    if (vec)
      launch_norm_backward_baseline<K, kRms>(op, p, blocks, stream);
    else
      launch_norm_backward_baseline<1, kRms>(op, p, blocks, stream);
  } else {
    if (vec)
      launch_norm_backward_packed<K, kRms>(p, blocks, stream);
    else
      launch_norm_backward_packed<1, kRms>(p, blocks, stream);
  }
  column_sums_accumulate(dweight, p.partials, blocks, p.args.C, stream);
  if (dbias) column_sums_accumulate(dbias, p.partials + static_cast<size_t>(blocks) * p.args.C, blocks, p.args.C, stream);
}

}  // namespace

template <class T>
static void layernorm_forward_impl(T* out, float* mean, float* rstd, const T* x, const T* weight, const T* bias,
                                   const NormArgs& a, bool baseline, cudaStream_t stream) {
  check_shape("layernorm_forward", a.N, a.C);
  check_eps("layernorm_forward", a.eps);
  if (!baseline) check_width("layernorm_forward", a.C);
  IFT_CHECK(out && mean && rstd && x && weight, "layernorm_forward: out, mean, rstd, x and weight must not be null");
  launch_norm_forward<false, false>(NormForwardParams<T>{out, nullptr, mean, rstd, x, nullptr, weight, bias, a},
                                    baseline, stream);
}

template <class T>
static void layernorm_residual_forward_impl(T* residual_out, T* out, float* mean, float* rstd, const T* x, const T* residual,
                                const T* weight, const T* bias, const NormArgs& a, cudaStream_t stream) {
  check_shape("layernorm_residual_forward", a.N, a.C);
  check_eps("layernorm_residual_forward", a.eps);
  check_width("layernorm_residual_forward", a.C);
  IFT_CHECK(residual_out && out && mean && rstd && x && residual && weight,
            "layernorm_residual_forward: residual_out, out, mean, rstd, x, residual and weight must not be null");
  launch_norm_forward<false, true>(
      NormForwardParams<T>{out, residual_out, mean, rstd, x, residual, weight, bias, a}, false, stream);
}

template <class T>
static void layernorm_backward_impl(T* dx, float* dweight, float* dbias, const T* dres, const T* dout, const T* x,
                        const T* weight, const float* mean, const float* rstd, const NormArgs& a, float* scratch, size_t scratch_floats,
                        bool baseline, cudaStream_t stream) {
  check_shape("layernorm_backward", a.N, a.C);
  if (!baseline) check_width("layernorm_backward", a.C);
  IFT_CHECK(dx && dweight && dout && x && weight && mean && rstd && scratch,
            "layernorm_backward: dx, dweight, dout, x, weight, mean, rstd and scratch must not be null");
  launch_norm_backward<false>("layernorm_backward",
                              NormBackwardParams<T>{dx, scratch, dres, dout, x, weight, mean, rstd, a}, dweight,
                              dbias, scratch_floats, baseline, stream);
}

// Enough for the new kernels and the baseline (whose grid is never smaller).
size_t layernorm_backward_scratch_floats(int N, int C) {
  check_shape("layernorm_backward", N, C);
  return 2 * static_cast<size_t>(baseline_backward_blocks(N)) * C;
}

template <class T>
static void rmsnorm_forward_impl(T* out, float* rstd, const T* x, const T* weight, const NormArgs& a, bool baseline,
                                 cudaStream_t stream) {
  check_shape("rmsnorm_forward", a.N, a.C);
  check_eps("rmsnorm_forward", a.eps);
  if (!baseline) check_width("rmsnorm_forward", a.C);
  IFT_CHECK(out && rstd && x && weight, "rmsnorm_forward: out, rstd, x and weight must not be null");
  launch_norm_forward<true, false>(NormForwardParams<T>{out, nullptr, nullptr, rstd, x, nullptr, weight, nullptr, a},
                                   baseline, stream);
}

template <class T>
static void rmsnorm_residual_forward_impl(T* residual_out, T* out, float* rstd, const T* x, const T* residual, const T* weight,
                              const NormArgs& a, cudaStream_t stream) {
  check_shape("rmsnorm_residual_forward", a.N, a.C);
  check_eps("rmsnorm_residual_forward", a.eps);
  check_width("rmsnorm_residual_forward", a.C);
  IFT_CHECK(residual_out && out && rstd && x && residual && weight,
            "rmsnorm_residual_forward: residual_out, out, rstd, x, residual and weight must not be null");
  launch_norm_forward<true, true>(
      NormForwardParams<T>{out, residual_out, nullptr, rstd, x, residual, weight, nullptr, a}, false, stream);
}

template <class T>
static void rmsnorm_backward_impl(T* dx, float* dweight, const T* dres, const T* dout, const T* x, const T* weight,
                      const float* rstd, const NormArgs& a, float* scratch, size_t scratch_floats, bool baseline,
                      cudaStream_t stream) {
  check_shape("rmsnorm_backward", a.N, a.C);
  if (!baseline) check_width("rmsnorm_backward", a.C);
  IFT_CHECK(dx && dweight && dout && x && weight && rstd && scratch,
            "rmsnorm_backward: dx, dweight, dout, x, weight, rstd and scratch must not be null");
  launch_norm_backward<true>("rmsnorm_backward",
                             NormBackwardParams<T>{dx, scratch, dres, dout, x, weight, nullptr, rstd, a}, dweight,
                             nullptr, scratch_floats, baseline, stream);
}

size_t rmsnorm_backward_scratch_floats(int N, int C) {
  check_shape("rmsnorm_backward", N, C);
  return static_cast<size_t>(baseline_backward_blocks(N)) * C;
}

// The public overloads (kernels/norm.h), one per storage type, and the baselines.
#define IFT_DEFINE_NORM(T)                                                                                            \
  void layernorm_forward(T* out, float* mean, float* rstd, const T* x, const T* weight, const T* bias,                \
                         const NormArgs& a, cudaStream_t stream) {                                                    \
    layernorm_forward_impl(out, mean, rstd, x, weight, bias, a, false, stream);                                       \
  }                                                                                                                   \
  void layernorm_residual_forward(T* residual_out, T* out, float* mean, float* rstd, const T* x, const T* residual,   \
                                  const T* weight, const T* bias, const NormArgs& a, cudaStream_t stream) {           \
    layernorm_residual_forward_impl(residual_out, out, mean, rstd, x, residual, weight, bias, a, stream);             \
  }                                                                                                                   \
  void layernorm_backward(T* dx, float* dweight, float* dbias, const T* dres, const T* dout, const T* x,              \
                          const T* weight, const float* mean, const float* rstd, const NormArgs& a, float* scratch,   \
                          size_t scratch_floats, cudaStream_t stream) {                                               \
    layernorm_backward_impl(dx, dweight, dbias, dres, dout, x, weight, mean, rstd, a, scratch, scratch_floats, false, \
                            stream);                                                                                  \
  }                                                                                                                   \
  void rmsnorm_forward(T* out, float* rstd, const T* x, const T* weight, const NormArgs& a, cudaStream_t stream) {    \
    rmsnorm_forward_impl(out, rstd, x, weight, a, false, stream);                                                     \
  }                                                                                                                   \
  void rmsnorm_residual_forward(T* residual_out, T* out, float* rstd, const T* x, const T* residual, const T* weight, \
                                const NormArgs& a, cudaStream_t stream) {                                             \
    rmsnorm_residual_forward_impl(residual_out, out, rstd, x, residual, weight, a, stream);                           \
  }                                                                                                                   \
  void rmsnorm_backward(T* dx, float* dweight, const T* dres, const T* dout, const T* x, const T* weight,             \
                        const float* rstd, const NormArgs& a, float* scratch, size_t scratch_floats,                  \
                        cudaStream_t stream) {                                                                        \
    rmsnorm_backward_impl(dx, dweight, dres, dout, x, weight, rstd, a, scratch, scratch_floats, false, stream);       \
  }                                                                                                                   \
  void layernorm_forward_baseline(T* out, float* mean, float* rstd, const T* x, const T* weight, const T* bias,       \
                                  const NormArgs& a, cudaStream_t stream) {                                           \
    layernorm_forward_impl(out, mean, rstd, x, weight, bias, a, true, stream);                                        \
  }                                                                                                                   \
  void layernorm_backward_baseline(T* dx, float* dweight, float* dbias, const T* dres, const T* dout, const T* x,     \
                                   const T* weight, const float* mean, const float* rstd, const NormArgs& a,          \
                                   float* scratch, size_t scratch_floats, cudaStream_t stream) {                      \
    layernorm_backward_impl(dx, dweight, dbias, dres, dout, x, weight, mean, rstd, a, scratch, scratch_floats, true,  \
                            stream);                                                                                  \
  }                                                                                                                   \
  void rmsnorm_forward_baseline(T* out, float* rstd, const T* x, const T* weight, const NormArgs& a,                  \
                                cudaStream_t stream) {                                                                \
    rmsnorm_forward_impl(out, rstd, x, weight, a, true, stream);                                                      \
  }                                                                                                                   \
  void rmsnorm_backward_baseline(T* dx, float* dweight, const T* dres, const T* dout, const T* x, const T* weight,    \
                                 const float* rstd, const NormArgs& a, float* scratch, size_t scratch_floats,         \
                                 cudaStream_t stream) {                                                               \
    rmsnorm_backward_impl(dx, dweight, dres, dout, x, weight, rstd, a, scratch, scratch_floats, true, stream);        \
  }
IFT_DEFINE_NORM(float)
IFT_DEFINE_NORM(bf16)
#undef IFT_DEFINE_NORM

IFT_KERNELS_END
