// Elementwise and embedding kernels (declared in kernels/elementwise.h): embedding lookup and its
// scatter-add, GELU (tanh), SwiGLU, residual add, bias gradient, casts. Storage is float or bf16,
// arithmetic fp32. Activation gradients are written (=); parameter gradients (fp32) accumulate (+=)
// in a fixed order, without atomics, so they are bitwise reproducible.
#include "kernels/common.cuh"
#include "kernels/elementwise.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

IFT_KERNELS_BEGIN

namespace {

// The widest vector that covers whole 16-byte packs of every type involved: 8 when a bf16 is
// among them, 4 for floats only.
template <class... Ts>
constexpr int vector_width() {
  return std::max({Pack128<Ts>::kSize...});
}

// Grid of a grid-stride loop over `items` with `threads` a block: enough blocks to fill a large
// GPU several times over, no more (each thread then loops).
unsigned grid_for(int64_t items, int threads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, 16384));
}

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCube = 0.044715f;

// Ops of the generic map kernel: out = apply(a, b), with b unused by one-input ops.
struct GeluForwardOp {
  static constexpr int kInputs = 1;
  __device__ __forceinline__ static float apply(float x, float) {
    return 0.5f * x * (1.0f + tanhf(kGeluScale * (x + kGeluCube * x * x * x)));
  }
};
struct GeluBackwardOp {  // a = inp, b = dout
  static constexpr int kInputs = 2;
  __device__ __forceinline__ static float apply(float x, float d) {
    const float t = tanhf(kGeluScale * (x + kGeluCube * x * x * x));
    const float dt = (1.0f - t * t) * kGeluScale * (1.0f + 3.0f * kGeluCube * x * x);
    return d * (0.5f * (1.0f + t) + 0.5f * x * dt);
  }
};
struct AddOp {
  static constexpr int kInputs = 2;
  __device__ __forceinline__ static float apply(float a, float b) { return a + b; }
};
struct CastOp {
  static constexpr int kInputs = 1;
  __device__ __forceinline__ static float apply(float a, float) { return a; }
};

}  // namespace

// ---- kernels ------------------------------------------------------------------------------------

// Grid-stride over packs of K values. out may alias an input: each value is read and written by
// the same thread, read first.
template <int K, class Op, class TOut, class TA, class TB>
static __global__ void map_kernel(TOut* g_out, const TA* g_a, const TB* g_b, int64_t n_packs) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_packs; i += stride) {
    float r_a[K], r_b[K], r_out[K];
    load_floats(r_a, g_a + i * K);
    if constexpr (Op::kInputs == 2) {
      load_floats(r_b, g_b + i * K);
    } else {
      for (int k = 0; k < K; ++k) r_b[k] = 0.0f;
    }
    for (int k = 0; k < K; ++k) r_out[k] = Op::apply(r_a[k], r_b[k]);
    store_floats(g_out + i * K, r_out);
  }
}

// One block per row; threads stride over packs of K columns.
template <int K, class T>
static __global__ void embedding_forward_kernel(T* g_out, const int32_t* g_tokens, const int32_t* g_positions,
                                                const T* g_wte, const T* g_wpe, const EmbeddingArgs a) {
  const int C = a.C, V = a.V, P = a.P;
  const int64_t n = blockIdx.x;
  const int token = g_tokens[n];
  const int position = g_wpe ? g_positions[n] : 0;
  const bool valid = token >= 0 && token < V && (!g_wpe || (position >= 0 && position < P));
  const T* g_e = g_wte + static_cast<int64_t>(valid ? token : 0) * C;
  const T* g_p = g_wpe ? g_wpe + static_cast<int64_t>(valid ? position : 0) * C : nullptr;
  T* g_o = g_out + n * C;
  for (int i = threadIdx.x; i < C / K; i += blockDim.x) {
    float r_v[K];
    if (valid) {
      load_floats(r_v, g_e + i * K);
      if (g_p) {
        float r_p[K];
        load_floats(r_p, g_p + i * K);
        for (int k = 0; k < K; ++k) r_v[k] += r_p[k];
      }
      for (int k = 0; k < K; ++k) r_v[k] *= a.scale;  // exact for the scale 1 of every family but Gemma
    } else {
      for (int k = 0; k < K; ++k) r_v[k] = __int_as_float(0x7fc00000);  // quiet NaN
    }
    store_floats(g_o + i * K, r_v);
  }
}

