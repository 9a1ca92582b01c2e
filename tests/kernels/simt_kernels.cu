// Kernels that test the SIMT emulator: each builtin in isolation, and broken kernels that each
// emulator check must catch. Compiled over the emulator for test_kernels and by nvcc in the CUDA
// build (which only checks that they are valid CUDA).
#include "tests/kernels/simt_kernels.h"

#include "kernels/common.cuh"

namespace ift::test {

static __device__ __forceinline__ int global_linear_thread() {
  const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  return block * (blockDim.x * blockDim.y * blockDim.z) + thread;
}

static __global__ void write_indices_kernel(int* g_out) {
  int* r_out = g_out + 12 * global_linear_thread();
  const unsigned values[12] = {threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z,
                               blockDim.x,  blockDim.y,  blockDim.z,  gridDim.x,  gridDim.y,  gridDim.z};
  for (int i = 0; i < 12; ++i) r_out[i] = static_cast<int>(values[i]);
}

static __global__ void shuffle_kernel(ShuffleKind kind, const int* g_in, int* g_out, int arg, int width) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int r_x = g_in[i];
  int r_y = 0;
  switch (kind) {
    case ShuffleKind::idx: r_y = __shfl_sync(kFullMask, r_x, arg, width); break;
    case ShuffleKind::up: r_y = __shfl_up_sync(kFullMask, r_x, arg, width); break;
    case ShuffleKind::down: r_y = __shfl_down_sync(kFullMask, r_x, arg, width); break;
    case ShuffleKind::xor_: r_y = __shfl_xor_sync(kFullMask, r_x, arg, width); break;
  }
  g_out[i] = r_y;
}

static __global__ void vote_kernel(const int* g_pred, unsigned* g_ballot, int* g_any, int* g_all, int* g_popc, int* g_ffs) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int r_pred = g_pred[i];
  const unsigned r_ballot = __ballot_sync(kFullMask, r_pred);
  g_ballot[i] = r_ballot;
  g_any[i] = __any_sync(kFullMask, r_pred);
  g_all[i] = __all_sync(kFullMask, r_pred);
  g_popc[i] = __popc(r_ballot);
  g_ffs[i] = __ffs(static_cast<int>(r_ballot));
}

static __global__ void block_reduce_kernel(const float* g_in, float* g_sums, float* g_maxes, int per_block) {
  const float* g_row = g_in + static_cast<size_t>(blockIdx.x) * per_block;
  const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int nthreads = blockDim.x * blockDim.y * blockDim.z;
  float r_sum = 0.0f, r_max = -INFINITY;
  for (int j = tid; j < per_block; j += nthreads) {
    r_sum += g_row[j];
    r_max = fmaxf(r_max, g_row[j]);
  }
  r_sum = block_reduce_sum(r_sum);
  r_max = block_reduce_max(r_max);
  if (tid == 0) {
    g_sums[blockIdx.x] = r_sum;
    g_maxes[blockIdx.x] = r_max;
  }
}

static __global__ void atomics_kernel(const int* g_keys, const float* g_vals, int n, float* g_sums, int* g_counts, int* g_max_key,
                                      float* g_max_val) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int key = g_keys[i];
  atomicAdd(&g_sums[key], g_vals[i]);
  atomicAdd(&g_counts[key], 1);
  atomicMax(g_max_key, key);
  // A float max through compare-and-swap on the bits, the usual pattern for types without atomicMax.
  unsigned* g_bits = reinterpret_cast<unsigned*>(g_max_val);
  unsigned old = atomicAdd(g_bits, 0u);  // an atomic read: a plain one would race with the CAS of other threads
  while (__uint_as_float(old) < g_vals[i]) {
    const unsigned seen = atomicCAS(g_bits, old, __float_as_uint(g_vals[i]));
    if (seen == old) break;
    old = seen;
  }
}

static __global__ void reverse_rows_kernel(const float* g_in, float* g_out, int cols) {
  IFT_DYNAMIC_SHARED(float, s_row);
  const float* g_row = g_in + static_cast<size_t>(blockIdx.x) * cols;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) s_row[j] = g_row[j];
  __syncthreads();
  for (int j = threadIdx.x; j < cols; j += blockDim.x) g_out[static_cast<size_t>(blockIdx.x) * cols + j] = s_row[cols - 1 - j];
}

static __global__ void math_kernel(const float* g_in, float* g_out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = g_in[i];
  float* r_out = g_out + 14 * i;
  r_out[0] = __expf(x);
  r_out[1] = rsqrtf(fabsf(x) + 1.0f);
  r_out[2] = __fdividef(x, 3.0f);
  r_out[3] = __frcp_rn(x + 10.0f);
  r_out[4] = tanhf(x);
  r_out[5] = __bfloat162float(__float2bfloat16(x));
  r_out[6] = to_float(from_float<bf16>(x));
  r_out[7] = __logf(fabsf(x) + 1.0f);
  r_out[8] = __powf(fabsf(x), 1.5f);
  r_out[9] = __sinf(x) + __cosf(x);
  r_out[10] = __fsqrt_rn(fabsf(x));
  r_out[11] = __fmaf_rn(x, 2.0f, 1.0f);
  r_out[12] = __saturatef(x);
  r_out[13] = __ldg(g_in + i);
}

