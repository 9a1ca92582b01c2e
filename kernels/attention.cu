// Causal attention over packed samples, flash-style: the scores of a (query tile, key tile) pair live
// only in shared memory, and the softmax is computed online (running max and sum per query row).
// All outputs are written (=): out and lse by the forward, dq, dk, dv by the backward. SIMT (no tensor
// cores); storage float or bf16, staged in shared memory as fp32, all arithmetic fp32. The bf16
// entry points hand shapes the tensor-core kernels take to kernels/attention_tc.cu instead.
#include "kernels/attention.h"

#include <cmath>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/attention_segments.cuh"
#include "kernels/attention_tc.h"

// Unrolled loops over the register arrays keep them in registers under nvcc; g++ has no
// `#pragma unroll` (and runs the emulated build with -O3 anyway).
#if IFT_EMULATED
#define IFT_ATTN_UNROLL
#else
#define IFT_ATTN_UNROLL _Pragma("unroll")
#endif

IFT_KERNELS_BEGIN

constexpr int kAttnThreads = 128;                     // 4 warps in every attention kernel
constexpr int kAttnWarps = kAttnThreads / 32;
// Forward tiles: 32 query rows x 32 keys. Shared (fp32): Q, K-then-V (both D+1 wide) and the scores:
// 37,248 bytes at D = 128, under the 48 KiB a launch gets without opting in; 70,016 at D = 256,
// which opts in (kernels/launch.cuh).
constexpr int kFwdRows = 32;
constexpr int kFwdKeys = 32;
// Backward tiles: 16 query rows x 16 keys. Shared (fp32): Q, dO, K, V and P, dS: 35,200 bytes at D = 128,
// 67,968 at D = 256 (opted in).
constexpr int kBwdRows = 16;
constexpr int kBwdKeys = 16;

// The head-dim classes: register arrays of kDSlices values per lane (d = lane + 32*c) hold up to
// kMaxD = 32 * kDSlices head dims. Every kernel with per-lane head-dim registers is instantiated per
// class, so D <= 128 keeps the registers (and occupancy) it had before D = 256 was added.
template <int kMaxHeadDim>
struct AttnHeadDimTraits {
  static constexpr int kMaxD = kMaxHeadDim;
  static constexpr int kDSlices = kMaxHeadDim / 32;
  static_assert(kMaxHeadDim % 32 == 0, "head dims are split over the 32 lanes of a warp");
};
using AttnSmallHeads = AttnHeadDimTraits<128>;
using AttnLargeHeads = AttnHeadDimTraits<kAttentionMaxHeadDim>;
static_assert(AttnLargeHeads::kMaxD == 256, "the large class covers head dims up to 256");
static_assert(kFwdKeys == 32, "scores: one key column per lane");
static_assert(kFwdRows * 4 == kAttnThreads, "online softmax: 4 threads per query row");
static_assert(kFwdRows % kAttnWarps == 0 && kBwdRows % kAttnWarps == 0 && kBwdKeys % kAttnWarps == 0,
              "row-per-warp layouts");
static_assert(kBwdRows * kBwdKeys == 2 * kAttnThreads, "backward scores: two per thread");

// ---- helpers ------------------------------------------------------------------------------------

// Rows [row0, row0 + rows) of one head (D values from g_src + n*ld) into s_dst (rows, D + 1) as fp32;
// rows at or past row_end are zeros. The +1 column keeps lanes that read one row each on different
// banks. Called by the whole block.
template <class T>
__device__ __forceinline__ void load_head_tile(float* s_dst, const T* __restrict__ g_src, int64_t ld, int row0,
                                               int rows, int row_end, int D) {
  for (int e = threadIdx.x; e < rows * D; e += blockDim.x) {
    const int r = e / D, d = e % D, n = row0 + r;
    s_dst[r * (D + 1) + d] = n < row_end ? to_float(g_src[n * ld + d]) : 0.0f;
  }
}

__device__ __forceinline__ float dot_shared(const float* s_x, const float* s_y, int D) {
  float r_sum = 0.0f;
  for (int d = 0; d < D; ++d) r_sum += s_x[d] * s_y[d];
  return r_sum;
}

