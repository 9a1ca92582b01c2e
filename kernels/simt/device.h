// The CUDA device environment for kernels compiled by the host compiler over the SIMT emulator.
//
// kernels/common.cuh includes this instead of the CUDA device headers when IFT_EMULATED is 1. It
// provides what kernels may use: the built-in variables, `__shared__`, IFT_DYNAMIC_SHARED,
// `__syncthreads`, `__syncwarp`, the shuffles, ballot/any/all, atomics, and the fast-math
// intrinsics that have no host version in the toolkit headers. bf16/fp16 types and their
// conversions come from the toolkit's own cuda_bf16.h / cuda_fp16.h, which compile on the host.
//
// Every barrier and warp collective takes a defaulted std::source_location, so the checks of the
// runtime (kernels/simt/runtime.h) name the line of the offending call.
#pragma once

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <math_constants.h>
#include <vector_functions.h>
#include <vector_types.h>

#include "kernels/simt/runtime.h"

#define IFT_EMULATED 1

// The toolkit's host_defines.h makes __global__, __device__, __forceinline__, __align__ and
// __restrict__ harmless on the host, and __shared__ empty. Shared memory is per block; a block runs
// on one OS thread at a time, and several blocks run at once on different OS threads, hence
// thread_local. constinit: without it g++ guards arrays of class type (bf16) with a lazy-init flag
// that ThreadSanitizer then reports as a race.
// Kernels declare static shared memory with IFT_SHARED (kernels/common.cuh), which the emulator
// counts against the block's shared-memory limit; a bare `__shared__` would escape the count, so it
// does not compile here.
#undef __shared__
#define __shared__ __shared___is_not_counted_by_the_emulator_use_IFT_SHARED
#if defined(IFT_SIMT_SANITIZE_ADDRESS)
// AddressSanitizer does not check thread_local arrays: plain static ones are, and the runtime runs
// one block at a time in this build.
#define IFT_SIMT_SHARED_STORAGE static constinit
#else
#define IFT_SIMT_SHARED_STORAGE static thread_local constinit
#endif

// Static shared memory: `IFT_SHARED(float[32], s_partial);` declares s_partial as a float[32] shared
// by the block, and reports its size to the runtime when a thread reaches the declaration.
#define IFT_SHARED(T, name)                                      \
  IFT_SIMT_SHARED_STORAGE ::std::type_identity_t<T> name;          \
  ::ift::simt::detail::static_shared(&name, sizeof(name), std::source_location::current())
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __noinline__
#define __noinline__ __attribute__((noinline))
#endif

// Dynamic shared memory (the launch's smem_bytes, 16-byte aligned): `T* const name`.
#define IFT_DYNAMIC_SHARED(T, name) T* const name = reinterpret_cast<T*>(::ift::simt::detail::dynamic_shared())

// A constant, not a macro: cuda_runtime.h uses the name as a struct member.
inline constexpr int warpSize = 32;

// ---- barriers and warp collectives ------------------------------------------------------------

inline void __syncthreads(const std::source_location& site = std::source_location::current()) {
  ::ift::simt::detail::block_barrier(site);
}

inline void __syncwarp(unsigned mask = 0xffffffffu, const std::source_location& site = std::source_location::current()) {
  ::ift::simt::detail::warp_collective(::ift::simt::detail::WarpOp::syncwarp, mask, 0, 0, 32, site);
}

namespace ift::simt::detail {
template <class T>
T shuffle(WarpOp op, unsigned mask, T var, int arg, int width, const std::source_location& site) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(LaneWords),
                "a warp collective moves at most 16 bytes a lane");
  LaneWords bits{};
  std::memcpy(&bits, &var, sizeof(T));
  bits = warp_collective(op, mask, bits, arg, width, site);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace ift::simt::detail

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
              const std::source_location& site = std::source_location::current()) {
  return ::ift::simt::detail::shuffle(::ift::simt::detail::WarpOp::shfl_idx, mask, var, src_lane, width, site);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 const std::source_location& site = std::source_location::current()) {
  return ::ift::simt::detail::shuffle(::ift::simt::detail::WarpOp::shfl_up, mask, var, static_cast<int>(delta), width, site);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   const std::source_location& site = std::source_location::current()) {
  return ::ift::simt::detail::shuffle(::ift::simt::detail::WarpOp::shfl_down, mask, var, static_cast<int>(delta), width, site);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  const std::source_location& site = std::source_location::current()) {
  return ::ift::simt::detail::shuffle(::ift::simt::detail::WarpOp::shfl_xor, mask, var, lane_mask, width, site);
}