// Block (b, y) adds the rows of bucket b (one id, its rows in increasing order: embedding_buckets)
// to pack y * blockDim.x + threadIdx.x of that id's row of the table: every sum in row order
// whatever the schedule (deterministic, no atomics, the CPU reference's order and roundings), and
// as many workers as there are (id, channel slice) pairs. Blocks past the bucket count (the grid
// is sized for N buckets, the most there can be) return at once.
template <int K, class T>
static __global__ void embedding_backward_kernel(float* g_table, const T* g_dout, const int32_t* g_count,
                                                 const int32_t* g_ids, const int32_t* g_starts, const int32_t* g_rows,
                                                 const EmbeddingArgs a) {
  const int b = blockIdx.x;
  if (b >= *g_count) return;  // no barrier in this kernel
  const int i = blockIdx.y * blockDim.x + threadIdx.x;
  if (i >= a.C / K) return;
  const int c = i * K;
  float* g_e = g_table + static_cast<int64_t>(g_ids[b]) * a.C + c;
  float r_acc[K];
  load_floats(r_acc, g_e);
  for (int r = g_starts[b]; r < g_starts[b + 1]; ++r) {
    float r_d[K];
    load_floats(r_d, g_dout + static_cast<int64_t>(g_rows[r]) * a.C + c);
    // scale * dout added with one rounding (exactly dout's for the scale 1 of every family but Gemma)
    for (int k = 0; k < K; ++k) r_acc[k] = fmaf(r_d[k], a.scale, r_acc[k]);
  }
  store_floats(g_e, r_acc);
}

// The gate's activation and its derivative.
__device__ __forceinline__ float glu_act(GluActivation act, float x) {
  if (act == GluActivation::silu) return x / (1.0f + expf(-x));
  return GeluForwardOp::apply(x, 0.0f);
}
__device__ __forceinline__ float glu_act_grad(GluActivation act, float x) {
  if (act == GluActivation::silu) {
    const float sig = 1.0f / (1.0f + expf(-x));
    return sig * (1.0f + x * (1.0f - sig));
  }
  return GeluBackwardOp::apply(x, 1.0f);
}

// Grid-stride over packs of K columns of out (N, F); gate and up are the two halves of a row of inp.
template <int K, class T>
static __global__ void glu_forward_kernel(T* g_out, const T* g_inp, const GluArgs a) {
  const int F = a.F, packs_per_row = F / K;
  const int64_t n_packs = static_cast<int64_t>(a.N) * packs_per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_packs; i += stride) {
    const int64_t n = i / packs_per_row;
    const int f = static_cast<int>(i % packs_per_row) * K;
    const T* g_gate = g_inp + n * 2 * F + f;
    float r_gate[K], r_up[K], r_out[K];
    load_floats(r_gate, g_gate);
    load_floats(r_up, g_gate + F);
    for (int k = 0; k < K; ++k) r_out[k] = glu_act(a.act, r_gate[k]) * r_up[k];
    store_floats(g_out + n * F + f, r_out);
  }
}

template <int K, class T>
static __global__ void glu_backward_kernel(T* g_dinp, const T* g_inp, const T* g_dout, const GluArgs a) {
  const int F = a.F, packs_per_row = F / K;
  const int64_t n_packs = static_cast<int64_t>(a.N) * packs_per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_packs; i += stride) {
    const int64_t n = i / packs_per_row;
    const int f = static_cast<int>(i % packs_per_row) * K;
    const int64_t in = n * 2 * F + f;
    float r_gate[K], r_up[K], r_d[K], r_dgate[K], r_dup[K];
    load_floats(r_gate, g_inp + in);
    load_floats(r_up, g_inp + in + F);
    load_floats(r_d, g_dout + n * F + f);
    for (int k = 0; k < K; ++k) {
      const float x = r_gate[k];
      r_dgate[k] = r_d[k] * r_up[k] * glu_act_grad(a.act, x);
      r_dup[k] = r_d[k] * glu_act(a.act, x);
    }
    store_floats(g_dinp + in, r_dgate);
    store_floats(g_dinp + in + F, r_dup);
  }
}

