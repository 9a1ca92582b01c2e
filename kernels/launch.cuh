// The one way to launch a kernel: launch_kernel(kernel, grid, block, smem_bytes, stream, args...).
//
// Under nvcc it is `kernel<<<grid, block, smem_bytes, stream>>>(args...)` followed by the launch
// error check (and, when sync_after_launch() is on, a stream synchronisation that surfaces errors
// raised while the kernel ran). In the emulator it runs the whole grid before returning. Either way
// a failure throws ift::Error naming the kernel and the launch site. Included by kernels/common.cuh.
//
// Shared memory: a block gets at most kDefaultSharedBytes (48 KiB) of static plus dynamic shared
// memory, as on every CUDA device, unless the launcher first calls
// opt_in_dynamic_shared(kernel, bytes): cudaFuncSetAttribute(MaxDynamicSharedMemorySize) under nvcc,
// recorded by the emulator, which then allows static + dynamic up to the device's opt-in maximum
// (227 KiB on sm_90; simt::kMaxDynamicSharedBytes). The emulator faults a launch over either line.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstddef>
#include <cstdlib>
#include <map>
#include <mutex>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <string>
#include <utility>

#include "engine/base/error.h"

#include "kernels/kernel_name.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

// Static plus dynamic shared memory of a block without the opt-in (every CUDA device since sm_20).
inline constexpr size_t kDefaultSharedBytes = 48 * 1024;

// Synchronise after every launch, so an error raised by a running kernel is reported at the launch
// that caused it. On in debug builds and when IFT_SYNC_LAUNCHES=1; no effect in the emulator, whose
// launches are synchronous anyway.
inline std::atomic<bool>& sync_after_launch() {
#ifdef NDEBUG
  static std::atomic<bool> on{std::getenv("IFT_SYNC_LAUNCHES") != nullptr && std::getenv("IFT_SYNC_LAUNCHES")[0] == '1'};
#else
  static std::atomic<bool> on{true};
#endif
  return on;
}

// The grid of a launch, with where the launch was written: an implicit conversion from dim3 or an
// integer, whose defaulted argument captures the caller's source location for error messages.
struct LaunchGrid {
  LaunchGrid(dim3 d, const std::source_location& s = std::source_location::current()) : dims(d), site(s) {}
  LaunchGrid(unsigned x, const std::source_location& s = std::source_location::current()) : dims(x), site(s) {}
  dim3 dims;
  std::source_location site;
};

// The largest static + dynamic shared memory a block of this device can have with the opt-in
// (cudaDevAttrMaxSharedMemoryPerBlockOptin of the current device under nvcc).
inline size_t max_shared_bytes_optin() {
#if IFT_EMULATED
  return simt::kMaxDynamicSharedBytes;
#else
  int device = 0, bytes = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e != cudaSuccess) fail("cudaDeviceGetAttribute(cudaDevAttrMaxSharedMemoryPerBlockOptin) failed: ", cudaGetErrorString(e));
  return static_cast<size_t>(bytes);
#endif
}

// Lets `kernel` be launched with up to `bytes` of dynamic shared memory (static + dynamic up to
// max_shared_bytes_optin()). Needed before any launch whose static + dynamic shared memory exceeds
// kDefaultSharedBytes. The attribute only ever grows: it is set once per kernel (and device) for
// each larger size, so calling this before every launch costs a map lookup. Throws ift::Error
// naming the caller's file, line and function when the device refuses.
template <class... Params>
void opt_in_dynamic_shared(void (*kernel)(Params...), size_t bytes,
                           const std::source_location& site = std::source_location::current()) {
  static std::mutex mutex;
  static std::map<std::pair<int, const void*>, size_t> granted;  // (device, kernel) -> bytes
  int device = 0;
#if !IFT_EMULATED
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess)
    fail("opt_in_dynamic_shared from ", site.file_name(), ":", site.line(), ": cudaGetDevice failed: ", cudaGetErrorString(e));