static __global__ void neighbour_sum_kernel(const int* g_in, int* g_out, bool with_barrier) {
  IFT_DYNAMIC_SHARED(int, s_x);
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  s_x[threadIdx.x] = g_in[i];
  if (with_barrier) __syncthreads();
  g_out[i] = s_x[threadIdx.x] + (threadIdx.x > 0 ? s_x[threadIdx.x - 1] : 0);
}

static __global__ void divergent_barrier_kernel(int* g_out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  g_out[threadIdx.x] = 1;
}

static __global__ void exit_before_barrier_kernel(int* g_out) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  g_out[threadIdx.x] = 1;
}

static __global__ void shuffle_mask_mismatch_kernel(int* g_out) {
  const int lane = threadIdx.x % 32;
  const unsigned mask = lane < 16 ? 0x0000ffffu : kFullMask;
  g_out[threadIdx.x] = __shfl_xor_sync(mask, lane, 1);
}

static __global__ void barrier_in_warp_divergence_kernel(int* g_out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    g_out[threadIdx.x] = __shfl_down_sync(kFullMask, static_cast<int>(threadIdx.x), 1);
    __syncthreads();
  }
}

static __global__ void shuffle_outside_mask_kernel(int* g_out) {
  const int lane = threadIdx.x % 32;
  if (lane < 16) g_out[lane] = __shfl_sync(0x0000ffffu, lane, lane == 3 ? 20 : 0);
}

static __global__ void misaligned_load_kernel(const float* g_in, float* g_out) {
  const Pack128<float> r_v = load128(g_in + 1);
  g_out[threadIdx.x] = r_v[0];
}

static __global__ void block_size_kernel(int* g_out) { g_out[threadIdx.x] = 1; }

// launchers

void simt_write_indices(dim3 grid, dim3 block, int* out) { launch_kernel(write_indices_kernel, grid, block, 0, nullptr, out); }

void simt_shuffle(ShuffleKind kind, const int* in, int* out, int n, int block, int arg, int width) {
  launch_kernel(shuffle_kernel, n / block, block, 0, nullptr, kind, in, out, arg, width);
}

void simt_vote(const int* pred, unsigned* ballot, int* any, int* all, int* popc, int* ffs, int n, int block) {
  launch_kernel(vote_kernel, n / block, block, 0, nullptr, pred, ballot, any, all, popc, ffs);
}

void simt_block_reduce(const float* in, float* sums, float* maxes, int per_block, int blocks, dim3 block) {
  launch_kernel(block_reduce_kernel, blocks, block, 0, nullptr, in, sums, maxes, per_block);
}

void simt_atomics(const int* keys, const float* vals, int n, float* sums, int* counts, int* max_key, float* max_val) {
  const int block = 128;
  launch_kernel(atomics_kernel, (n + block - 1) / block, block, 0, nullptr, keys, vals, n, sums, counts, max_key, max_val);
}

void simt_reverse_rows(const float* in, float* out, int rows, int cols) {
  launch_kernel(reverse_rows_kernel, rows, 64, cols * sizeof(float), nullptr, in, out, cols);
}

void simt_math(const float* in, float* out, int n) { launch_kernel(math_kernel, (n + 63) / 64, 64, 0, nullptr, in, out, n); }

void simt_neighbour_sum(const int* in, int* out, int n, int block, bool with_barrier) {
  launch_kernel(neighbour_sum_kernel, n / block, block, block * sizeof(int), nullptr, in, out, with_barrier);
}

void simt_divergent_barrier(int* out) { launch_kernel(divergent_barrier_kernel, 1, 64, 0, nullptr, out); }
void simt_exit_before_barrier(int* out) { launch_kernel(exit_before_barrier_kernel, 1, 64, 0, nullptr, out); }
void simt_shuffle_mask_mismatch(int* out) { launch_kernel(shuffle_mask_mismatch_kernel, 1, 32, 0, nullptr, out); }
void simt_barrier_in_warp_divergence(int* out) { launch_kernel(barrier_in_warp_divergence_kernel, 1, 32, 0, nullptr, out); }
void simt_shuffle_outside_mask(int* out) { launch_kernel(shuffle_outside_mask_kernel, 1, 32, 0, nullptr, out); }
void simt_misaligned_load(const float* in, float* out) { launch_kernel(misaligned_load_kernel, 1, 32, 0, nullptr, in, out); }
void simt_launch_block(int threads, int* out) { launch_kernel(block_size_kernel, 1, threads, 0, nullptr, out); }

}  // namespace ift::test
