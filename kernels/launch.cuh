// The one way to launch a kernel: launch_kernel(kernel, grid, block, smem_bytes, stream, args...).
//
// Under nvcc it is `kernel<<<grid, block, smem_bytes, stream>>>(args...)` followed by the launch
// error check (and, when sync_after_launch() is on, a stream synchronisation that surfaces errors
// raised while the kernel ran). In the emulator it runs the whole grid before returning. Either way
// a failure throws ift::Error naming the launch site. Included by kernels/common.cuh.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

#include "engine/base/error.h"

#include "kernels/target.h"

IFT_KERNELS_BEGIN

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

template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), LaunchGrid grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                   Args&&... args) {
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
      grid.dims, block, smem_bytes, [](const void* c) {
        const auto* self = static_cast<const Call*>(c);
        std::apply(self->kernel, self->params);
      },
      &call, grid.site);
#else
  kernel<<<grid.dims, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
  const auto check = [&](cudaError_t e, const char* when) {
    if (e != cudaSuccess)
      fail("kernel launched from ", grid.site.file_name(), ":", grid.site.line(), " (", grid.site.function_name(), ") failed ", when,
           ": ", cudaGetErrorString(e));
  };
  check(cudaGetLastError(), "to launch");
  if (sync_after_launch()) check(cudaStreamSynchronize(stream), "while running");
#endif
}

IFT_KERNELS_END