// ---- forward ------------------------------------------------------------------------------------

// One block per (tile of kFwdRows query rows, query head). The block walks the keys its rows can
// see, [segment start of its first row, its last row], in tiles of kFwdKeys; per key tile:
//   1. K tile to shared;  2. scores S = scale * Q K^T, masked (causal, same segment);
//   3. online softmax, 4 threads per row: new running max m, P = exp(S - m), rescale factor alpha,
//      running sum l; meanwhile the V tile replaces K;  4. acc = alpha * acc + P V (registers).
// Rows of other segments in the same tile only cost masked work. At the end out = acc / l and
// lse = m + log(l).
template <class T, class Heads>
static __global__ void __launch_bounds__(kAttnThreads)
    attention_forward_kernel(AttentionArgs a, const T* __restrict__ g_qkv,  // (N, ld)
                             T* __restrict__ g_out,                           // (N, H*D)
                             float* __restrict__ g_lse) {           // (N, H)
  IFT_SHARED(int[kFwdRows], s_seg);      // first key row of each query row's segment (N: none)
  IFT_SHARED(float[kFwdRows], s_alpha);  // rescale of each row's accumulator for this key tile
  IFT_SHARED(float[kFwdRows], s_l);      // final softmax denominators
  IFT_DYNAMIC_SHARED(float, s_buf);
  constexpr int kDSlices = Heads::kDSlices;
  const int D = a.D, ldt = D + 1, lds = kFwdKeys + 1;
  float* const s_q = s_buf;                  // (kFwdRows, D + 1)
  float* const s_kv = s_q + kFwdRows * ldt;  // (kFwdKeys, D + 1): K, then V of the key tile
  float* const s_s = s_kv + kFwdKeys * ldt;  // (kFwdRows, kFwdKeys + 1): scores, then P

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int h = blockIdx.y, kvh = h / (a.H / a.KVH);
  const int q0 = blockIdx.x * kFwdRows, q_end = min_int(q0 + kFwdRows, a.N);
  const int64_t ld = a.ld;
  const T* g_q = g_qkv + h * D;
  const T* g_k = g_qkv + (a.H + kvh) * D;
  const T* g_v = g_qkv + (a.H + a.KVH + kvh) * D;

  load_head_tile(s_q, g_q, ld, q0, kFwdRows, q_end, D);
  for (int r = tid; r < kFwdRows; r += blockDim.x) s_seg[r] = q0 + r < a.N ? segment_begin(a, q0 + r) : a.N;
  __syncthreads();

  // Softmax role: row sm_row, columns sm_part + 4*k. m and l are kept identically by the row's 4 lanes.
  const int sm_row = tid / 4, sm_part = tid % 4;
  float r_m = -INFINITY, r_l = 0.0f;
  // Accumulator role: rows warp + kAttnWarps*k, dims lane + 32*c.
  constexpr int kRowsPerWarp = kFwdRows / kAttnWarps;
  float r_acc[kRowsPerWarp][kDSlices];
IFT_ATTN_UNROLL
  for (int k = 0; k < kRowsPerWarp; ++k)
IFT_ATTN_UNROLL
    for (int c = 0; c < kDSlices; ++c) r_acc[k][c] = 0.0f;

  const int k_begin = s_seg[0], k_end = q_end;
  for (int k0 = k_begin; k0 < k_end; k0 += kFwdKeys) {
    load_head_tile(s_kv, g_k, ld, k0, kFwdKeys, k_end, D);
    __syncthreads();

    {  // scores: key column `lane`, rows warp + kAttnWarps*k
      float r_s[kRowsPerWarp];
IFT_ATTN_UNROLL
      for (int k = 0; k < kRowsPerWarp; ++k) r_s[k] = 0.0f;
      for (int d = 0; d < D; ++d) {
        const float r_kd = s_kv[lane * ldt + d];
IFT_ATTN_UNROLL
        for (int k = 0; k < kRowsPerWarp; ++k) r_s[k] += s_q[(warp + kAttnWarps * k) * ldt + d] * r_kd;
      }
      const int j = k0 + lane;
IFT_ATTN_UNROLL
      for (int k = 0; k < kRowsPerWarp; ++k) {
        const int r = warp + kAttnWarps * k, i = q0 + r;
        const bool visible = i < a.N && j <= i && j >= s_seg[r];
        s_s[r * lds + lane] = visible ? r_s[k] * a.scale : -INFINITY;
      }
    }
    __syncthreads();

    {  // online softmax of row sm_row
      float* s_row = s_s + sm_row * lds;
      float r_max = -INFINITY;
      for (int c = sm_part; c < kFwdKeys; c += 4) r_max = fmaxf(r_max, s_row[c]);
      r_max = fmaxf(r_max, __shfl_xor_sync(kFullMask, r_max, 1));
      r_max = fmaxf(r_max, __shfl_xor_sync(kFullMask, r_max, 2));
      const float m_new = fmaxf(r_m, r_max);
      // A row that has seen no visible key yet keeps m = -inf; exponentiate against 0 then, so that
      // exp(-inf - -inf) never makes a NaN (every P of it is 0 and alpha too).
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = expf(r_m - m_use);
      float r_sum = 0.0f;
      for (int c = sm_part; c < kFwdKeys; c += 4) {
        const float p = expf(s_row[c] - m_use);
        s_row[c] = p;
        r_sum += p;
      }
      r_sum += __shfl_xor_sync(kFullMask, r_sum, 1);
      r_sum += __shfl_xor_sync(kFullMask, r_sum, 2);
      r_l = r_l * alpha + r_sum;
      r_m = m_new;
      if (sm_part == 0) s_alpha[sm_row] = alpha;
    }
    load_head_tile(s_kv, g_v, ld, k0, kFwdKeys, k_end, D);  // K is no longer read after the barrier above
    __syncthreads();

    // acc = alpha * acc + P V
IFT_ATTN_UNROLL
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const float alpha = s_alpha[warp + kAttnWarps * k];
IFT_ATTN_UNROLL
      for (int c = 0; c < kDSlices; ++c) r_acc[k][c] *= alpha;
    }
    for (int cc = 0; cc < kFwdKeys; ++cc) {
      float r_v[kDSlices];
IFT_ATTN_UNROLL
      for (int c = 0; c < kDSlices; ++c) r_v[c] = lane + 32 * c < D ? s_kv[cc * ldt + lane + 32 * c] : 0.0f;
IFT_ATTN_UNROLL
      for (int k = 0; k < kRowsPerWarp; ++k) {
        const float p = s_s[(warp + kAttnWarps * k) * lds + cc];
IFT_ATTN_UNROLL
        for (int c = 0; c < kDSlices; ++c) r_acc[k][c] += p * r_v[c];
      }
    }
    __syncthreads();  // s_kv and s_s are refilled by the next key tile
  }

  if (sm_part == 0) {
    s_l[sm_row] = r_l;
    const int i = q0 + sm_row;
    if (i < a.N) g_lse[static_cast<int64_t>(i) * a.H + h] = r_m + logf(r_l);
  }
  __syncthreads();
