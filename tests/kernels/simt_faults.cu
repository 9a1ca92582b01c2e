// Kernels with faults that end the process (stack overflow) or that a sanitizer reports
// (out-of-bounds accesses, a shared-memory race). Run by simt_faults.cpp, one per process.
#include "kernels/common.cuh"
#include "kernels/mma.cuh"

namespace ift::test {

// Far more than a fiber stack; touched page by page so the guard region is hit, not skipped.
static __device__ __noinline__ int deep_frame(int seed) {
  volatile char r_big[1 << 20];
  for (int i = 0; i < (1 << 20); i += 4096) r_big[i] = static_cast<char>(seed + i);
  return r_big[seed];
}

static __global__ void stack_overflow_kernel(int* g_out) {
  int r = static_cast<int>(threadIdx.x);
  if (blockIdx.x == 1 && threadIdx.x == 5) r = deep_frame(r);
  g_out[blockIdx.x * blockDim.x + threadIdx.x] = r;
}

static __global__ void global_oob_kernel(const float* g_in, float* g_out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  g_out[i] = g_in[i + 1];  // the last thread reads g_in[n]
  (void)n;
}

static __global__ void static_shared_oob_kernel(const float* g_in, float* g_out) {
  IFT_SHARED(float[32], s_x);
  float* s_p = s_x;  // through a pointer, so that UBSan's bounds check leaves the report to ASan
  s_p[threadIdx.x + 1] = g_in[threadIdx.x];  // thread 31 writes s_x[32]
  __syncthreads();
  g_out[threadIdx.x] = s_x[threadIdx.x];
}

static __global__ void dynamic_shared_oob_kernel(const float* g_in, float* g_out) {
  IFT_DYNAMIC_SHARED(float, s_x);  // 32 floats
  s_x[threadIdx.x + 1] = g_in[threadIdx.x];
  __syncthreads();
  g_out[threadIdx.x] = s_x[threadIdx.x];
}

// A tree reduction over shared memory; `racy` leaves out the barrier between the levels.
template <bool kRacy>
static __device__ void tree_reduce(const float* g_in, float* g_out) {
  IFT_SHARED(float[128], s_x);
  s_x[threadIdx.x] = g_in[threadIdx.x];
  __syncthreads();
  for (int stride = 64; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) s_x[threadIdx.x] += s_x[threadIdx.x + stride];
    if (!kRacy) __syncthreads();
  }
  if (threadIdx.x == 0) g_out[blockIdx.x] = s_x[0];
}
static __global__ void racy_reduction_kernel(const float* g_in, float* g_out) { tree_reduce<true>(g_in, g_out); }
static __global__ void clean_reduction_kernel(const float* g_in, float* g_out) { tree_reduce<false>(g_in, g_out); }

// Each thread copies 16 bytes into shared memory by cp.async, waits for it, and reads its
// neighbour's copy; `racy` leaves out the barrier between the wait and the read, which a GPU needs
// (the wait only covers the thread's own copies): ThreadSanitizer reports the read.
template <bool kRacy>
static __global__ void cp_async_neighbour_kernel(const float* g_in, float* g_out) {
  IFT_SHARED(float[128 * 4], s_x);
  const int tid = threadIdx.x;
  cp_async_16(s_x + 4 * tid, g_in + 4 * tid, true);
  cp_async_commit();
  cp_async_wait<0>();
  if (!kRacy) __syncthreads();
  g_out[tid] = s_x[4 * ((tid + 1) % 128)];
}

// Writes its block's dynamic shared memory (all of it) and, with kStatic, a static array on top.
template <bool kStatic>
static __global__ void shared_limit_kernel(float* g_out, int floats) {
  IFT_DYNAMIC_SHARED(float, s_dyn);
  for (int i = threadIdx.x; i < floats; i += blockDim.x) s_dyn[i] = static_cast<float>(i);
  float r = 0.0f;
  if constexpr (kStatic) {
    IFT_SHARED(float[32], s_static);
    s_static[threadIdx.x] = 1.0f;
    __syncthreads();
    r = s_static[31 - threadIdx.x];
  } else {
    __syncthreads();
  }
  g_out[threadIdx.x] = s_dyn[floats - 1 - threadIdx.x] + r;
}

// launchers

void fault_stack_overflow(int* out) { launch_kernel(stack_overflow_kernel, 2, 32, 0, nullptr, out); }
void fault_global_oob(const float* in, float* out, int n) { launch_kernel(global_oob_kernel, n / 32, 32, 0, nullptr, in, out, n); }
void fault_static_shared_oob(const float* in, float* out) { launch_kernel(static_shared_oob_kernel, 1, 32, 0, nullptr, in, out); }
void fault_dynamic_shared_oob(const float* in, float* out) {
  launch_kernel(dynamic_shared_oob_kernel, 1, 32, 32 * sizeof(float), nullptr, in, out);
}
void fault_reduction(bool racy, const float* in, float* out, int blocks) {
  launch_kernel(racy ? racy_reduction_kernel : clean_reduction_kernel, blocks, 128, 0, nullptr, in, out);
}

void fault_cp_async(bool racy, const float* in, float* out) {
  launch_kernel(racy ? cp_async_neighbour_kernel<true> : cp_async_neighbour_kernel<false>, 1, 128, 0, nullptr, in, out);
}

void fault_shared(bool with_static, bool opt_in, size_t dynamic_bytes, float* out) {
  const int floats = static_cast<int>(dynamic_bytes / sizeof(float));
  if (with_static) {
    if (opt_in) opt_in_dynamic_shared(shared_limit_kernel<true>, dynamic_bytes);
    launch_kernel(shared_limit_kernel<true>, 1, 32, dynamic_bytes, nullptr, out, floats);
  } else {
    if (opt_in) opt_in_dynamic_shared(shared_limit_kernel<false>, dynamic_bytes);
    launch_kernel(shared_limit_kernel<false>, 1, 32, dynamic_bytes, nullptr, out, floats);
  }
}

}  // namespace ift::test
