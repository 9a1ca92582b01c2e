// What every kernel file includes first: the CUDA environment (the real one under nvcc, the SIMT
// emulator's under the host compiler), the launch helper, and the small device helpers kernels
// share: warp and block reductions, 16-byte vector loads and stores, bf16 conversions.
//
// IFT_EMULATED is 1 when the file is compiled by the host compiler over the emulator and 0 under
// nvcc. Kernels test it (never __CUDA_ARCH__) where the two must differ, e.g. an inline-PTX wrapper
// and its emulated twin.
#pragma once

#if defined(__CUDACC__)
#define IFT_EMULATED 0
#include <cuda_bf16.h>
#include <cuda_runtime.h>
// Dynamic shared memory (the launch's smem_bytes, 16-byte aligned): `T* const name`. One byte array
// behind every use, so two kernels of a file may view it as different types.
#define IFT_DYNAMIC_SHARED(T, name)                                  \
  extern __shared__ __align__(16) unsigned char ift_dynamic_shared_[]; \
  T* const name = reinterpret_cast<T*>(ift_dynamic_shared_)
// Static shared memory: `IFT_SHARED(float[32], s_partial);` (T may be an array type). The emulator
// counts these against the block's shared-memory limit, so kernels never write `__shared__` itself.
#define IFT_SHARED(T, name) __shared__ ::std::type_identity_t<T> name
#else
#include "kernels/simt/device.h"
#endif

#include <cstdint>
#include <type_traits>

#include "kernels/launch.cuh"

IFT_KERNELS_BEGIN

using bf16 = __nv_bfloat16;

constexpr unsigned kFullMask = 0xffffffffu;

// ---- bf16 ---------------------------------------------------------------------------------------
// Storage types are float or bf16; arithmetic is always fp32. from_float rounds to nearest even.

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  return __float2bfloat16(x);
}

// ---- 16-byte vector loads -----------------------------------------------------------------------
// One 128-bit memory transaction per thread: 4 floats or 8 bf16. The address must be 16-byte
// aligned (a GPU faults otherwise; the emulator reports it).

template <class T>
struct alignas(16) Pack128 {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
  __device__ __forceinline__ T& operator[](int i) { return v[i]; }
  __device__ __forceinline__ const T& operator[](int i) const { return v[i]; }
};

template <class T>
__device__ __forceinline__ Pack128<T> load128(const T* g_address) {
#if IFT_EMULATED
  if (reinterpret_cast<uintptr_t>(g_address) % 16 != 0)
    simt::detail::kernel_fail("load128 from an address that is not 16-byte aligned", std::source_location::current());
#endif
  return *reinterpret_cast<const Pack128<T>*>(g_address);
}

template <class T>
__device__ __forceinline__ void store128(T* g_address, const Pack128<T>& value) {
#if IFT_EMULATED
  if (reinterpret_cast<uintptr_t>(g_address) % 16 != 0)
    simt::detail::kernel_fail("store128 to an address that is not 16-byte aligned", std::source_location::current());
#endif
  *reinterpret_cast<Pack128<T>*>(g_address) = value;
}

// K consecutive elements as floats. K = 1 is a scalar access; otherwise K is a multiple of T's
// 16-byte pack and the address is 16-byte aligned (one or two 128-bit transactions).
template <int K, class T>
__device__ __forceinline__ void load_floats(float (&r)[K], const T* g) {
  if constexpr (K == 1) {
    r[0] = to_float(g[0]);
  } else {
    constexpr int P = Pack128<T>::kSize;
    static_assert(K % P == 0, "load_floats: K must be 1 or a multiple of the 16-byte pack");
    for (int j = 0; j < K / P; ++j) {
      const Pack128<T> v = load128(g + j * P);
      for (int k = 0; k < P; ++k) r[j * P + k] = to_float(v[k]);
    }
  }
}

template <int K, class T>
__device__ __forceinline__ void store_floats(T* g, const float (&r)[K]) {
  if constexpr (K == 1) {
    g[0] = from_float<T>(r[0]);
  } else {
    constexpr int P = Pack128<T>::kSize;
    static_assert(K % P == 0, "store_floats: K must be 1 or a multiple of the 16-byte pack");
    for (int j = 0; j < K / P; ++j) {
      Pack128<T> v;
      for (int k = 0; k < P; ++k) v[k] = from_float<T>(r[j * P + k]);
      store128(g + j * P, v);
    }
  }
}

// Host side, for launchers choosing between the vector and the scalar path.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---- reductions ---------------------------------------------------------------------------------
// Warp reductions: all 32 lanes must call; every lane gets the result (butterfly, so the result is
// bit-identical on every lane). Block reductions: every thread of the block must call, the block
// size must be a multiple of 32; every thread gets the result. They use a 32-float shared scratch
// and end with a barrier, so they may be called back to back.

__device__ __forceinline__ float warp_reduce_sum(float r_x) {
  for (int offset = 16; offset > 0; offset /= 2) r_x += __shfl_xor_sync(kFullMask, r_x, offset);
  return r_x;
}

__device__ __forceinline__ float warp_reduce_max(float r_x) {
  for (int offset = 16; offset > 0; offset /= 2) r_x = fmaxf(r_x, __shfl_xor_sync(kFullMask, r_x, offset));
  return r_x;
}

struct WarpSum {
  __device__ __forceinline__ static float reduce(float r_x) { return warp_reduce_sum(r_x); }
};
struct WarpMax {
  __device__ __forceinline__ static float reduce(float r_x) { return warp_reduce_max(r_x); }
};

// The static shared memory of block_reduce, which launchers sizing dynamic shared memory add.
constexpr int kBlockReduceSharedFloats = 32;
constexpr size_t kBlockReduceSharedBytes = kBlockReduceSharedFloats * sizeof(float);

template <class Warp>
__device__ __forceinline__ float block_reduce(float r_x, float identity) {
  IFT_SHARED(float[kBlockReduceSharedFloats], s_partial);
  const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int nwarps = blockDim.x * blockDim.y * blockDim.z / 32;
  const int lane = tid % 32, warp = tid / 32;
  r_x = Warp::reduce(r_x);
  if (lane == 0) s_partial[warp] = r_x;
  __syncthreads();
  r_x = Warp::reduce(lane < nwarps ? s_partial[lane] : identity);
  __syncthreads();  // s_partial is free for the next call
  return r_x;
}

__device__ __forceinline__ float block_reduce_sum(float r_x) { return block_reduce<WarpSum>(r_x, 0.0f); }
__device__ __forceinline__ float block_reduce_max(float r_x) { return block_reduce<WarpMax>(r_x, -INFINITY); }

IFT_KERNELS_END
