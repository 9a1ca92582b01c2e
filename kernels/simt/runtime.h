// The SIMT emulator runtime: runs CUDA kernels on the CPU, one fiber per CUDA thread.
//
// A launch runs every block of the grid to completion before it returns (the stream is ignored,
// so every launch is synchronous). Blocks are spread over a pool of OS threads; inside a block,
// the CUDA threads are fibers that a cooperative scheduler switches at `__syncthreads`, warp
// collectives and thread exit, and nowhere else. Kernels do not include this header directly:
// they include kernels/common.cuh, which brings in kernels/simt/device.h (the CUDA builtins) when
// compiled by the host compiler.
//
// Checks that are always on, each reported as ift::Error thrown from the launch (naming the block,
// the thread and the source line): a barrier reached from different call sites, a thread that
// exits while others wait at a barrier (or before a barrier the others then reach), warp
// collectives whose lanes pass different masks or call different intrinsics, a lane that reads from
// or waits for a lane outside the mask or already exited, deadlock, exceptions thrown by kernel
// code, and shared memory over the block's limit (static, counted by IFT_SHARED, plus dynamic: 48
// KiB, or 227 KiB for a kernel that opted in with opt_in_dynamic_shared, kernels/launch.cuh). A fiber stack overflow cannot be recovered from: it ends the process with a message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <source_location>

#include <vector_types.h>

namespace ift::simt {

// The order in which the scheduler runs the ready threads of a block, and the blocks of a grid.
// Correct kernels give the same result under every order; code that silently relies on warp
// lock-step or on one block running before another gives a different one under reverse or random.
enum class Schedule { forward, reverse, random };

struct Options {
  Schedule schedule = Schedule::forward;
  uint64_t seed = 1;         // random schedule: the same seed gives the same order
  bool strict_exit = true;   // false: threads that exited are not waited for at a barrier
  int workers = 0;           // OS threads running blocks; 0: one per core (always 1 in the ASan build)
};

// The options the next launch uses. Initialised on first use from the environment:
//   IFT_SIMT_SCHEDULE=forward|reverse|random|random:SEED   IFT_SIMT_EXIT=strict|lenient
//   IFT_SIMT_WORKERS=N
// and throws ift::Error on a malformed value.
Options options();
void set_options(const Options& options);

// Sets options for the lifetime of a scope and restores the previous ones after it.
class ScopedOptions {
 public:
  explicit ScopedOptions(const Options& options) : saved_(simt::options()) { set_options(options); }
  ~ScopedOptions() { set_options(saved_); }
  ScopedOptions(const ScopedOptions&) = delete;
  ScopedOptions& operator=(const ScopedOptions&) = delete;

