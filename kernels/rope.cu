// RoPE, Hugging Face rotate_half form, in place: dim j of a head pairs with dim j + D/2 and the pair
// turns by positions[n] * theta^(-2j/D); the backward turns the gradient back by the same angle.
// Storage float or bf16, arithmetic fp32. The cos and sin come from a per-model table computed in
// double and rounded once (an fp32 angle at position 1000 is already off by ~6e-5 rad), so no
// thread evaluates pow, sin or cos.
#include "kernels/rope.h"

#include <algorithm>

#include "kernels/common.cuh"

IFT_KERNELS_BEGIN

constexpr int kRopeThreads = 256;
constexpr int kRopeMaxHeadDim = 256;

// Grid-stride over (row, head, pack of K pairs): a thread loads K values of each half of a head
// (16-byte packs where the layout allows, K = 1 otherwise) and the K cosines and sines of its
// pairs from the position's table row, rotates them and stores them back. sign is +1 (forward) or
// -1 (backward: the inverse rotation).
template <int K, class T>
static __global__ void rope_kernel(T* g_x,                     // (N, ld): heads*D rotated
                                   const int32_t* g_positions,  // (N)
                                   const float* g_table,        // (P, D) cos, then sin
                                   const RopeArgs a, float sign) {
  const int half = a.D / 2, packs = half / K;
  const int64_t items = int64_t(a.N) * a.heads * packs;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t it = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; it < items; it += stride) {
    const int j = static_cast<int>(it % packs) * K;
    const int64_t nh = it / packs;
    const int h = static_cast<int>(nh % a.heads);
    const int64_t n = nh / a.heads;
    T* g_head = g_x + n * a.ld + int64_t(h) * a.D;
    const int position = g_positions[n];
    float r_a[K], r_b[K];
    if (position < 0 || position >= a.P) {
      for (int k = 0; k < K; ++k) r_a[k] = r_b[k] = __int_as_float(0x7fc00000);  // quiet NaN
    } else {
      const float* g_t = g_table + int64_t(position) * a.D;
      float r_cos[K], r_sin[K];
      load_floats(r_cos, g_t + j);
      load_floats(r_sin, g_t + half + j);
      load_floats(r_a, g_head + j);
      load_floats(r_b, g_head + half + j);
      for (int k = 0; k < K; ++k) {
        const float x = r_a[k], y = r_b[k], s = sign * r_sin[k];
        r_a[k] = x * r_cos[k] - y * s;
        r_b[k] = y * r_cos[k] + x * s;
      }
    }
    store_floats(g_head + j, r_a);
    store_floats(g_head + half + j, r_b);
  }
}

// ---- launchers ----------------------------------------------------------------------------------

static void check_rope(const char* op, const void* x, const int32_t* positions, const float* table, const RopeArgs& a) {
  IFT_CHECK(a.N >= 0, op, ": N (rows) must be >= 0, got ", a.N);
  IFT_CHECK(a.heads >= 1, op, ": heads must be >= 1, got ", a.heads);
  IFT_CHECK(a.D >= 2 && a.D <= kRopeMaxHeadDim && a.D % 2 == 0, op, ": head dim D must be even and in [2, ",
            kRopeMaxHeadDim, "], got ", a.D);
  IFT_CHECK(static_cast<int64_t>(a.ld) >= static_cast<int64_t>(a.heads) * a.D, op, ": row stride ld = ", a.ld,
            " is smaller than heads * D = ", static_cast<int64_t>(a.heads) * a.D);
  IFT_CHECK(a.P >= 1, op, ": the cos/sin table needs at least one position, P = ", a.P);
  IFT_CHECK(a.N == 0 || (x != nullptr && positions != nullptr && table != nullptr), op,
            ": x, positions and table must not be null");
}

template <class T>
static void launch_rope(const char* op, T* x, const int32_t* positions, const float* table, const RopeArgs& a,
                        float sign, cudaStream_t stream) {
  check_rope(op, x, positions, table, a);
  if (a.N == 0) return;
  // 16-byte packs of x and of the table (K a multiple of 4 floats): every head half starts on one
  // when D/2 and ld are multiples of the pack and x is aligned (the table then is too: D % 8 == 0).
  constexpr int K = Pack128<T>::kSize;
  const bool vec = (a.D / 2) % K == 0 && a.ld % K == 0 && aligned16(x) && aligned16(table);
  const int64_t items = int64_t(a.N) * a.heads * (vec ? a.D / 2 / K : a.D / 2);
  const unsigned blocks = static_cast<unsigned>(std::clamp<int64_t>((items + kRopeThreads - 1) / kRopeThreads, 1, 16384));
  if (vec)
    launch_kernel(rope_kernel<K, T>, blocks, kRopeThreads, 0, stream, x, positions, table, a, sign);
  else
    launch_kernel(rope_kernel<1, T>, blocks, kRopeThreads, 0, stream, x, positions, table, a, sign);
}

void rope_forward(float* x, const int32_t* positions, const float* table, const RopeArgs& a, cudaStream_t stream) {
  launch_rope("rope_forward", x, positions, table, a, 1.0f, stream);
}

void rope_forward(bf16* x, const int32_t* positions, const float* table, const RopeArgs& a, cudaStream_t stream) {
  launch_rope("rope_forward", x, positions, table, a, 1.0f, stream);
}

void rope_backward(float* dx, const int32_t* positions, const float* table, const RopeArgs& a, cudaStream_t stream) {
  launch_rope("rope_backward", dx, positions, table, a, -1.0f, stream);
}

void rope_backward(bf16* dx, const int32_t* positions, const float* table, const RopeArgs& a, cudaStream_t stream) {
  launch_rope("rope_backward", dx, positions, table, a, -1.0f, stream);
}

IFT_KERNELS_END
