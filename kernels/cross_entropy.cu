// Masked cross-entropy fused with its gradient (kernels/cross_entropy.h). The loss is written (=),
// the gradient is written (=) over the logits when asked to work in place. Two launches:
//   1. row:      one block per row, two passes over it. Pass 1 reads the row with 128-bit loads (8
//                bf16 or 4 floats a thread) into an online (max, sum) pair in base 2: the logits are
//                scaled by log2(e) once, so each value costs one exp2 (the rescale of the running
//                sum happens once a pack, not once a value); one block reduction gives the row's
//                log-sum-exp. Pass 2 (skipped for the loss alone) reads the row again and writes
//                the gradient in place, 128 bits at a time. The target logit is read by thread 0
//                before the reductions' barriers, so before any in-place write;
//   2. loss sum: one block sums the row losses in a fixed order and divides by the normaliser.
// Nothing depends on the schedule: every sum is a fixed per-thread order and a fixed block tree.
// The earlier kernel (a grid of (row, 4096-column chunk) blocks, three launches, scalar loads) stays
// as cross_entropy_forward_baseline, which `ift bench kernels` times beside it.
#include "kernels/common.cuh"

#include <cmath>

#include "kernels/cross_entropy.h"

IFT_KERNELS_BEGIN

constexpr int kCeThreads = 256;  // threads of the baseline's partial and backward blocks (a multiple of 32)
constexpr int kCeSumThreads = 1024;

// ---- the baseline: (row, chunk) blocks, three launches ------------------------------------------------

// Online (max, sum) of one chunk: sum of exp(x - max) over the chunk, max its largest logit. A
// thread that saw nothing holds (-inf, 0), which contributes nothing when combined.
template <class T>
static __global__ void cross_entropy_partial_kernel(float2* __restrict__ g_partial,  // (N, chunks)
                                             const T* __restrict__ g_logits,  // (N, ld): V used
                                             const int32_t* __restrict__ g_targets, int V, int ld, int chunks) {
  const int row = blockIdx.x, chunk = blockIdx.y;
  // The whole block leaves together, before any barrier: rows that are not trained need no sums.
  if (g_targets[row] < 0) return;
  const T* g_row = g_logits + static_cast<size_t>(row) * ld;
  const int lo = chunk * kCrossEntropyChunk, hi = V - lo < kCrossEntropyChunk ? V : lo + kCrossEntropyChunk;
  float r_max = -INFINITY, r_sum = 0.0f;
  for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const float x = to_float(g_row[i]);
    if (x > r_max) {
      r_sum = r_sum * expf(r_max - x) + 1.0f;
      r_max = x;
    } else if (x != -INFINITY) {  // -inf adds nothing (and exp(-inf - -inf) would be NaN); NaN propagates
      r_sum += expf(x - r_max);
    }
  }
  const float b_max = block_reduce_max(r_max);
  const float b_sum = block_reduce_sum(r_sum == 0.0f ? 0.0f : r_sum * expf(r_max - b_max));
  if (threadIdx.x == 0) g_partial[static_cast<size_t>(row) * chunks + chunk] = make_float2(b_max, b_sum);
}