inline unsigned __ballot_sync(unsigned mask, int predicate, const std::source_location& site = std::source_location::current()) {
  return static_cast<unsigned>(
      ::ift::simt::detail::warp_collective(::ift::simt::detail::WarpOp::ballot, mask, predicate != 0, 0, 32, site));
}
inline int __any_sync(unsigned mask, int predicate, const std::source_location& site = std::source_location::current()) {
  return ::ift::simt::detail::warp_collective(::ift::simt::detail::WarpOp::any, mask, predicate != 0, 0, 32, site) != 0;
}
inline int __all_sync(unsigned mask, int predicate, const std::source_location& site = std::source_location::current()) {
  return ::ift::simt::detail::warp_collective(::ift::simt::detail::WarpOp::all, mask, predicate != 0, 0, 32, site) == mask;
}

// ---- atomics: blocks run on several OS threads at once -----------------------------------------

namespace ift::simt::detail {
template <class T>
T atomic_add(T* address, T val) {
  return std::atomic_ref<T>(*address).fetch_add(val, std::memory_order_relaxed);
}
template <class T>
T atomic_max(T* address, T val) {
  std::atomic_ref<T> a(*address);
  T old = a.load(std::memory_order_relaxed);
  while (old < val && !a.compare_exchange_weak(old, val, std::memory_order_relaxed)) {
  }
  return old;
}
template <class T>
T atomic_cas(T* address, T compare, T val) {
  std::atomic_ref<T>(*address).compare_exchange_strong(compare, val, std::memory_order_relaxed);
  return compare;  // the old value either way
}
}  // namespace ift::simt::detail

inline float atomicAdd(float* address, float val) { return ::ift::simt::detail::atomic_add(address, val); }
inline double atomicAdd(double* address, double val) { return ::ift::simt::detail::atomic_add(address, val); }
inline int atomicAdd(int* address, int val) { return ::ift::simt::detail::atomic_add(address, val); }
inline unsigned atomicAdd(unsigned* address, unsigned val) { return ::ift::simt::detail::atomic_add(address, val); }
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long val) {
  return ::ift::simt::detail::atomic_add(address, val);
}

inline int atomicMax(int* address, int val) { return ::ift::simt::detail::atomic_max(address, val); }
inline unsigned atomicMax(unsigned* address, unsigned val) { return ::ift::simt::detail::atomic_max(address, val); }

inline int atomicCAS(int* address, int compare, int val) { return ::ift::simt::detail::atomic_cas(address, compare, val); }
inline unsigned atomicCAS(unsigned* address, unsigned compare, unsigned val) { return ::ift::simt::detail::atomic_cas(address, compare, val); }
inline unsigned long long atomicCAS(unsigned long long* address, unsigned long long compare, unsigned long long val) {
  return ::ift::simt::detail::atomic_cas(address, compare, val);
}

inline int atomicExch(int* address, int val) { return std::atomic_ref<int>(*address).exchange(val, std::memory_order_relaxed); }
inline float atomicExch(float* address, float val) {
  return std::atomic_ref<float>(*address).exchange(val, std::memory_order_relaxed);
}

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- math intrinsics without a host version in the toolkit headers -------------------------------
// The fast-math variants are computed as their IEEE counterparts: the emulator checks logic, not
// the GPU's reduced precision (see docs/emulator.md).

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline float __saturatef(float x) { return x >= 0.0f ? (x <= 1.0f ? x : 1.0f) : 0.0f; }  // NaN -> 0, as on a GPU
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(static_cast<unsigned>(x)) + 1; }

template <class T>
T __ldg(const T* p) {
  return *p;
}
