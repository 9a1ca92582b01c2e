// Tensor-core causal attention over packed samples, FlashAttention-2 style (bf16 storage, fp32
// accumulation on mma.sync m16n8k16; kernels/mma.cuh for the instructions and their layouts).
//
// Forward: one block of 4 warps per (64 query rows, query head); each warp owns 16 rows. The Q tile
// is read once into registers (A fragments, by ldmatrix.x4); K and V tiles of kBlockN keys stream
// through two shared-memory stages filled by cp.async, the next tile's copy in flight while the
// current one is computed. Per key tile, in registers: S = Q K^T (B fragments of K by ldmatrix.x2),
// the scale and the mask, the online softmax (running max and sum per row; the 4 lanes of a quad
// share a row), P packed to bf16 as the A fragment of P V (the accumulator layout of S is that of A),
// O += P V (B fragments of V by ldmatrix.x2.trans). At the end out = O / l and lse = m + log(l).
//
// Backward, by recomputation from lse, in two passes that each own what they write (no atomics):
//   dK/dV: one block per (64 keys, kv head); each warp owns 16 keys and walks the query tiles that
//          can see them, for each query head of its group: S^T = K Q^T and dP^T = V dO^T, P^T and
//          dS^T = P^T (dP^T - delta) scale, then dV += P^T dO and dK += dS^T Q;
//   dQ:    one block per (64 query rows, query head) walking the key tiles: S, dP, dS as above,
//          dQ += dS K.
// Masked and out-of-range entries contribute exactly 0 (tiles past the end are zero-filled).
#include "kernels/attention_tc.h"

#include <cmath>

#include "kernels/attention_segments.cuh"
#include "kernels/common.cuh"
#include "kernels/mma.cuh"

#if IFT_EMULATED
#define IFT_TC_UNROLL
#else
#define IFT_TC_UNROLL _Pragma("unroll")
#endif

IFT_KERNELS_BEGIN

constexpr int kTcWarps = 4;
constexpr int kTcThreads = 32 * kTcWarps;
constexpr int kTcWarpRows = 16;                   // the M of mma.m16n8k16: rows (or keys) a warp owns
constexpr int kTcBlockRows = kTcWarps * kTcWarpRows;  // 64 query rows a forward block, keys a dK/dV block
// Shared memory the forward's two K/V stages may take: with the Q tile it stays under ~100 KiB, so
// two blocks fit on an SM of sm_80 (164 KiB) or sm_90 (227 KiB).
constexpr int kTcKvStagesBytes = 64 * 1024;

constexpr int floor_pow2(int x) {
  int p = 1;
  while (2 * p <= x) p *= 2;
  return p;
}
constexpr int min_c(int x, int y) { return x < y ? x : y; }

// What a head dim fixes. Everything is derived from kD:
//   kBlockN  keys a forward K/V tile: the largest power of two whose 2 stages of K and V fit in
//            kTcKvStagesBytes, at most 64 (the S accumulator is 16 x kBlockN fp32 a warp, kBlockN / 2
//            registers a lane, beside D / 2 for O and D / 4 for Q);
//   kStride  the shared-memory row stride in elements: the row plus 16 bytes, so that the 8 row
//            addresses of an ldmatrix land on different bank groups, and rows stay 16-byte aligned.
template <int kHeadDim>
struct AttnTcTraits {
  static constexpr int kD = kHeadDim;
  static_assert(kD % 16 == 0, "a head dim is a whole number of mma k-steps (16)");
  static constexpr int kKSteps = kD / 16;  // mma k-steps over the head dim (Q K^T)
  static constexpr int kDTiles = kD / 8;   // mma n-tiles over the head dim (P V, dQ, dK, dV)
  static constexpr int kChunks = kD / 8;   // 16-byte pieces a row
  static constexpr int kBlockN = min_c(64, floor_pow2(kTcKvStagesBytes / (2 * 2 * kD * int(sizeof(bf16)))));
  static_assert(kBlockN % 16 == 0, "a key tile is a whole number of mma k-steps (P V)");
  static constexpr int kStride = kD + 8;
  static constexpr size_t rows_bytes(int rows) { return size_t(rows) * kStride * sizeof(bf16); }
  // Forward: Q tile, then 2 stages of K, then 2 of V.
  static constexpr size_t kFwdShared = rows_bytes(kTcBlockRows) + 4 * rows_bytes(kBlockN);
  // Backward (both passes): K, V, Q and dO tiles of kTcBlockRows rows.
  static constexpr size_t kBwdShared = 4 * rows_bytes(kTcBlockRows);
};