IFT_ATTN_UNROLL
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int r = warp + kAttnWarps * k, i = q0 + r;
    if (i >= a.N) continue;
    const float inv_l = 1.0f / s_l[r];
    T* g_o = g_out + (static_cast<int64_t>(i) * a.H + h) * D;
IFT_ATTN_UNROLL
    for (int c = 0; c < kDSlices; ++c)
      if (lane + 32 * c < D) g_o[lane + 32 * c] = from_float<T>(r_acc[k][c] * inv_l);
  }
}

// s_q, s_kv, s_s of the forward kernel.
constexpr size_t fwd_shared_bytes(int D) {
  return sizeof(float) * ((kFwdRows + kFwdKeys) * static_cast<size_t>(D + 1) + kFwdRows * (kFwdKeys + 1));
}
// The static shared memory of the forward kernel: s_seg, s_alpha, s_l.
constexpr size_t kFwdStaticBytes = kFwdRows * (sizeof(int) + 2 * sizeof(float));
static_assert(fwd_shared_bytes(AttnSmallHeads::kMaxD) + kFwdStaticBytes <= kDefaultSharedBytes,
              "forward tiles of small heads fit the shared memory a block gets without opting in");

// ---- backward -----------------------------------------------------------------------------------
// Three kernels, all deterministic (every output element is summed by one thread in a fixed order):
//   attention_delta_kernel   delta = rowsum(dO * O), one warp per (row, head);
//   attention_dkdv_kernel    one block per (key tile, kv head): dK, dV of its keys, looping over the
//                            query tiles that can see them, for every query head of the group;
//   attention_dq_kernel      one block per (query tile, query head): dQ, looping over key tiles
//                            like the forward. P is recomputed from lse in both (a second time in
//                            the dq pass: the price of no atomics).