// Gradient of one chunk of one row and, from the block holding the target, the row's loss. With
// g_dlogits null the grid is (N, 1) and only the loss is computed.
template <class T>
static __global__ void cross_entropy_backward_kernel(T* g_dlogits,                               // (N, ld) or null; may be g_logits
                                              float* __restrict__ g_row_loss,             // (N)
                                              const T* g_logits,                          // (N, ld): V used
                                              const int32_t* __restrict__ g_targets,      // (N)
                                              const float2* __restrict__ g_partial,       // (N, chunks)
                                              int V, int ld, int chunks, float inv_normaliser) {
  const int row = blockIdx.x, chunk = blockIdx.y;
  const int t = g_targets[row];
  const T* g_row = g_logits + static_cast<size_t>(row) * ld;
  T* g_drow = g_dlogits ? g_dlogits + static_cast<size_t>(row) * ld : nullptr;
  const int lo = chunk * kCrossEntropyChunk, hi = V - lo < kCrossEntropyChunk ? V : lo + kCrossEntropyChunk;
  // The padding columns get a zero gradient from the last chunk's block, whatever they held.
  if (g_drow && chunk == chunks - 1)
    for (int i = V + threadIdx.x; i < ld; i += blockDim.x) g_drow[i] = from_float<T>(0.0f);

  if (t < 0 || t >= V) {
    // Not trained: zero loss and gradient. Out of the vocabulary: NaN, so the step is seen to fail.
    const float fill = t < 0 ? 0.0f : NAN;
    if (chunk == 0 && threadIdx.x == 0) g_row_loss[row] = fill;
    if (g_drow)
      for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) g_drow[i] = from_float<T>(fill);
    return;
  }

  // The row's logsumexp from its chunk pairs, in chunk order (every thread alike, so every block of
  // the row gets the same bits).
  const float2* g_pairs = g_partial + static_cast<size_t>(row) * chunks;
  float r_max = -INFINITY;
  for (int c = 0; c < chunks; ++c) r_max = fmaxf(r_max, g_pairs[c].x);
  float r_sum = 0.0f;
  for (int c = 0; c < chunks; ++c) {
    const float2 p = g_pairs[c];
    r_sum += p.y == 0.0f ? 0.0f : p.y * expf(p.x - r_max);
  }
  const float r_lse = r_max + logf(r_sum);

  if (!g_drow) {
    if (threadIdx.x == 0) g_row_loss[row] = r_lse - to_float(g_row[t]);
    return;
  }
  for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const float x = to_float(g_row[i]);
    const float p = expf(x - r_lse);
    if (i == t) {
      // The thread that overwrites the target logit is the one that reads it for the loss.
      g_row_loss[row] = r_lse - x;
      g_drow[i] = from_float<T>((p - 1.0f) * inv_normaliser);
    } else {
      g_drow[i] = from_float<T>(p * inv_normaliser);
    }
  }
}

// One block: loss = (sum of the N row losses) / normaliser, in a fixed order (each thread a fixed
// stride of rows, then the block tree), so the result does not depend on scheduling.
static __global__ void cross_entropy_loss_sum_kernel(float* __restrict__ g_loss, const float* __restrict__ g_row_loss, int N,
                                              float normaliser) {
  float r_sum = 0.0f;
  for (int i = threadIdx.x; i < N; i += blockDim.x) r_sum += g_row_loss[i];
  r_sum = block_reduce_sum(r_sum);
  if (threadIdx.x == 0) *g_loss = r_sum / normaliser;
}

// ---- the baseline's launcher ------------------------------------------------------------------------

static int cross_entropy_chunks(int V) { return static_cast<int>((static_cast<int64_t>(V) + kCrossEntropyChunk - 1) / kCrossEntropyChunk); }

template <class T>
static void launch_cross_entropy_baseline(float* loss, T* dlogits, const T* logits, const int32_t* targets, int N, int V,
                                          int ld, float normaliser, void* scratch, cudaStream_t stream) {
  const int chunks = cross_entropy_chunks(V);
  auto* partial = static_cast<float2*>(scratch);
  auto* row_loss = reinterpret_cast<float*>(partial + static_cast<size_t>(N) * chunks);
  launch_kernel(cross_entropy_partial_kernel<T>, dim3(N, chunks), kCeThreads, 0, stream, partial, logits, targets, V, ld, chunks);
  launch_kernel(cross_entropy_backward_kernel<T>, dim3(N, dlogits ? chunks : 1), kCeThreads, 0, stream, dlogits, row_loss,
                logits, targets, partial, V, ld, chunks, 1.0f / normaliser);
  launch_kernel(cross_entropy_loss_sum_kernel, 1, kCeSumThreads, 0, stream, loss, row_loss, N, normaliser);
}

// ---- the row kernel ------------------------------------------------------------------------------

constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// Adds the K values r (already scaled by log2(e)) to the running pair (m, s): s = sum of 2^(x - m)
// over what the thread has seen, m its largest scaled logit. A thread that saw only -inf (or
// nothing) keeps (-inf, 0); a NaN makes s NaN (fmaxf passes over it, exp2 does not).
template <int K>
__device__ __forceinline__ void online_add(float& m, float& s, const float (&r)[K]) {
  float mk = m;
  for (int k = 0; k < K; ++k) mk = fmaxf(mk, r[k]);
  if (mk == -INFINITY) return;
  float add = 0.0f;
  for (int k = 0; k < K; ++k) add += exp2f(r[k] - mk);
  s = s * exp2f(m - mk) + add;
  m = mk;
}