// The head dims with tensor-core kernels; others (and fp32) run the SIMT kernels.
constexpr int kTcHeadDims[] = {64, 96, 128, 256};

// Rows [row0, row0 + rows) of one head (D values at g_src + n*ld) into s_dst (rows, kStride) by
// cp.async, 16 bytes a copy; rows at or past row_end are zero-filled. Called by the whole block;
// the caller commits and waits.
template <class Tr>
__device__ __forceinline__ void tile_async(bf16* s_dst, const bf16* __restrict__ g_src, int64_t ld, int row0, int rows,
                                           int row_end) {
  for (int c = threadIdx.x; c < rows * Tr::kChunks; c += blockDim.x) {
    const int r = c / Tr::kChunks, ch = c % Tr::kChunks, n = row0 + r;
    const bool valid = n < row_end;
    cp_async_16(s_dst + r * Tr::kStride + 8 * ch, valid ? g_src + n * ld + 8 * ch : g_src, valid);
  }
}

// A fragment (16 rows x 16) of rows row0.. and columns col0.. of a shared tile, by ldmatrix.x4:
// lane l gives row l % 16, columns col0 + 8 (l / 16).
template <class Tr>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* s_tile, int row0, int col0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x4(a, s_tile + (row0 + lane % 16) * Tr::kStride + col0 + 8 * (lane / 16));
}

// B fragment (k 16 x n 8) of X^T, for X a shared tile of rows n0.. (the n) and columns k0.. (the
// k): ldmatrix.x2, lane l gives row n0 + l % 8, columns k0 + 8 ((l / 8) % 2).
template <class Tr>
__device__ __forceinline__ void load_b_of_transpose(uint32_t (&b)[2], const bf16* s_tile, int n0, int k0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x2(b, s_tile + (n0 + lane % 8) * Tr::kStride + k0 + 8 * ((lane / 8) % 2));
}

// B fragment (k 16 x n 8) of X itself, for X a shared tile of rows k0.. (the k) and columns n0..:
// ldmatrix.x2.trans, lane l gives row k0 + l % 16.
template <class Tr>
__device__ __forceinline__ void load_b(uint32_t (&b)[2], const bf16* s_tile, int k0, int n0) {
  const int lane = threadIdx.x % 32;
  ldmatrix_x2_trans(b, s_tile + (k0 + lane % 16) * Tr::kStride + n0);
}

// Two accumulator n-tiles (16 x 8 each, columns 16kk..16kk+15 of a score tile) as the bf16 A
// fragment of the next product: the accumulator layout of (g, 2t..2t+1) and (g+8, ..) is the A
// layout's, tile 2kk giving a[0], a[1] and tile 2kk+1 a[2], a[3].
__device__ __forceinline__ void accumulators_as_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16x2(lo[0], lo[1]);
  a[1] = pack_bf16x2(lo[2], lo[3]);
  a[2] = pack_bf16x2(hi[0], hi[1]);
  a[3] = pack_bf16x2(hi[2], hi[3]);
}

