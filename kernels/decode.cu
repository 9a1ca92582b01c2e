// Attention for decoding: one block per (new row, query head), over the KV cache. Decoding reads
// every cached key and value once per token, so it is bound by that read; the scores go through
// shared memory a tile of kDecodeThreads keys at a time (no buffer that grows with the context).
// Two passes over the keys: the row's max and softmax sum (each thread over its own keys, then one
// block reduction each), then the weighted sum of the values, tile by tile.
#include "kernels/decode.h"

#include "kernels/common.cuh"

IFT_KERNELS_BEGIN

constexpr int kDecodeThreads = 128;

template <class T>
static __device__ float decode_score(const T* g_q, const T* g_k, int D, float scale) {
  float r_dot = 0;
  for (int d = 0; d < D; ++d) r_dot += to_float(g_q[d]) * to_float(g_k[d]);
  return scale * r_dot;
}

template <class T>
static __global__ void attention_decode_kernel(T* __restrict__ g_out,            // (n, H*D)
                                               const T* __restrict__ g_q,        // (n, ldq)
                                               const T* __restrict__ g_k,        // (start + n, KVH*D)
                                               const T* __restrict__ g_v,        // (start + n, KVH*D)
                                               DecodeAttentionArgs p) {
  IFT_SHARED(float[kDecodeThreads], s_p);
  const int i = blockIdx.x / p.H, h = blockIdx.x % p.H, kvh = h / (p.H / p.KVH), ldkv = p.KVH * p.D;
  const int keys = p.start + i + 1;
  const T* g_qi = g_q + static_cast<int64_t>(i) * p.ldq + h * p.D;
  const T* g_kh = g_k + kvh * p.D;
  const T* g_vh = g_v + kvh * p.D;

  float r_max = -INFINITY;
  for (int j = threadIdx.x; j < keys; j += blockDim.x)
    r_max = fmaxf(r_max, decode_score(g_qi, g_kh + static_cast<int64_t>(j) * ldkv, p.D, p.scale));
  const float m = block_reduce_max(r_max);
  float r_sum = 0;
  for (int j = threadIdx.x; j < keys; j += blockDim.x)
    r_sum += expf(decode_score(g_qi, g_kh + static_cast<int64_t>(j) * ldkv, p.D, p.scale) - m);
  const float inv_sum = 1.0f / block_reduce_sum(r_sum);

  // Thread t owns output dims t, t + blockDim, ... (D <= 2 * kDecodeThreads).
  float r_acc[kDecodeMaxHeadDim / kDecodeThreads] = {};
  for (int tile = 0; tile < keys; tile += blockDim.x) {
    const int j = tile + threadIdx.x;
    s_p[threadIdx.x] =
        j < keys ? expf(decode_score(g_qi, g_kh + static_cast<int64_t>(j) * ldkv, p.D, p.scale) - m) * inv_sum : 0.0f;
    __syncthreads();
    const int count = keys - tile < static_cast<int>(blockDim.x) ? keys - tile : static_cast<int>(blockDim.x);
    for (int e = 0; e * blockDim.x + threadIdx.x < p.D; ++e) {
      const int d = e * blockDim.x + threadIdx.x;
      for (int jj = 0; jj < count; ++jj) r_acc[e] += s_p[jj] * to_float(g_vh[static_cast<int64_t>(tile + jj) * ldkv + d]);
    }
    __syncthreads();
  }
  T* g_o = g_out + (static_cast<int64_t>(i) * p.H + h) * p.D;
  for (int e = 0; e * blockDim.x + threadIdx.x < p.D; ++e) g_o[e * blockDim.x + threadIdx.x] = from_float<T>(r_acc[e]);
}

// launchers

static void check_decode(const void* out, const void* q, const void* k, const void* v, const DecodeAttentionArgs& p) {
  IFT_CHECK(p.n >= 1, "attention_decode: n (new rows) must be >= 1, got ", p.n);
  IFT_CHECK(p.start >= 0, "attention_decode: start must be >= 0, got ", p.start);
  IFT_CHECK(p.H >= 1 && p.KVH >= 1 && p.H % p.KVH == 0, "attention_decode: H (", p.H, ") must be a multiple of KVH (",
            p.KVH, ")");
  IFT_CHECK(p.D >= 1 && p.D <= kDecodeMaxHeadDim, "attention_decode: head dim D must be in [1, ", kDecodeMaxHeadDim,
            "], got ", p.D);
  IFT_CHECK(static_cast<int64_t>(p.ldq) >= static_cast<int64_t>(p.H) * p.D, "attention_decode: ldq = ", p.ldq,
            " is smaller than H * D = ", p.H * p.D);
  IFT_CHECK(p.scale > 0, "attention_decode: scale must be > 0, got ", p.scale);
  IFT_CHECK(out && q && k && v, "attention_decode: out, q, k_cache and v_cache must not be null");
}

template <class T>
static void launch_decode(T* out, const T* q, const T* k, const T* v, const DecodeAttentionArgs& p,
                          cudaStream_t stream) {
  check_decode(out, q, k, v, p);
  launch_kernel(attention_decode_kernel<T>, static_cast<unsigned>(p.n * p.H), kDecodeThreads, 0, stream, out, q, k, v,
                p);
}

void attention_decode(float* out, const float* q, const float* k_cache, const float* v_cache,
                      const DecodeAttentionArgs& p, cudaStream_t stream) {
  launch_decode(out, q, k_cache, v_cache, p, stream);
}

void attention_decode(bf16* out, const bf16* q, const bf16* k_cache, const bf16* v_cache,
                      const DecodeAttentionArgs& p, cudaStream_t stream) {
  launch_decode(out, q, k_cache, v_cache, p, stream);
}

IFT_KERNELS_END
