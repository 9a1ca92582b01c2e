// Softmax over the last dimension of a (rows, cols) fp32 matrix, one block per row: the example of
// a real kernel run by the emulator, and the one its speed is measured with (tests/kernels/simt_bench.cpp).
// Numerically stable (the row maximum is subtracted before exponentiating).
#include "kernels/common.cuh"
#include "tests/kernels/simt_kernels.h"

namespace ift::test {

static __global__ void softmax_rows_kernel(const float* __restrict__ g_in, float* __restrict__ g_out, int cols) {
  const float* g_row = g_in + static_cast<size_t>(blockIdx.x) * cols;
  float* g_out_row = g_out + static_cast<size_t>(blockIdx.x) * cols;
  float r_max = -INFINITY;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) r_max = fmaxf(r_max, g_row[j]);
  r_max = block_reduce_max(r_max);
  float r_sum = 0.0f;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) r_sum += expf(g_row[j] - r_max);
  const float r_inv = 1.0f / block_reduce_sum(r_sum);
  for (int j = threadIdx.x; j < cols; j += blockDim.x) g_out_row[j] = expf(g_row[j] - r_max) * r_inv;
}

// launchers

void softmax_rows(const float* in, float* out, int rows, int cols, cudaStream_t stream) {
  IFT_CHECK(rows > 0 && cols > 0, "softmax_rows: empty matrix (", rows, " x ", cols, ")");
  launch_kernel(softmax_rows_kernel, rows, 256, 0, stream, in, out, cols);
}

}  // namespace ift::test