// The backward's two score products at once, each 16 x 64 for this warp: xy = X Y^T and
// zw = Z W^T, rows row0..row0+15 of the shared tiles X and Z against all 64 rows of Y and W (the
// head dim is the k). dK/dV: S^T = K Q^T and dP^T = V dO^T; dQ: S = Q K^T and dP = dO V^T.
template <class Tr>
__device__ __forceinline__ void two_score_products(float (&xy)[kTcBlockRows / 8][4], float (&zw)[kTcBlockRows / 8][4],
                                                   const bf16* s_x, const bf16* s_y, const bf16* s_z, const bf16* s_w,
                                                   int row0) {
IFT_TC_UNROLL
  for (int nt = 0; nt < kTcBlockRows / 8; ++nt)
IFT_TC_UNROLL
    for (int i = 0; i < 4; ++i) xy[nt][i] = zw[nt][i] = 0.0f;
IFT_TC_UNROLL
  for (int ks = 0; ks < Tr::kKSteps; ++ks) {
    uint32_t ax[4], az[4];
    load_a<Tr>(ax, s_x, row0, 16 * ks);
    load_a<Tr>(az, s_z, row0, 16 * ks);
IFT_TC_UNROLL
    for (int nt = 0; nt < kTcBlockRows / 8; ++nt) {
      uint32_t by[2], bw[2];
      load_b_of_transpose<Tr>(by, s_y, 8 * nt, 16 * ks);
      load_b_of_transpose<Tr>(bw, s_w, 8 * nt, 16 * ks);
      mma_m16n8k16_bf16(xy[nt], ax, by, xy[nt]);
      mma_m16n8k16_bf16(zw[nt], az, bw, zw[nt]);
    }
  }
}

// Two fp32 values as a bf16 pair at g_dst (4-byte aligned).
__device__ __forceinline__ void store_bf16x2(bf16* g_dst, float lo, float hi) {
  *reinterpret_cast<uint32_t*>(g_dst) = pack_bf16x2(lo, hi);
}

// ---- forward ------------------------------------------------------------------------------------