template <class T>
static __global__ void __launch_bounds__(kAttnThreads)
    attention_delta_kernel(const T* __restrict__ g_dout,  // (N, H*D)
                           const T* __restrict__ g_out,   // (N, H*D)
                           float* __restrict__ g_delta,   // (N, H)
                           int64_t rows, int D) {         // rows = N*H
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kAttnWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps leave together; no barrier follows
  float r_sum = 0.0f;
  for (int d = lane; d < D; d += 32) r_sum += to_float(g_dout[row * D + d]) * to_float(g_out[row * D + d]);
  r_sum = warp_reduce_sum(r_sum);
  if (lane == 0) g_delta[row] = r_sum;
}

// The shared-memory tiles of both backward kernels (fp32): s_q, s_do (kBwdRows, D + 1) for query
// rows q0.., s_k, s_v (kBwdKeys, D + 1) for key rows k0.., s_p, s_ds (kBwdRows, kBwdKeys + 1).
struct BwdTiles {
  float* s_q;
  float* s_do;
  float* s_k;
  float* s_v;
  float* s_p;
  float* s_ds;
};

__device__ __forceinline__ BwdTiles bwd_tiles(float* s_buf, int D) {
  const int ldt = D + 1;
  BwdTiles t;
  t.s_q = s_buf;
  t.s_do = t.s_q + kBwdRows * ldt;
  t.s_k = t.s_do + kBwdRows * ldt;
  t.s_v = t.s_k + kBwdKeys * ldt;
  t.s_p = t.s_v + kBwdKeys * ldt;
  t.s_ds = t.s_p + kBwdRows * (kBwdKeys + 1);
  return t;
}

constexpr size_t bwd_shared_bytes(int D) {
  return sizeof(float) * ((2 * kBwdRows + 2 * kBwdKeys) * static_cast<size_t>(D + 1) + 2 * kBwdRows * (kBwdKeys + 1));
}

// Per-row values of the query tile q0.. of both backward kernels, in static shared memory.
struct BwdRowStats {
  int seg[kBwdRows];      // first key row of the row's segment (N past the last row)
  float lse[kBwdRows];    // log-sum-exp of the row's scores from the forward (0 past N)
  float delta[kBwdRows];  // rowsum(dO * O) from attention_delta_kernel (0 past N)
};
// The static shared memory of the backward kernels: s_rows.
constexpr size_t kBwdStaticBytes = sizeof(BwdRowStats);
static_assert(bwd_shared_bytes(AttnSmallHeads::kMaxD) + kBwdStaticBytes <= kDefaultSharedBytes,
              "backward tiles of small heads fit the shared memory a block gets without opting in");

// P and dS = P * (dO.V - delta) * scale of one (query tile, key tile) pair into s_p, s_ds: each
// thread takes key column tid % kBwdKeys for two query rows. Masked entries are 0.
__device__ __forceinline__ void bwd_scores(const AttentionArgs& a, const BwdTiles& t, int q0, int k0,
                                           const BwdRowStats& s_rows) {
  const int D = a.D, ldt = D + 1, lds = kBwdKeys + 1;
  const int c = threadIdx.x % kBwdKeys, j = k0 + c;
IFT_ATTN_UNROLL
  for (int half = 0; half < 2; ++half) {
    const int r = threadIdx.x / kBwdKeys + half * (kBwdRows / 2), i = q0 + r;
    float p = 0.0f, ds = 0.0f;
    if (i < a.N && j <= i && j >= s_rows.seg[r]) {
      const float s = dot_shared(t.s_q + r * ldt, t.s_k + c * ldt, D) * a.scale;
      const float dp = dot_shared(t.s_do + r * ldt, t.s_v + c * ldt, D);
      p = expf(s - s_rows.lse[r]);
      ds = p * (dp - s_rows.delta[r]) * a.scale;
    }
    t.s_p[r * lds + c] = p;
    t.s_ds[r * lds + c] = ds;
  }
}