// First stage of a column reduction: block row blockIdx.y sums rows [y * rows_per_chunk, ...) of
// its packs of K columns, in row order, into g_partials[y] (gridDim.y, O). Coalesced: neighbouring
// threads read neighbouring columns of the same row.
template <int K, class T>
static __global__ void column_partial_sums_kernel(float* g_partials, const T* g_in, int N, int O,
                                                  int rows_per_chunk) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= O / K) return;  // no barrier in this kernel
  const int r0 = blockIdx.y * rows_per_chunk, r1 = r0 + rows_per_chunk < N ? r0 + rows_per_chunk : N;
  float r_acc[K];
  for (int k = 0; k < K; ++k) r_acc[k] = 0.0f;
  for (int r = r0; r < r1; ++r) {
    float r_v[K];
    load_floats(r_v, g_in + static_cast<int64_t>(r) * O + i * K);
    for (int k = 0; k < K; ++k) r_acc[k] += r_v[k];
  }
  store_floats(g_partials + static_cast<int64_t>(blockIdx.y) * O + i * K, r_acc);
}

// Second stage: a block of (32, kColumnSumLanes) threads covers 32 columns; lane y sums rows y,
// y + lanes, ... in order, then lane 0 adds the lanes' sums in order: the same association every
// run, whatever the schedule.
constexpr int kColumnSumLanes = 8;

static __global__ void column_sums_accumulate_kernel(float* g_out, const float* g_partials, int rows, int cols) {
  IFT_SHARED(float[kColumnSumLanes][32], s_sums);
  const int col = blockIdx.x * 32 + threadIdx.x;
  float r_sum = 0.0f;
  if (col < cols)
    for (int r = threadIdx.y; r < rows; r += kColumnSumLanes) r_sum += g_partials[static_cast<int64_t>(r) * cols + col];
  s_sums[threadIdx.y][threadIdx.x] = r_sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float r_total = 0.0f;
    for (int y = 0; y < kColumnSumLanes; ++y) r_total += s_sums[y][threadIdx.x];
    g_out[col] += r_total;
  }
}

// ---- launchers ----------------------------------------------------------------------------------

namespace {

constexpr int kThreads = 256;

template <class Op, class TOut, class TA, class TB>
void launch_map(TOut* out, const TA* a, const TB* b, int64_t n, cudaStream_t stream) {
  constexpr int V = vector_width<TOut, TA, TB>();
  const bool vec = n % V == 0 && aligned16(out) && aligned16(a) && (Op::kInputs == 1 || aligned16(b));
  if (vec) {
    launch_kernel(map_kernel<V, Op, TOut, TA, TB>, grid_for(n / V, kThreads), kThreads, 0, stream, out, a, b, n / V);
  } else {
    launch_kernel(map_kernel<1, Op, TOut, TA, TB>, grid_for(n, kThreads), kThreads, 0, stream, out, a, b, n);
  }
}

void check_flat(const char* op, int64_t n) { IFT_CHECK(n >= 0, op, ": negative element count n = ", n); }

// Rows of the column reductions each first-stage block sums, and how many blocks: at least 32 rows
// a chunk, at most 256 chunks. Depends on N only, so the result does not depend on the device.
int bias_rows_per_chunk(int N) {
  const int chunks = std::clamp((N + 31) / 32, 1, 256);
  return (N + chunks - 1) / chunks;
}
int bias_chunks(int N) {
  const int per = bias_rows_per_chunk(N);
  return (N + per - 1) / per;
}

}  // namespace

template <class T>
static void embedding_forward_impl(T* out, const int32_t* tokens, const int32_t* positions, const T* wte, const T* wpe,
                                   const EmbeddingArgs& a, cudaStream_t stream) {
  const int N = a.N, C = a.C, V = a.V, P = a.P;
  IFT_CHECK(std::isfinite(a.scale), "embedding_forward: scale = ", a.scale, " must be finite");
  IFT_CHECK(N > 0 && C > 0, "embedding_forward: empty shape N = ", N, ", C = ", C);
  IFT_CHECK(V > 0, "embedding_forward: vocabulary size V = ", V, " must be positive");
  IFT_CHECK(out && tokens && wte, "embedding_forward: out, tokens and wte must not be null");
  IFT_CHECK(!wpe || (positions && P > 0), "embedding_forward: wpe given without positions or with P = ", P);
  constexpr int K = Pack128<T>::kSize;
  const int threads = std::clamp((C / K + 31) / 32 * 32, 32, kThreads);
  if (C % K == 0 && aligned16(out) && aligned16(wte) && (!wpe || aligned16(wpe)))
    launch_kernel(embedding_forward_kernel<K, T>, N, threads, 0, stream, out, tokens, positions, wte, wpe, a);
  else
    launch_kernel(embedding_forward_kernel<1, T>, N, std::clamp((C + 31) / 32 * 32, 32, kThreads), 0, stream, out,
                  tokens, positions, wte, wpe, a);
}