template <class Tr>
static __global__ void __launch_bounds__(kTcThreads)
    attention_forward_tc_kernel(AttentionArgs a, const bf16* __restrict__ g_qkv,  // (N, ld)
                                bf16* __restrict__ g_out,                          // (N, H*D)
                                float* __restrict__ g_lse) {                       // (N, H)
  constexpr int D = Tr::kD, BN = Tr::kBlockN, LDS = Tr::kStride, kNTiles = BN / 8;
  IFT_DYNAMIC_SHARED(bf16, s_buf);
  bf16* const s_q = s_buf;                          // (64, LDS)
  bf16* const s_k = s_q + kTcBlockRows * LDS;       // 2 stages of (BN, LDS)
  bf16* const s_v = s_k + 2 * BN * LDS;             // 2 stages of (BN, LDS)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int h = blockIdx.y, kvh = h / (a.H / a.KVH);
  const int q0 = blockIdx.x * kTcBlockRows, q_end = min_int(q0 + kTcBlockRows, a.N);
  const int64_t ld = a.ld;
  const bf16* g_q = g_qkv + h * D;
  const bf16* g_k = g_qkv + (a.H + kvh) * D;
  const bf16* g_v = g_qkv + (a.H + a.KVH + kvh) * D;

  // The two rows of this lane (accumulator rows g and g + 8 of its warp) and their segments' starts.
  int row[2], seg[2];
IFT_TC_UNROLL
  for (int r = 0; r < 2; ++r) {
    row[r] = q0 + kTcWarpRows * warp + g + 8 * r;
    seg[r] = row[r] < a.N ? segment_begin(a, row[r]) : a.N;  // a.N: no key is visible
  }
  // Keys the block's rows can see: [segment start of its first row, its last row].
  const int k_begin = segment_begin(a, q0), k_end = q_end;
  const int n_tiles = (k_end - k_begin + BN - 1) / BN;

  tile_async<Tr>(s_q, g_q, ld, q0, kTcBlockRows, q_end);
  cp_async_commit();
  tile_async<Tr>(s_k, g_k, ld, k_begin, BN, k_end);
  tile_async<Tr>(s_v, g_v, ld, k_begin, BN, k_end);
  cp_async_commit();
  cp_async_wait<1>();  // Q
  __syncthreads();
  uint32_t qf[Tr::kKSteps][4];
IFT_TC_UNROLL
  for (int ks = 0; ks < Tr::kKSteps; ++ks) load_a<Tr>(qf[ks], s_q, kTcWarpRows * warp, 16 * ks);

  float o[Tr::kDTiles][4];
IFT_TC_UNROLL
  for (int nd = 0; nd < Tr::kDTiles; ++nd)
IFT_TC_UNROLL
    for (int i = 0; i < 4; ++i) o[nd][i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // l: this lane's part of the row sum

  for (int it = 0; it < n_tiles; ++it) {
    const int k0 = k_begin + it * BN, stage = it % 2;
    if (it + 1 < n_tiles) {  // the next tile into the other stage, in flight while this one is used
      tile_async<Tr>(s_k + (1 - stage) * BN * LDS, g_k, ld, k0 + BN, BN, k_end);
      tile_async<Tr>(s_v + (1 - stage) * BN * LDS, g_v, ld, k0 + BN, BN, k_end);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* sk = s_k + stage * BN * LDS;
    const bf16* sv = s_v + stage * BN * LDS;

    float s[kNTiles][4];
IFT_TC_UNROLL
    for (int nt = 0; nt < kNTiles; ++nt) {
IFT_TC_UNROLL
      for (int i = 0; i < 4; ++i) s[nt][i] = 0.0f;
IFT_TC_UNROLL
      for (int ks = 0; ks < Tr::kKSteps; ++ks) {
        uint32_t b[2];
        load_b_of_transpose<Tr>(b, sk, 8 * nt, 16 * ks);
        mma_m16n8k16_bf16(s[nt], qf[ks], b, s[nt]);
      }
    }
    // Scale and mask: element i of tile nt is (row[i / 2], key k0 + 8 nt + 2 t + i % 2).
    float tile_max[2] = {-INFINITY, -INFINITY};
IFT_TC_UNROLL
    for (int nt = 0; nt < kNTiles; ++nt)
IFT_TC_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int r = i / 2, j = k0 + 8 * nt + 2 * t + i % 2;
        const bool visible = j <= row[r] && j >= seg[r];
        s[nt][i] = visible ? s[nt][i] * a.scale : -INFINITY;
        tile_max[r] = fmaxf(tile_max[r], s[nt][i]);
      }
    float m_use[2];
IFT_TC_UNROLL
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], 2));
      const float m_new = fmaxf(m[r], tile_max[r]);
      // A row that has seen no visible key keeps m = -inf: exponentiate against 0 then, so that
      // exp(-inf - -inf) never makes a NaN (its P and alpha are 0).
      m_use[r] = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = __expf(m[r] - m_use[r]);
      m[r] = m_new;
      l[r] *= alpha;
IFT_TC_UNROLL
      for (int nd = 0; nd < Tr::kDTiles; ++nd) o[nd][2 * r] *= alpha, o[nd][2 * r + 1] *= alpha;
    }
IFT_TC_UNROLL
    for (int nt = 0; nt < kNTiles; ++nt)
IFT_TC_UNROLL
      for (int i = 0; i < 4; ++i) {
        s[nt][i] = __expf(s[nt][i] - m_use[i / 2]);
        l[i / 2] += s[nt][i];
      }
    // O += P V, P as bf16 A fragments, 16 keys a k-step.
IFT_TC_UNROLL
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t p[4];
      accumulators_as_a(p, s[2 * kk], s[2 * kk + 1]);