// The per-row values of the query tile q0.. of head h.
__device__ __forceinline__ void load_row_stats(const AttentionArgs& a, int q0, int h, const float* __restrict__ g_lse,
                                               const float* __restrict__ g_delta, BwdRowStats& s_rows) {
  for (int r = threadIdx.x; r < kBwdRows; r += blockDim.x) {
    const int i = q0 + r;
    const bool in = i < a.N;
    s_rows.seg[r] = in ? segment_begin(a, i) : a.N;
    s_rows.lse[r] = in ? g_lse[static_cast<int64_t>(i) * a.H + h] : 0.0f;
    s_rows.delta[r] = in ? g_delta[static_cast<int64_t>(i) * a.H + h] : 0.0f;
  }
}

template <class T, class Heads>
static __global__ void __launch_bounds__(kAttnThreads)
    attention_dkdv_kernel(AttentionArgs a, const T* __restrict__ g_qkv,  // (N, ld)
                          T* __restrict__ g_dqkv,         // (N, ld): dk, dv written
                          const T* __restrict__ g_dout,                   // (N, H*D)
                          const float* __restrict__ g_lse,                // (N, H)
                          const float* __restrict__ g_delta) {            // (N, H)
  IFT_SHARED(BwdRowStats, s_rows);
  IFT_DYNAMIC_SHARED(float, s_buf);
  constexpr int kDSlices = Heads::kDSlices;
  const int D = a.D, ldt = D + 1, lds = kBwdKeys + 1;
  const BwdTiles t = bwd_tiles(s_buf, D);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int kvh = blockIdx.y, k0 = blockIdx.x * kBwdKeys, k_end = min_int(k0 + kBwdKeys, a.N);
  const int64_t ld = a.ld, ldo = static_cast<int64_t>(a.H) * D;
  // Queries that can see these keys: from the first key to the end of the last key's segment.
  const int q_end = segment_end(a, k_end - 1);

  load_head_tile(t.s_k, g_qkv + (a.H + kvh) * D, ld, k0, kBwdKeys, k_end, D);
  load_head_tile(t.s_v, g_qkv + (a.H + a.KVH + kvh) * D, ld, k0, kBwdKeys, k_end, D);

  // Accumulator role: key rows warp + kAttnWarps*k, dims lane + 32*c.
  constexpr int kKeysPerWarp = kBwdKeys / kAttnWarps;
  float r_dk[kKeysPerWarp][kDSlices], r_dv[kKeysPerWarp][kDSlices];
IFT_ATTN_UNROLL
  for (int k = 0; k < kKeysPerWarp; ++k)
IFT_ATTN_UNROLL
    for (int c = 0; c < kDSlices; ++c) r_dk[k][c] = r_dv[k][c] = 0.0f;

  const int group = a.H / a.KVH;
  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    for (int q0 = k0; q0 < q_end; q0 += kBwdRows) {
      load_head_tile(t.s_q, g_qkv + h * D, ld, q0, kBwdRows, q_end, D);
      load_head_tile(t.s_do, g_dout + h * D, ldo, q0, kBwdRows, q_end, D);
      load_row_stats(a, q0, h, g_lse, g_delta, s_rows);
      __syncthreads();
      bwd_scores(a, t, q0, k0, s_rows);
      __syncthreads();
      // dV += P^T dO, dK += dS^T Q
      for (int r = 0; r < kBwdRows; ++r) {
        float r_do[kDSlices], r_q[kDSlices];
IFT_ATTN_UNROLL
        for (int c = 0; c < kDSlices; ++c) {
          const bool in = lane + 32 * c < D;
          r_do[c] = in ? t.s_do[r * ldt + lane + 32 * c] : 0.0f;
          r_q[c] = in ? t.s_q[r * ldt + lane + 32 * c] : 0.0f;
        }
IFT_ATTN_UNROLL
        for (int k = 0; k < kKeysPerWarp; ++k) {
          const int key = warp + kAttnWarps * k;
          const float p = t.s_p[r * lds + key], ds = t.s_ds[r * lds + key];
IFT_ATTN_UNROLL
          for (int c = 0; c < kDSlices; ++c) {
            r_dv[k][c] += p * r_do[c];
            r_dk[k][c] += ds * r_q[c];
          }
        }
      }
      __syncthreads();  // the tiles are refilled by the next query tile
    }
  }