namespace {

// The layout of embedding_buckets' output, in int32s: the two bucket counts, then for the tokens
// and then the positions: ids (N), starts (N + 1), rows (N).
struct BucketLayout {
  size_t ids, starts, rows;
  static BucketLayout of(int N, int which) {  // which: 0 tokens, 1 positions
    const size_t base = 2 + static_cast<size_t>(which) * (3 * size_t(N) + 1);
    return {base, base + N, base + 2 * size_t(N) + 1};
  }
};

}  // namespace

size_t embedding_buckets_ints(int N) {
  IFT_CHECK(N > 0, "embedding_buckets: empty shape N = ", N);
  return 2 + 2 * (3 * size_t(N) + 1);
}

void embedding_buckets(int32_t* buckets, const int32_t* tokens, const int32_t* positions, const EmbeddingArgs& a) {
  const int N = a.N;
  IFT_CHECK(N > 0 && a.C > 0, "embedding_buckets: empty shape N = ", N, ", C = ", a.C);
  IFT_CHECK(buckets && tokens, "embedding_buckets: buckets and tokens must not be null");
  IFT_CHECK(!positions || a.P > 0, "embedding_buckets: positions given with P = ", a.P);
  // Rows with an id out of range are left out of both tables (the forward filled them with NaN).
  std::vector<int32_t> rows;
  rows.reserve(N);
  for (int n = 0; n < N; ++n)
    if (tokens[n] >= 0 && tokens[n] < a.V && (!positions || (positions[n] >= 0 && positions[n] < a.P))) rows.push_back(n);
  for (int which = 0; which < 2; ++which) {
    const int32_t* ids = which == 0 ? tokens : positions;
    int32_t count = 0;
    if (ids) {
      // Stable: a bucket's rows stay in increasing order, the order the sums run in.
      std::vector<int32_t> order = rows;
      std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return ids[x] < ids[y]; });
      const BucketLayout l = BucketLayout::of(N, which);
      for (size_t r = 0; r < order.size(); ++r) {
        if (r == 0 || ids[order[r]] != ids[order[r - 1]]) {
          buckets[l.ids + count] = ids[order[r]];
          buckets[l.starts + count] = static_cast<int32_t>(r);
          ++count;
        }
        buckets[l.rows + r] = order[r];
      }
      buckets[l.starts + count] = static_cast<int32_t>(order.size());
    }
    buckets[which] = count;
  }
}

namespace {

template <class T>
void launch_embedding_backward(float* table, const T* dout, const int32_t* buckets, int which, const EmbeddingArgs& a,
                               cudaStream_t stream) {
  constexpr int K = vector_width<T, float>();
  constexpr int kBlock = 64;
  const BucketLayout l = BucketLayout::of(a.N, which);
  const int32_t *count = buckets + which, *ids = buckets + l.ids, *starts = buckets + l.starts, *rows = buckets + l.rows;
  if (a.C % K == 0 && aligned16(table) && aligned16(dout))
    launch_kernel(embedding_backward_kernel<K, T>, dim3(a.N, (a.C / K + kBlock - 1) / kBlock), kBlock, 0, stream, table,
                  dout, count, ids, starts, rows, a);
  else
    launch_kernel(embedding_backward_kernel<1, T>, dim3(a.N, (a.C + kBlock - 1) / kBlock), kBlock, 0, stream, table, dout,
                  count, ids, starts, rows, a);
}

}  // namespace