IFT_TC_UNROLL
      for (int nd = 0; nd < Tr::kDTiles; ++nd) {
        uint32_t b[2];
        load_b<Tr>(b, sv, 16 * kk, 8 * nd);
        mma_m16n8k16_bf16(o[nd], p, b, o[nd]);
      }
    }
    __syncthreads();  // this stage is refilled by the copy issued in the iteration after next
  }

IFT_TC_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
    if (row[r] >= a.N) continue;
    const float inv_l = 1.0f / l[r];
    bf16* g_o = g_out + (static_cast<int64_t>(row[r]) * a.H + h) * D;
IFT_TC_UNROLL
    for (int nd = 0; nd < Tr::kDTiles; ++nd) store_bf16x2(g_o + 8 * nd + 2 * t, o[nd][2 * r] * inv_l, o[nd][2 * r + 1] * inv_l);
    if (t == 0) g_lse[static_cast<int64_t>(row[r]) * a.H + h] = m[r] + logf(l[r]);
  }
}

// ---- backward -----------------------------------------------------------------------------------

// P and dS of one score accumulator element given its scaled-free score s, dP value dp, the row's
// lse and delta: P = exp(scale s - lse), dS = P (dP - delta) scale; 0 where not visible.
struct ProbGrad {
  float p, ds;
};
__device__ __forceinline__ ProbGrad prob_grad(bool visible, float s, float dp, float scale, float lse, float delta) {
  if (!visible) return {0.0f, 0.0f};
  const float p = __expf(s * scale - lse);
  return {p, p * (dp - delta) * scale};
}