IFT_ATTN_UNROLL
  for (int k = 0; k < kKeysPerWarp; ++k) {
    const int j = k0 + warp + kAttnWarps * k;
    if (j >= a.N) continue;
    T* g_dk = g_dqkv + j * ld + (a.H + kvh) * D;
    T* g_dv = g_dqkv + j * ld + (a.H + a.KVH + kvh) * D;
IFT_ATTN_UNROLL
    for (int c = 0; c < kDSlices; ++c) {
      if (lane + 32 * c >= D) continue;
      g_dk[lane + 32 * c] = from_float<T>(r_dk[k][c]);
      g_dv[lane + 32 * c] = from_float<T>(r_dv[k][c]);
    }
  }
}

template <class T, class Heads>
static __global__ void __launch_bounds__(kAttnThreads)
    attention_dq_kernel(AttentionArgs a, const T* __restrict__ g_qkv,  // (N, ld)
                        T* __restrict__ g_dqkv,  // (N, ld): dq written
                        const T* __restrict__ g_dout,            // (N, H*D)
                        const float* __restrict__ g_lse,         // (N, H)
                        const float* __restrict__ g_delta) {     // (N, H)
  IFT_SHARED(BwdRowStats, s_rows);
  IFT_DYNAMIC_SHARED(float, s_buf);
  constexpr int kDSlices = Heads::kDSlices;
  const int D = a.D, ldt = D + 1, lds = kBwdKeys + 1;
  const BwdTiles t = bwd_tiles(s_buf, D);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int h = blockIdx.y, kvh = h / (a.H / a.KVH), q0 = blockIdx.x * kBwdRows, q_end = min_int(q0 + kBwdRows, a.N);
  const int64_t ld = a.ld, ldo = static_cast<int64_t>(a.H) * D;
  const T* g_k = g_qkv + (a.H + kvh) * D;
  const T* g_v = g_qkv + (a.H + a.KVH + kvh) * D;

  load_head_tile(t.s_q, g_qkv + h * D, ld, q0, kBwdRows, q_end, D);
  load_head_tile(t.s_do, g_dout + h * D, ldo, q0, kBwdRows, q_end, D);
  load_row_stats(a, q0, h, g_lse, g_delta, s_rows);
  __syncthreads();

  // Accumulator role: query rows warp + kAttnWarps*k, dims lane + 32*c.
  constexpr int kRowsPerWarp = kBwdRows / kAttnWarps;
  float r_dq[kRowsPerWarp][kDSlices];
IFT_ATTN_UNROLL
  for (int k = 0; k < kRowsPerWarp; ++k)
IFT_ATTN_UNROLL
    for (int c = 0; c < kDSlices; ++c) r_dq[k][c] = 0.0f;

  const int k_begin = s_rows.seg[0], k_end = q_end;
  for (int k0 = k_begin; k0 < k_end; k0 += kBwdKeys) {
    load_head_tile(t.s_k, g_k, ld, k0, kBwdKeys, k_end, D);
    load_head_tile(t.s_v, g_v, ld, k0, kBwdKeys, k_end, D);
    __syncthreads();
    bwd_scores(a, t, q0, k0, s_rows);
    __syncthreads();
    // dQ += dS K
    for (int cc = 0; cc < kBwdKeys; ++cc) {
      float r_k[kDSlices];
IFT_ATTN_UNROLL
      for (int c = 0; c < kDSlices; ++c) r_k[c] = lane + 32 * c < D ? t.s_k[cc * ldt + lane + 32 * c] : 0.0f;
IFT_ATTN_UNROLL
      for (int k = 0; k < kRowsPerWarp; ++k) {
        const float ds = t.s_ds[(warp + kAttnWarps * k) * lds + cc];
IFT_ATTN_UNROLL
        for (int c = 0; c < kDSlices; ++c) r_dq[k][c] += ds * r_k[c];
      }
    }
    __syncthreads();  // s_k, s_v, s_ds are refilled by the next key tile
  }

IFT_ATTN_UNROLL
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int i = q0 + warp + kAttnWarps * k;
    if (i >= a.N) continue;
    T* g_dq = g_dqkv + i * ld + h * D;
IFT_ATTN_UNROLL
    for (int c = 0; c < kDSlices; ++c)
      if (lane + 32 * c < D) g_dq[lane + 32 * c] = from_float<T>(r_dq[k][c]);
  }
}

