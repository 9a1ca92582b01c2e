// RoPE, Hugging Face rotate_half form, in place: dim j of a head pairs with dim j + D/2 and the pair
// turns by positions[n] * theta^(-2j/D); the backward turns the gradient back by the same angle.
// Storage float or bf16, arithmetic fp32; the angles in double, like the CPU reference, because an
// fp32 angle at position 1000 is already off by ~6e-5 rad.
#include "kernels/rope.h"

#include "kernels/common.cuh"

IFT_KERNELS_BEGIN

constexpr int kRopeThreads = 128;
constexpr int kRopeMaxHeadDim = 256;

// One block per row: the block's threads first compute the row's D/2 cos/sin pairs (shared by all
// heads of the row), then rotate the heads*D/2 pairs of the row, one pair per thread at a time.
// sign is +1 (forward) or -1 (backward: the inverse rotation).
template <class T>
static __global__ void rope_kernel(T* __restrict__ g_x,                    // (N, ld): heads*D rotated
                                   const int32_t* __restrict__ g_positions,  // (N)
                                   int heads, int D, int ld, float theta, float sign) {
  IFT_SHARED(float[kRopeMaxHeadDim / 2], s_cos);
  IFT_SHARED(float[kRopeMaxHeadDim / 2], s_sin);
  const int n = blockIdx.x, half = D / 2;
  const double position = g_positions[n];
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const double angle = position * pow(static_cast<double>(theta), -2.0 * j / D);
    s_cos[j] = static_cast<float>(cos(angle));
    s_sin[j] = sign * static_cast<float>(sin(angle));
  }
  __syncthreads();
  T* g_row = g_x + static_cast<int64_t>(n) * ld;
  for (int p = threadIdx.x; p < heads * half; p += blockDim.x) {
    const int h = p / half, j = p % half;
    T* g_head = g_row + h * D;
    const float r_a = to_float(g_head[j]), r_b = to_float(g_head[j + half]);
    g_head[j] = from_float<T>(r_a * s_cos[j] - r_b * s_sin[j]);
    g_head[j + half] = from_float<T>(r_b * s_cos[j] + r_a * s_sin[j]);
  }
}

// launchers

static void check_rope(const char* op, const void* x, const int32_t* positions, int N, int heads, int D, int ld,
                       float theta) {
  IFT_CHECK(N >= 0, op, ": N (rows) must be >= 0, got ", N);
  IFT_CHECK(heads >= 1, op, ": heads must be >= 1, got ", heads);
  IFT_CHECK(D >= 2 && D <= kRopeMaxHeadDim && D % 2 == 0, op, ": head dim D must be even and in [2, ",
            kRopeMaxHeadDim, "], got ", D);
  IFT_CHECK(static_cast<int64_t>(ld) >= static_cast<int64_t>(heads) * D, op, ": row stride ld = ", ld,
            " is smaller than heads * D = ", static_cast<int64_t>(heads) * D);
  IFT_CHECK(theta > 0, op, ": theta must be > 0, got ", theta);
  IFT_CHECK(N == 0 || (x != nullptr && positions != nullptr), op, ": x and positions must not be null");
}

template <class T>
static void launch_rope(T* x, const int32_t* positions, int N, int heads, int D, int ld, float theta, float sign,
                        cudaStream_t stream) {
  if (N == 0) return;
  launch_kernel(rope_kernel<T>, static_cast<unsigned>(N), kRopeThreads, 0, stream, x, positions, heads, D, ld, theta,
                sign);
}

void rope_forward(float* x, const int32_t* positions, int N, int heads, int D, int ld, float theta,
                  cudaStream_t stream) {
  check_rope("rope_forward", x, positions, N, heads, D, ld, theta);
  launch_rope(x, positions, N, heads, D, ld, theta, 1.0f, stream);
}

void rope_forward(bf16* x, const int32_t* positions, int N, int heads, int D, int ld, float theta,
                  cudaStream_t stream) {
  check_rope("rope_forward", x, positions, N, heads, D, ld, theta);
  launch_rope(x, positions, N, heads, D, ld, theta, 1.0f, stream);
}

void rope_backward(float* dx, const int32_t* positions, int N, int heads, int D, int ld, float theta,
                   cudaStream_t stream) {
  check_rope("rope_backward", dx, positions, N, heads, D, ld, theta);
  launch_rope(dx, positions, N, heads, D, ld, theta, -1.0f, stream);
}

void rope_backward(bf16* dx, const int32_t* positions, int N, int heads, int D, int ld, float theta,
                   cudaStream_t stream) {
  check_rope("rope_backward", dx, positions, N, heads, D, ld, theta);
  launch_rope(dx, positions, N, heads, D, ld, theta, -1.0f, stream);
}

IFT_KERNELS_END