template <class Tr>
static __global__ void __launch_bounds__(kTcThreads)
    attention_dkdv_tc_kernel(AttentionArgs a, const bf16* __restrict__ g_qkv,  // (N, ld)
                             bf16* __restrict__ g_dqkv,                         // (N, ld): dk, dv written
                             const bf16* __restrict__ g_dout,                   // (N, H*D)
                             const float* __restrict__ g_lse,                   // (N, H)
                             const float* __restrict__ g_delta) {               // (N, H)
  constexpr int D = Tr::kD, LDS = Tr::kStride, BQ = kTcBlockRows, kQTiles = BQ / 8;
  IFT_SHARED(float[kTcBlockRows], s_lse);
  IFT_SHARED(float[kTcBlockRows], s_delta);
  IFT_SHARED(int[kTcBlockRows], s_seg);
  IFT_DYNAMIC_SHARED(bf16, s_buf);
  bf16* const s_k = s_buf;
  bf16* const s_v = s_k + kTcBlockRows * LDS;
  bf16* const s_q = s_v + kTcBlockRows * LDS;
  bf16* const s_do = s_q + BQ * LDS;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int kvh = blockIdx.y, k0 = blockIdx.x * kTcBlockRows, k_end = min_int(k0 + kTcBlockRows, a.N);
  const int64_t ld = a.ld, ldo = static_cast<int64_t>(a.H) * D;
  // Queries that can see these keys: from the first key to the end of the last key's segment.
  const int q_end = segment_end(a, k_end - 1);
  const int group = a.H / a.KVH;

  tile_async<Tr>(s_k, g_qkv + (a.H + kvh) * D, ld, k0, kTcBlockRows, k_end);
  tile_async<Tr>(s_v, g_qkv + (a.H + a.KVH + kvh) * D, ld, k0, kTcBlockRows, k_end);
  cp_async_commit();

  const int key0 = kTcWarpRows * warp;  // this warp's keys: k0 + key0 .. + 15 (accumulator rows)
  float dk[Tr::kDTiles][4], dv[Tr::kDTiles][4];
IFT_TC_UNROLL
  for (int nd = 0; nd < Tr::kDTiles; ++nd)
IFT_TC_UNROLL
    for (int i = 0; i < 4; ++i) dk[nd][i] = dv[nd][i] = 0.0f;

  for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
    for (int q0 = k0; q0 < q_end; q0 += BQ) {
      tile_async<Tr>(s_q, g_qkv + h * D, ld, q0, BQ, q_end);
      tile_async<Tr>(s_do, g_dout + h * D, ldo, q0, BQ, q_end);
      cp_async_commit();
      for (int r = threadIdx.x; r < BQ; r += blockDim.x) {
        const int i = q0 + r;
        const bool in = i < q_end;
        s_seg[r] = in ? segment_begin(a, i) : a.N;
        s_lse[r] = in ? g_lse[static_cast<int64_t>(i) * a.H + h] : 0.0f;
        s_delta[r] = in ? g_delta[static_cast<int64_t>(i) * a.H + h] : 0.0f;
      }
      cp_async_wait<0>();
      __syncthreads();

      // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys x 64 queries.
      float st[kQTiles][4], dpt[kQTiles][4];
      two_score_products<Tr>(st, dpt, s_k, s_q, s_v, s_do, key0);
      // P^T and dS^T in place: element i of tile nt is (key k0 + key0 + g + 8 (i / 2), query
      // q0 + 8 nt + 2 t + i % 2).
IFT_TC_UNROLL
      for (int nt = 0; nt < kQTiles; ++nt)
IFT_TC_UNROLL
        for (int i = 0; i < 4; ++i) {
          const int j = k0 + key0 + g + 8 * (i / 2), c = 8 * nt + 2 * t + i % 2, qi = q0 + c;
          const bool visible = qi < q_end && j < k_end && j <= qi && j >= s_seg[c];
          const ProbGrad pg = prob_grad(visible, st[nt][i], dpt[nt][i], a.scale, s_lse[c], s_delta[c]);
          st[nt][i] = pg.p;
          dpt[nt][i] = pg.ds;
        }
      // dV += P^T dO and dK += dS^T Q, 16 queries a k-step.
IFT_TC_UNROLL
      for (int kk = 0; kk < BQ / 16; ++kk) {
        uint32_t pa[4], dsa[4];
        accumulators_as_a(pa, st[2 * kk], st[2 * kk + 1]);
        accumulators_as_a(dsa, dpt[2 * kk], dpt[2 * kk + 1]);
IFT_TC_UNROLL
        for (int nd = 0; nd < Tr::kDTiles; ++nd) {
          uint32_t bo[2], bq[2];
          load_b<Tr>(bo, s_do, 16 * kk, 8 * nd);
          load_b<Tr>(bq, s_q, 16 * kk, 8 * nd);
          mma_m16n8k16_bf16(dv[nd], pa, bo, dv[nd]);
          mma_m16n8k16_bf16(dk[nd], dsa, bq, dk[nd]);
        }
      }
      __syncthreads();  // s_q, s_do and the row values are refilled by the next query tile
    }
  }
IFT_TC_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int j = k0 + key0 + g + 8 * r;
    if (j >= a.N) continue;
    bf16* g_dk = g_dqkv + j * ld + (a.H + kvh) * D;
    bf16* g_dv = g_dqkv + j * ld + (a.H + a.KVH + kvh) * D;
IFT_TC_UNROLL
    for (int nd = 0; nd < Tr::kDTiles; ++nd) {
      store_bf16x2(g_dk + 8 * nd + 2 * t, dk[nd][2 * r], dk[nd][2 * r + 1]);
      store_bf16x2(g_dv + 8 * nd + 2 * t, dv[nd][2 * r], dv[nd][2 * r + 1]);
    }
  }
}