// launchers

static void check_attention(const char* op, const AttentionArgs& p) {
  IFT_CHECK(p.N >= 1, op, ": N (rows) must be >= 1, got ", p.N);
  IFT_CHECK(p.H >= 1 && p.H <= 65535, op, ": H (query heads) must be in [1, 65535], got ", p.H);
  IFT_CHECK(p.KVH >= 1, op, ": KVH (kv heads) must be >= 1, got ", p.KVH);
  IFT_CHECK(p.H % p.KVH == 0, op, ": H = ", p.H, " query heads do not group over KVH = ", p.KVH, " kv heads");
  IFT_CHECK(p.D >= 1 && p.D <= kAttentionMaxHeadDim, op, ": head dim D must be in [1, ", kAttentionMaxHeadDim,
            "], got ", p.D);
  const int64_t width = static_cast<int64_t>(p.H + 2 * p.KVH) * p.D;
  IFT_CHECK(p.ld >= width, op, ": row stride ld = ", p.ld, " is smaller than (H + 2*KVH) * D = ", width);
  IFT_CHECK(p.S >= 1 && p.S <= p.N, op, ": S (segments) must be in [1, N = ", p.N, "], got ", p.S);
  IFT_CHECK(p.cu_seqlens != nullptr, op, ": cu_seqlens must not be null");
  IFT_CHECK(std::isfinite(p.scale) && p.scale > 0, op, ": scale must be finite and > 0, got ", p.scale);
  if (const int32_t* cu = p.cu_seqlens_host) {
    IFT_CHECK(cu[0] == 0, op, ": cu_seqlens[0] must be 0, got ", cu[0]);
    IFT_CHECK(cu[p.S] == p.N, op, ": cu_seqlens[S = ", p.S, "] must be N = ", p.N, ", got ", cu[p.S]);
    for (int s = 0; s < p.S; ++s)
      IFT_CHECK(cu[s] < cu[s + 1], op, ": cu_seqlens must increase strictly; segment ", s, " is [", cu[s], ", ",
                cu[s + 1], ")");
  }
}

static unsigned tiles(int n, int tile) { return static_cast<unsigned>((n + tile - 1) / tile); }

template <class T, class Heads>
static void launch_attention_forward_for(T* out, float* lse, const T* qkv, const AttentionArgs& p, cudaStream_t stream) {
  reserve_shared_memory("attention_forward", attention_forward_kernel<T, Heads>, fwd_shared_bytes(p.D), kFwdStaticBytes);
  launch_kernel(attention_forward_kernel<T, Heads>, dim3(tiles(p.N, kFwdRows), p.H), kAttnThreads, fwd_shared_bytes(p.D),
                stream, p, qkv, out, lse);
}

template <class T>
static void launch_attention_forward(T* out, float* lse, const T* qkv, const AttentionArgs& p, cudaStream_t stream) {
  check_attention("attention_forward", p);
  IFT_CHECK(out && lse && qkv, "attention_forward: out, lse and qkv must not be null");
  if (p.D <= AttnSmallHeads::kMaxD)
    launch_attention_forward_for<T, AttnSmallHeads>(out, lse, qkv, p, stream);
  else
    launch_attention_forward_for<T, AttnLargeHeads>(out, lse, qkv, p, stream);
}