#endif
  const auto key = std::pair{device, reinterpret_cast<const void*>(kernel)};
  std::lock_guard lock(mutex);
  if (auto it = granted.find(key); it != granted.end() && it->second >= bytes) return;
#if IFT_EMULATED
  simt::detail::opt_in_dynamic_shared(reinterpret_cast<const void*>(kernel), bytes, site);
#else
  if (bytes > static_cast<size_t>(INT32_MAX))
    fail("opt_in_dynamic_shared from ", site.file_name(), ":", site.line(), ": ", bytes, " bytes is not a shared-memory size");
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
      e != cudaSuccess)
    fail("cudaFuncSetAttribute(MaxDynamicSharedMemorySize, ", bytes, " bytes) from ", site.file_name(), ":", site.line(), " (",
         site.function_name(), ") failed: ", cudaGetErrorString(e), " (the device allows ", max_shared_bytes_optin(),
         " bytes of static + dynamic shared memory per block)");
#endif
  granted[key] = bytes;
}

// For launchers: makes room for a launch of `kernel` with `dynamic_bytes` of dynamic shared memory
// on top of its `static_bytes` of static shared memory (IFT_SHARED, e.g. kBlockReduceSharedBytes):
// opts in when the two exceed kDefaultSharedBytes, and throws ift::Error naming `op` and the bytes
// when they exceed even the device's opt-in maximum.
template <class... Params>
void reserve_shared_memory(const char* op, void (*kernel)(Params...), size_t dynamic_bytes, size_t static_bytes,
                           const std::source_location& site = std::source_location::current()) {
  const size_t total = dynamic_bytes + static_bytes;
  if (total <= kDefaultSharedBytes) return;
  const size_t most = max_shared_bytes_optin();
  IFT_CHECK(total <= most, op, ": needs ", total, " bytes of shared memory per block (", static_bytes, " static + ", dynamic_bytes,
            " dynamic), more than the ", most, " the device allows");
  opt_in_dynamic_shared(kernel, dynamic_bytes, site);
}

template <class... Params, class... Args>
void launch_kernel(const char* launch_text, void (*kernel)(Params...), LaunchGrid grid, dim3 block, size_t smem_bytes,
                   cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch_kernel: wrong number of kernel arguments");
  static_assert((std::is_trivially_copyable_v<std::decay_t<Params>> && ...),
                "kernel parameters are copied to the device byte for byte: they must be trivially copyable");
#if IFT_EMULATED
  // Converted to the parameter types once, as a real launch fills its parameter buffer; each CUDA
  // thread then gets its own copy of the parameters.
  struct Call {
    void (*kernel)(Params...);
    std::tuple<std::decay_t<Params>...> params;
  };
  const Call call{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
  (void)stream;
  simt::detail::launch(
      simt::detail::KernelRef{reinterpret_cast<const void*>(kernel), launch_text}, grid.dims, block, smem_bytes,
      [](const void* c) {
        const auto* self = static_cast<const Call*>(c);
        std::apply(self->kernel, self->params);
      },
      &call, grid.site);
#else
  kernel<<<grid.dims, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
  const auto check = [&](cudaError_t e, const char* when) {
    if (e != cudaSuccess)
      fail("kernel ", detail::kernel_name_of(launch_text), " launched from ", grid.site.file_name(), ":", grid.site.line(), " (",
           grid.site.function_name(), ") with ", smem_bytes, " bytes of dynamic shared memory failed ", when, ": ",
           cudaGetErrorString(e));
  };
  check(cudaGetLastError(), "to launch");
  if (sync_after_launch()) check(cudaStreamSynchronize(stream), "while running");
#endif
}

IFT_KERNELS_END

// Call sites write launch_kernel(kernel, grid, block, smem_bytes, stream, args...); the macro passes
// the call's text along so that errors name the kernel (a function pointer has no name the emulator
// could print). Variadic, so template arguments with commas need no parentheses.
#define launch_kernel(...) launch_kernel(#__VA_ARGS__, __VA_ARGS__)