template <class Tr>
static __global__ void __launch_bounds__(kTcThreads)
    attention_dq_tc_kernel(AttentionArgs a, const bf16* __restrict__ g_qkv,  // (N, ld)
                           bf16* __restrict__ g_dqkv,                         // (N, ld): dq written
                           const bf16* __restrict__ g_dout,                   // (N, H*D)
                           const float* __restrict__ g_lse,                   // (N, H)
                           const float* __restrict__ g_delta) {               // (N, H)
  constexpr int D = Tr::kD, LDS = Tr::kStride, BK = kTcBlockRows, kKTiles = BK / 8;
  IFT_DYNAMIC_SHARED(bf16, s_buf);
  bf16* const s_q = s_buf;
  bf16* const s_do = s_q + kTcBlockRows * LDS;
  bf16* const s_k = s_do + kTcBlockRows * LDS;
  bf16* const s_v = s_k + BK * LDS;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int h = blockIdx.y, kvh = h / (a.H / a.KVH);
  const int q0 = blockIdx.x * kTcBlockRows, q_end = min_int(q0 + kTcBlockRows, a.N);
  const int64_t ld = a.ld, ldo = static_cast<int64_t>(a.H) * D;
  const bf16* g_k = g_qkv + (a.H + kvh) * D;
  const bf16* g_v = g_qkv + (a.H + a.KVH + kvh) * D;

  tile_async<Tr>(s_q, g_qkv + h * D, ld, q0, kTcBlockRows, q_end);
  tile_async<Tr>(s_do, g_dout + h * D, ldo, q0, kTcBlockRows, q_end);
  cp_async_commit();
  const int row0 = kTcWarpRows * warp;
  int row[2], seg[2];
  float lse[2], delta[2];
IFT_TC_UNROLL
  for (int r = 0; r < 2; ++r) {
    row[r] = q0 + row0 + g + 8 * r;
    const bool in = row[r] < a.N;
    seg[r] = in ? segment_begin(a, row[r]) : a.N;
    lse[r] = in ? g_lse[static_cast<int64_t>(row[r]) * a.H + h] : 0.0f;
    delta[r] = in ? g_delta[static_cast<int64_t>(row[r]) * a.H + h] : 0.0f;
  }
  float dq[Tr::kDTiles][4];
IFT_TC_UNROLL
  for (int nd = 0; nd < Tr::kDTiles; ++nd)
IFT_TC_UNROLL
    for (int i = 0; i < 4; ++i) dq[nd][i] = 0.0f;

  const int k_begin = segment_begin(a, q0), k_end = q_end;
  for (int k0 = k_begin; k0 < k_end; k0 += BK) {
    tile_async<Tr>(s_k, g_k, ld, k0, BK, k_end);
    tile_async<Tr>(s_v, g_v, ld, k0, BK, k_end);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    float s[kKTiles][4], dp[kKTiles][4];
    two_score_products<Tr>(s, dp, s_q, s_k, s_do, s_v, row0);
    // dS in place of dP: element i of tile nt is (row[i / 2], key k0 + 8 nt + 2 t + i % 2).
IFT_TC_UNROLL
    for (int nt = 0; nt < kKTiles; ++nt)
IFT_TC_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int r = i / 2, j = k0 + 8 * nt + 2 * t + i % 2;
        const bool visible = row[r] < a.N && j <= row[r] && j >= seg[r];
        dp[nt][i] = prob_grad(visible, s[nt][i], dp[nt][i], a.scale, lse[r], delta[r]).ds;
      }
    // dQ += dS K, 16 keys a k-step.
IFT_TC_UNROLL
    for (int kk = 0; kk < BK / 16; ++kk) {
      uint32_t dsa[4];
      accumulators_as_a(dsa, dp[2 * kk], dp[2 * kk + 1]);
IFT_TC_UNROLL
      for (int nd = 0; nd < Tr::kDTiles; ++nd) {
        uint32_t bk[2];
        load_b<Tr>(bk, s_k, 16 * kk, 8 * nd);
        mma_m16n8k16_bf16(dq[nd], dsa, bk, dq[nd]);
      }
    }
    __syncthreads();  // s_k and s_v are refilled by the next key tile
  }
IFT_TC_UNROLL
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= a.N) continue;
    bf16* g_dq = g_dqkv + row[r] * ld + h * D;