template <class T>
static void embedding_backward_impl(float* dwte, float* dwpe, const T* dout, const int32_t* buckets, const EmbeddingArgs& a,
                                    cudaStream_t stream) {
  const int N = a.N, C = a.C, V = a.V, P = a.P;
  IFT_CHECK(std::isfinite(a.scale), "embedding_backward: scale = ", a.scale, " must be finite");
  IFT_CHECK(N > 0 && C > 0, "embedding_backward: empty shape N = ", N, ", C = ", C);
  IFT_CHECK(V > 0, "embedding_backward: vocabulary size V = ", V, " must be positive");
  IFT_CHECK(dwte && dout && buckets, "embedding_backward: dwte, dout and buckets must not be null");
  IFT_CHECK(!dwpe || P > 0, "embedding_backward: dwpe given with P = ", P);
  IFT_CHECK(static_cast<int64_t>(C) <= 65535LL * 64, "embedding_backward: C = ", C, " is too large");
  launch_embedding_backward(dwte, dout, buckets, 0, a, stream);
  if (dwpe) launch_embedding_backward(dwpe, dout, buckets, 1, a, stream);
}

template <class T>
static void gelu_forward_impl(T* out, const T* inp, int64_t n, cudaStream_t stream) {
  check_flat("gelu_forward", n);
  if (n == 0) return;
  IFT_CHECK(out && inp, "gelu_forward: out and inp must not be null");
  launch_map<GeluForwardOp>(out, inp, inp, n, stream);
}

template <class T>
static void gelu_backward_impl(T* dinp, const T* inp, const T* dout, int64_t n, cudaStream_t stream) {
  check_flat("gelu_backward", n);
  if (n == 0) return;
  IFT_CHECK(dinp && inp && dout, "gelu_backward: dinp, inp and dout must not be null");
  launch_map<GeluBackwardOp>(dinp, inp, dout, n, stream);
}

template <class T>
static void residual_forward_impl(T* out, const T* a, const T* b, int64_t n, cudaStream_t stream) {
  check_flat("residual_forward", n);
  if (n == 0) return;
  IFT_CHECK(out && a && b, "residual_forward: out, a and b must not be null");
  launch_map<AddOp>(out, a, b, n, stream);
}

template <class To, class From>
static void cast_impl(To* out, const From* in, int64_t n, cudaStream_t stream) {
  check_flat("cast", n);
  if (n == 0) return;
  IFT_CHECK(out && in, "cast: out and in must not be null");
  launch_map<CastOp>(out, in, in, n, stream);
}

template <class T>
static void glu_forward_impl(T* out, const T* inp, const GluArgs& a, cudaStream_t stream) {
  IFT_CHECK(a.N > 0 && a.F > 0, "glu_forward: empty shape N = ", a.N, ", F = ", a.F);
  IFT_CHECK(out && inp, "glu_forward: out and inp must not be null");
  constexpr int K = Pack128<T>::kSize;
  if (a.F % K == 0 && aligned16(out) && aligned16(inp))
    launch_kernel(glu_forward_kernel<K, T>, grid_for(int64_t(a.N) * (a.F / K), kThreads), kThreads, 0, stream, out,
                  inp, a);
  else
    launch_kernel(glu_forward_kernel<1, T>, grid_for(int64_t(a.N) * a.F, kThreads), kThreads, 0, stream, out, inp, a);
}

template <class T>
static void glu_backward_impl(T* dinp, const T* inp, const T* dout, const GluArgs& a, cudaStream_t stream) {
  IFT_CHECK(a.N > 0 && a.F > 0, "glu_backward: empty shape N = ", a.N, ", F = ", a.F);
  IFT_CHECK(dinp && inp && dout, "glu_backward: dinp, inp and dout must not be null");
  constexpr int K = Pack128<T>::kSize;
  if (a.F % K == 0 && aligned16(dinp) && aligned16(inp) && aligned16(dout))
    launch_kernel(glu_backward_kernel<K, T>, grid_for(int64_t(a.N) * (a.F / K), kThreads), kThreads, 0, stream, dinp,
                  inp, dout, a);
  else
    launch_kernel(glu_backward_kernel<1, T>, grid_for(int64_t(a.N) * a.F, kThreads), kThreads, 0, stream, dinp, inp,
                  dout, a);
}

size_t bias_backward_scratch_floats(int N, int O) {
  IFT_CHECK(N > 0 && O > 0, "bias_backward: empty shape N = ", N, ", O = ", O);
  return static_cast<size_t>(bias_chunks(N)) * static_cast<size_t>(O);
}