template <class T, class Heads>
static void launch_attention_dkdv_dq(T* dqkv, const float* delta, const T* dout, const T* qkv, const float* lse,
                                     const AttentionArgs& p, cudaStream_t stream) {
  const size_t smem = bwd_shared_bytes(p.D);
  reserve_shared_memory("attention_backward", attention_dkdv_kernel<T, Heads>, smem, kBwdStaticBytes);
  launch_kernel(attention_dkdv_kernel<T, Heads>, dim3(tiles(p.N, kBwdKeys), p.KVH), kAttnThreads, smem, stream, p, qkv,
                dqkv, dout, lse, delta);
  reserve_shared_memory("attention_backward", attention_dq_kernel<T, Heads>, smem, kBwdStaticBytes);
  launch_kernel(attention_dq_kernel<T, Heads>, dim3(tiles(p.N, kBwdRows), p.H), kAttnThreads, smem, stream, p, qkv, dqkv,
                dout, lse, delta);
}

template <class T>
static void launch_attention_backward(T* dqkv, float* delta, const T* dout, const T* qkv, const T* out,
                                      const float* lse, const AttentionArgs& p, bool tensor_cores, cudaStream_t stream) {
  check_attention("attention_backward", p);
  IFT_CHECK(dqkv && delta && dout && qkv && out && lse,
            "attention_backward: dqkv, delta, dout, qkv, out and lse must not be null");
  const int64_t rows = static_cast<int64_t>(p.N) * p.H;
  launch_kernel(attention_delta_kernel<T>, static_cast<unsigned>((rows + kAttnWarps - 1) / kAttnWarps), kAttnThreads,
                0, stream, dout, out, delta, rows, p.D);
  if constexpr (std::is_same_v<T, bf16>) {
    if (tensor_cores) return attention_backward_tc(dqkv, delta, dout, qkv, lse, p, stream);
  }
  if (p.D <= AttnSmallHeads::kMaxD)
    launch_attention_dkdv_dq<T, AttnSmallHeads>(dqkv, delta, dout, qkv, lse, p, stream);
  else
    launch_attention_dkdv_dq<T, AttnLargeHeads>(dqkv, delta, dout, qkv, lse, p, stream);
}

void attention_forward(float* out, float* lse, const float* qkv, const AttentionArgs& p, cudaStream_t stream) {
  launch_attention_forward(out, lse, qkv, p, stream);
}

void attention_forward(bf16* out, float* lse, const bf16* qkv, const AttentionArgs& p, cudaStream_t stream) {
  if (attention_tc_supports(p, qkv, out, nullptr)) {
    check_attention("attention_forward", p);
    IFT_CHECK(out && lse && qkv, "attention_forward: out, lse and qkv must not be null");
    attention_forward_tc(out, lse, qkv, p, stream);
  } else {
    launch_attention_forward(out, lse, qkv, p, stream);
  }
}

void attention_forward_simt(bf16* out, float* lse, const bf16* qkv, const AttentionArgs& p, cudaStream_t stream) {
  launch_attention_forward(out, lse, qkv, p, stream);
}

void attention_backward(float* dqkv, float* delta, const float* dout, const float* qkv, const float* out,
                        const float* lse, const AttentionArgs& p, cudaStream_t stream) {
  launch_attention_backward(dqkv, delta, dout, qkv, out, lse, p, false, stream);
}

void attention_backward(bf16* dqkv, float* delta, const bf16* dout, const bf16* qkv, const bf16* out,
                        const float* lse, const AttentionArgs& p, cudaStream_t stream) {
  launch_attention_backward(dqkv, delta, dout, qkv, out, lse, p, attention_tc_supports(p, qkv, dout, dqkv), stream);
}

void attention_backward_simt(bf16* dqkv, float* delta, const bf16* dout, const bf16* qkv, const bf16* out,
                             const float* lse, const AttentionArgs& p, cudaStream_t stream) {
  launch_attention_backward(dqkv, delta, dout, qkv, out, lse, p, false, stream);
}

IFT_KERNELS_END