IFT_TC_UNROLL
    for (int nd = 0; nd < Tr::kDTiles; ++nd) store_bf16x2(g_dq + 8 * nd + 2 * t, dq[nd][2 * r], dq[nd][2 * r + 1]);
  }
}

// ---- launchers ----------------------------------------------------------------------------------

// A buffer the call does not use (null) has no alignment to meet.
static bool aligned16_or_null(const void* p) { return p == nullptr || aligned16(p); }

bool attention_tc_supports(const AttentionArgs& a, const void* qkv, const void* out_or_dout, const void* dqkv) {
  bool head_dim = false;
  for (int d : kTcHeadDims) head_dim = head_dim || a.D == d;
  return head_dim && a.ld % 8 == 0 && aligned16_or_null(qkv) && aligned16_or_null(out_or_dout) && aligned16_or_null(dqkv);
}

static unsigned tc_tiles(int n) { return static_cast<unsigned>((n + kTcBlockRows - 1) / kTcBlockRows); }

// Calls f(traits) for the traits of head dim D (one of kTcHeadDims).
template <class F>
static void with_tc_traits(int D, F&& f) {
  switch (D) {
    case 64: f(AttnTcTraits<64>{}); break;
    case 96: f(AttnTcTraits<96>{}); break;
    case 128: f(AttnTcTraits<128>{}); break;
    case 256: f(AttnTcTraits<256>{}); break;
    default: fail("attention (tensor cores): no traits for head dim ", D);
  }
}

void attention_forward_tc(bf16* out, float* lse, const bf16* qkv, const AttentionArgs& a, cudaStream_t stream) {
  IFT_CHECK(attention_tc_supports(a, qkv, out, nullptr), "attention_forward_tc: head dim ", a.D, ", ld ", a.ld,
            " or a buffer's alignment is not one the tensor-core kernels take (D 64/96/128/256, ld % 8 == 0, 16-byte aligned)");
  with_tc_traits(a.D, [&](auto traits) {
    using Tr = decltype(traits);
    reserve_shared_memory("attention_forward_tc", attention_forward_tc_kernel<Tr>, Tr::kFwdShared, 0);
    launch_kernel(attention_forward_tc_kernel<Tr>, dim3(tc_tiles(a.N), a.H), kTcThreads, Tr::kFwdShared, stream, a, qkv, out,
                  lse);
  });
}

void attention_backward_tc(bf16* dqkv, const float* delta, const bf16* dout, const bf16* qkv, const float* lse,
                           const AttentionArgs& a, cudaStream_t stream) {
  IFT_CHECK(attention_tc_supports(a, qkv, dout, dqkv), "attention_backward_tc: head dim ", a.D, ", ld ", a.ld,
            " or a buffer's alignment is not one the tensor-core kernels take (D 64/96/128/256, ld % 8 == 0, 16-byte aligned)");
  with_tc_traits(a.D, [&](auto traits) {
    using Tr = decltype(traits);
    constexpr size_t kStatic = kTcBlockRows * (2 * sizeof(float) + sizeof(int));
    reserve_shared_memory("attention_backward_tc", attention_dkdv_tc_kernel<Tr>, Tr::kBwdShared, kStatic);
    launch_kernel(attention_dkdv_tc_kernel<Tr>, dim3(tc_tiles(a.N), a.KVH), kTcThreads, Tr::kBwdShared, stream, a, qkv, dqkv,
                  dout, lse, delta);
    reserve_shared_memory("attention_backward_tc", attention_dq_tc_kernel<Tr>, Tr::kBwdShared, 0);
    launch_kernel(attention_dq_tc_kernel<Tr>, dim3(tc_tiles(a.N), a.H), kTcThreads, Tr::kBwdShared, stream, a, qkv, dqkv, dout,
                  lse, delta);
  });
}

IFT_KERNELS_END