// One block per row. K: values a thread loads at once (the 16-byte pack, or 1 when the rows are not
// 16-byte aligned). g_dlogits null: the loss only.
template <int K, class T>
static __global__ void cross_entropy_row_kernel(T* g_dlogits,                           // (N, ld) or null; may be g_logits
                                                float* __restrict__ g_row_loss,         // (N)
                                                const T* g_logits,                      // (N, ld): V used
                                                const int32_t* __restrict__ g_targets,  // (N)
                                                CrossEntropyArgs a, float inv_normaliser) {
  const int V = a.V, ld = a.ld;
  const int row = blockIdx.x, t = g_targets[row];
  const T* g_row = g_logits + static_cast<size_t>(row) * ld;
  T* g_drow = g_dlogits ? g_dlogits + static_cast<size_t>(row) * ld : nullptr;
  const int stride = blockDim.x * K, Vk = V / K * K;  // [0, Vk) in packs, [Vk, V) one value a thread
  if (g_drow)  // the padding: a zero gradient, whatever it held
    for (int i = V + threadIdx.x; i < ld; i += blockDim.x) g_drow[i] = from_float<T>(0.0f);
  if (t < 0 || t >= V) {
    // Not trained: zero loss and gradient. Out of the vocabulary: NaN, so the step is seen to fail.
    const float fill = t < 0 ? 0.0f : NAN;
    if (threadIdx.x == 0) g_row_loss[row] = fill;
    if (g_drow)
      for (int i = threadIdx.x; i < V; i += blockDim.x) g_drow[i] = from_float<T>(fill);
    return;
  }
  // The target's scaled logit, rounded as pass 1 rounds it (a one-column row then has a loss of
  // exactly 0), read before any in-place write.
  const float xs_t = threadIdx.x == 0 ? to_float(g_row[t]) * kLog2e : 0.0f;

  float m = -INFINITY, s = 0.0f;
  for (int i = threadIdx.x * K; i < Vk; i += stride) {
    float r[K];
    load_floats<K>(r, g_row + i);
    for (int k = 0; k < K; ++k) r[k] *= kLog2e;
    online_add<K>(m, s, r);
  }
  for (int i = Vk + threadIdx.x; i < V; i += blockDim.x) {
    float r[1] = {to_float(g_row[i]) * kLog2e};
    online_add<1>(m, s, r);
  }
  const float b_max = block_reduce_max(m);
  const float b_sum = block_reduce_sum(s == 0.0f ? 0.0f : s * exp2f(m - b_max));
  const float lse2 = b_max + log2f(b_sum);  // log2 of the sum of exp(x)
  if (threadIdx.x == 0) g_row_loss[row] = (lse2 - xs_t) * kLn2;
  if (!g_drow) return;

  for (int i = threadIdx.x * K; i < Vk; i += stride) {
    float r[K];
    load_floats<K>(r, g_row + i);
    for (int k = 0; k < K; ++k) {
      const float p = exp2f(r[k] * kLog2e - lse2);
      r[k] = (i + k == t ? p - 1.0f : p) * inv_normaliser;
    }
    store_floats<K>(g_drow + i, r);
  }
  for (int i = Vk + threadIdx.x; i < V; i += blockDim.x) {
    const float p = exp2f(to_float(g_row[i]) * kLog2e - lse2);
    g_drow[i] = from_float<T>((i == t ? p - 1.0f : p) * inv_normaliser);
  }
}

// Threads of a row block: a function of V and the pack alone (so of nothing the schedule sets),
// enough that each thread loads about four packs, from one warp to 1024 threads.
static int cross_entropy_row_threads(int V, int K) {
  int threads = 32;
  while (threads < 1024 && int64_t(threads) * K * 4 < V) threads *= 2;
  return threads;
}

template <class T>
static void launch_cross_entropy(const CrossEntropyArgs& a, float* loss, T* dlogits, const T* logits,
                                 const int32_t* targets, float normaliser, void* scratch, cudaStream_t stream) {
  constexpr int P = Pack128<T>::kSize;
  auto* row_loss = static_cast<float*>(scratch);
  const bool packed = a.ld % P == 0 && aligned16(logits) && (!dlogits || aligned16(dlogits));
  if (packed)
    launch_kernel(cross_entropy_row_kernel<P, T>, a.N, cross_entropy_row_threads(a.V, P), 0, stream, dlogits, row_loss,
                  logits, targets, a, 1.0f / normaliser);
  else
    launch_kernel(cross_entropy_row_kernel<1, T>, a.N, cross_entropy_row_threads(a.V, 1), 0, stream, dlogits, row_loss,
                  logits, targets, a, 1.0f / normaliser);
  launch_kernel(cross_entropy_loss_sum_kernel, 1, kCeSumThreads, 0, stream, loss, row_loss, a.N, normaliser);
}

static bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

template <class T>
static void cross_entropy_checked(const CrossEntropyArgs& a, float* loss, T* dlogits, const T* logits,
                                  const int32_t* targets, void* scratch, size_t scratch_bytes, cudaStream_t stream,
                                  bool baseline) {
  const int N = a.N, V = a.V, ld = a.ld;
  const float normaliser = static_cast<float>(a.normaliser);  // all arithmetic is fp32: rounded once
  IFT_CHECK(N > 0 && V > 0, "cross_entropy_forward: logits must be (N, V) with N, V > 0, got (", N, ", ", V, ")");
  IFT_CHECK(ld >= V, "cross_entropy_forward: the row stride ld = ", ld, " is smaller than V = ", V);
  IFT_CHECK(cross_entropy_chunks(V) <= 65535, "cross_entropy_forward: V = ", V, " needs more than 65535 chunks of ",
            kCrossEntropyChunk);
  IFT_CHECK(normaliser > 0.0f && std::isfinite(normaliser),
            "cross_entropy_forward: normaliser must be positive and finite, got ", normaliser);
  IFT_CHECK(loss != nullptr, "cross_entropy_forward: loss is null");
  IFT_CHECK(logits != nullptr, "cross_entropy_forward: logits is null");
  IFT_CHECK(targets != nullptr, "cross_entropy_forward: targets is null");
  IFT_CHECK(scratch != nullptr, "cross_entropy_forward: scratch is null");
  IFT_CHECK(reinterpret_cast<uintptr_t>(scratch) % alignof(float2) == 0, "cross_entropy_forward: scratch must be ",
            alignof(float2), "-byte aligned");
  const size_t need = baseline ? cross_entropy_baseline_scratch_bytes(N, V) : cross_entropy_scratch_bytes(N, V);
  IFT_CHECK(scratch_bytes >= need, "cross_entropy_forward: scratch holds ", scratch_bytes, " bytes, (N, V) = (", N, ", ",
            V, ") needs ", need, baseline ? " (cross_entropy_baseline_scratch_bytes)" : " (cross_entropy_scratch_bytes)");
  const size_t logit_bytes = static_cast<size_t>(N) * ld * sizeof(T);
  IFT_CHECK(dlogits == nullptr || dlogits == logits || !overlaps(dlogits, logit_bytes, logits, logit_bytes),
            "cross_entropy_forward: dlogits partly overlaps logits (it must be logits itself or apart from it)");
  IFT_CHECK(!overlaps(scratch, need, logits, logit_bytes) && (!dlogits || !overlaps(scratch, need, dlogits, logit_bytes)),
            "cross_entropy_forward: scratch overlaps the logits");
  if (baseline)
    launch_cross_entropy_baseline(loss, dlogits, logits, targets, N, V, ld, normaliser, scratch, stream);
  else
    launch_cross_entropy(a, loss, dlogits, logits, targets, normaliser, scratch, stream);
}

size_t cross_entropy_scratch_bytes(int N, int V) {
  if (N <= 0 || V <= 0) return 0;
  return static_cast<size_t>(N) * sizeof(float);
}

size_t cross_entropy_baseline_scratch_bytes(int N, int V) {
  if (N <= 0 || V <= 0) return 0;
  return static_cast<size_t>(N) * cross_entropy_chunks(V) * sizeof(float2) + static_cast<size_t>(N) * sizeof(float);
}

void cross_entropy_forward(const CrossEntropyArgs& args, float* loss, float* dlogits, const float* logits,
                           const int32_t* targets, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  cross_entropy_checked(args, loss, dlogits, logits, targets, scratch, scratch_bytes, stream, false);
}

void cross_entropy_forward(const CrossEntropyArgs& args, float* loss, bf16* dlogits, const bf16* logits,
                           const int32_t* targets, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  cross_entropy_checked(args, loss, dlogits, logits, targets, scratch, scratch_bytes, stream, false);
}

void cross_entropy_forward_baseline(const CrossEntropyArgs& args, float* loss, float* dlogits, const float* logits,
                                    const int32_t* targets, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  cross_entropy_checked(args, loss, dlogits, logits, targets, scratch, scratch_bytes, stream, true);
}

void cross_entropy_forward_baseline(const CrossEntropyArgs& args, float* loss, bf16* dlogits, const bf16* logits,
                                    const int32_t* targets, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  cross_entropy_checked(args, loss, dlogits, logits, targets, scratch, scratch_bytes, stream, true);
}

IFT_KERNELS_END