template <class T>
static void bias_backward_impl(float* dbias, const T* dout, int N, int O, float* scratch, size_t scratch_floats,
                   cudaStream_t stream) {
  IFT_CHECK(N > 0 && O > 0, "bias_backward: empty shape N = ", N, ", O = ", O);
  IFT_CHECK(dbias && dout && scratch, "bias_backward: dbias, dout and scratch must not be null");
  const size_t need = bias_backward_scratch_floats(N, O);
  IFT_CHECK(scratch_floats >= need, "bias_backward: scratch holds ", scratch_floats, " floats, needs ", need,
            " (bias_backward_scratch_floats)");
  const int per = bias_rows_per_chunk(N), chunks = bias_chunks(N);
  constexpr int K = vector_width<T, float>();
  constexpr int kBlock = 128;
  if (O % K == 0 && aligned16(dout) && aligned16(scratch))
    launch_kernel(column_partial_sums_kernel<K, T>, dim3((O / K + kBlock - 1) / kBlock, chunks), kBlock, 0, stream,
                  scratch, dout, N, O, per);
  else
    launch_kernel(column_partial_sums_kernel<1, T>, dim3((O + kBlock - 1) / kBlock, chunks), kBlock, 0, stream, scratch,
                  dout, N, O, per);
  column_sums_accumulate(dbias, scratch, chunks, O, stream);
}

void column_sums_accumulate(float* out, const float* partials, int rows, int cols, cudaStream_t stream) {
  IFT_CHECK(rows > 0 && cols > 0, "column_sums_accumulate: empty shape rows = ", rows, ", cols = ", cols);
  IFT_CHECK(out && partials, "column_sums_accumulate: out and partials must not be null");
  launch_kernel(column_sums_accumulate_kernel, (cols + 31) / 32, dim3(32, kColumnSumLanes), 0, stream, out, partials,
                rows, cols);
}

// The public overloads (kernels/elementwise.h), one per storage type.
#define IFT_DEFINE_ELEMENTWISE(T)                                                                                     \
  void embedding_forward(T* out, const int32_t* tokens, const int32_t* positions, const T* wte, const T* wpe,       \
                         const EmbeddingArgs& a, cudaStream_t stream) {                                               \
    embedding_forward_impl(out, tokens, positions, wte, wpe, a, stream);                                              \
  }                                                                                                                   \
  void embedding_backward(float* dwte, float* dwpe, const T* dout, const int32_t* buckets, const EmbeddingArgs& a,  \
                          cudaStream_t stream) {                                                                      \
    embedding_backward_impl(dwte, dwpe, dout, buckets, a, stream);                                                    \
  }                                                                                                                   \
  void gelu_forward(T* out, const T* inp, int64_t n, cudaStream_t stream) { gelu_forward_impl(out, inp, n, stream); } \
  void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n, cudaStream_t stream) {                         \
    gelu_backward_impl(dinp, inp, dout, n, stream);                                                                   \
  }                                                                                                                   \
  void glu_forward(T* out, const T* inp, const GluArgs& a, cudaStream_t stream) {                                    \
    glu_forward_impl(out, inp, a, stream);                                                                            \
  }                                                                                                                   \
  void glu_backward(T* dinp, const T* inp, const T* dout, const GluArgs& a, cudaStream_t stream) {                   \
    glu_backward_impl(dinp, inp, dout, a, stream);                                                                    \
  }                                                                                                                   \
  void residual_forward(T* out, const T* a, const T* b, int64_t n, cudaStream_t stream) {                            \
    residual_forward_impl(out, a, b, n, stream);                                                                      \
  }                                                                                                                   \
  void bias_backward(float* dbias, const T* dout, int N, int O, float* scratch, size_t scratch_floats,               \
                     cudaStream_t stream) {                                                                           \
    bias_backward_impl(dbias, dout, N, O, scratch, scratch_floats, stream);                                          \
  }
IFT_DEFINE_ELEMENTWISE(float)
IFT_DEFINE_ELEMENTWISE(bf16)
#undef IFT_DEFINE_ELEMENTWISE

void cast(bf16* out, const float* in, int64_t n, cudaStream_t stream) { cast_impl(out, in, n, stream); }
void cast(float* out, const bf16* in, int64_t n, cudaStream_t stream) { cast_impl(out, in, n, stream); }

IFT_KERNELS_END