 private:
  Options saved_;
};

// The stack of every emulated CUDA thread. Sanitizers grow frames, so their builds get more.
#if defined(IFT_SIMT_SANITIZE_ADDRESS) || defined(IFT_SIMT_SANITIZE_THREAD)
inline constexpr size_t kStackBytes = 256 * 1024;
#else
inline constexpr size_t kStackBytes = 64 * 1024;
#endif

// The largest static + dynamic shared memory of a block (sm_90 with the opt-in attribute set).
inline constexpr size_t kMaxDynamicSharedBytes = 227 * 1024;
// Static + dynamic shared memory of a block whose kernel has not opted in (every CUDA device).
inline constexpr size_t kDefaultSharedBytes = 48 * 1024;

// ---- used by kernels/simt/device.h and kernels/launch.cuh, not by kernel authors -------------
namespace detail {

// mma_sync and ldmatrix are gathers (every lane of the mask receives every lane's value), named
// apart so that lanes of one warp calling different tensor-core operations are a mismatch.
enum class WarpOp : uint8_t { shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, any, all, syncwarp, mma_sync, ldmatrix };

// What one lane carries into a warp collective: up to four 32-bit registers, the size of the
// largest tensor-core fragment (the A operand of mma.m16n8k16, an ldmatrix.x4 result).
struct LaneWords {
  uint32_t w[4];
};

void block_barrier(const std::source_location& site);
// One lane's part of a warp collective: returns the value this lane receives (for shuffles) or
// the ballot of the lanes in `mask` (for ballot/any/all; in w[0]). Not for the gathers.
LaneWords warp_collective(WarpOp op, unsigned mask, const LaneWords& value, int arg, int width,
                          const std::source_location& site);
// The same for values of at most 64 bits (in w[0], w[1]).
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width,
                         const std::source_location& site);
// One lane's part of a gather (op mma_sync or ldmatrix): once every lane of `mask` has joined,
// out[l] holds lane l's value for each lane l of the mask (the other entries are left alone).
void warp_gather(WarpOp op, unsigned mask, const LaneWords& value, LaneWords (&out)[32],
                 const std::source_location& site);

// Whether [p, p + bytes) lies inside the calling block's shared memory: its dynamic shared memory,
// or one static shared variable (IFT_SHARED) that a thread of this launch has reached.
bool in_shared(const void* p, size_t bytes);

// The calling CUDA thread's cp.async copies that its cp.async.wait_group has not completed yet
// (kernels/simt/tensor_core.h). Emptied at block start; a thread that exits with copies still
// pending is an error, as their data would land after the thread stopped looking.
struct CpAsyncCopy {
  void* dst;          // 16 bytes of shared memory
  uint8_t data[16];   // what lands there (read from global memory at issue, zero-filled)
  uint32_t group;     // commit group: the value of `committed` when issued
};
struct CpAsyncQueue {
  CpAsyncCopy* pending = nullptr;  // pending copies, oldest first (count of them)
  int count = 0;
  int capacity = 0;
  uint32_t committed = 0;          // groups committed so far
};
CpAsyncQueue& cp_async_queue();
// Appends a copy to the calling thread's queue (grows its storage).
CpAsyncCopy& cp_async_push();
void* dynamic_shared();
// Reports an error from kernel code (an emulator check such as a misaligned vector load): ends the
// calling CUDA thread and makes the launch throw.
[[noreturn]] void kernel_fail(const char* what, const std::source_location& site);

// The kernel of a launch: its address (what opt-ins are recorded by) and the launch_kernel call's
// text (for its name in messages).
struct KernelRef {
  const void* fn;
  const char* text;
};

// Runs `thunk(call)` once per CUDA thread of the grid. `site` is where the launch was written.
// Faults (throws ift::Error naming the kernel and the bytes) when the dynamic shared memory, or
// later the static shared memory a thread declares on top of it (IFT_SHARED), exceeds
// kDefaultSharedBytes without the kernel's opt-in, or kMaxDynamicSharedBytes with it.
using Thunk = void (*)(const void* call);
void launch(KernelRef kernel, dim3 grid, dim3 block, size_t smem_bytes, Thunk thunk, const void* call,
            const std::source_location& site);

// cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes): recorded for the
// launches of fn that follow. Throws ift::Error when bytes exceed kMaxDynamicSharedBytes, as the
// real call fails.
void opt_in_dynamic_shared(const void* fn, size_t bytes, const std::source_location& site);

// A `__shared__` variable of `bytes` at `address`, reached by the calling CUDA thread (IFT_SHARED
// in kernels/simt/device.h): counted once per launch and worker, and checked with the launch's
// dynamic shared memory against the block's limit.
void static_shared(const void* address, size_t bytes, const std::source_location& site);

}  // namespace detail
}  // namespace ift::simt

// The CUDA built-in variables. The scheduler sets them before every switch to a fiber; they are
// per OS thread because several OS threads run blocks at once. initial-exec keeps each read a single
// %fs-relative load in position-independent code (the emulator is never dlopen'ed).
#define IFT_SIMT_TLS __attribute__((tls_model("initial-exec")))
inline thread_local constinit IFT_SIMT_TLS uint3 threadIdx{};
inline thread_local constinit IFT_SIMT_TLS uint3 blockIdx{};
inline thread_local constinit IFT_SIMT_TLS dim3 blockDim{};
inline thread_local constinit IFT_SIMT_TLS dim3 gridDim{};
