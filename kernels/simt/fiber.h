// The fibers of one OS worker thread: one per CUDA thread of the block it runs, created once and
// reused for every block (creating a context costs far more than switching to one).
//
// Switching uses Boost.Context's fcontext primitives (make_fcontext / jump_fcontext, ~6 ns a
// switch; ucontext's swapcontext makes a sigprocmask syscall and is ~40x slower). The public
// boost::context::fiber owns its stack and resumes a fresh fiber per call, which does not fit a
// pool of persistent fibers, so the detail API is used directly.
//
// Stacks: one mapping per worker, each stack below its own PROT_NONE guard region. A fault inside a
// guard region is a stack overflow of an emulated CUDA thread: a SIGSEGV handler on an alternate
// signal stack prints which thread overflowed and ends the process (there is no way to resume it).
// Switches are annotated for AddressSanitizer (so it knows which stack is live) and for
// ThreadSanitizer (so each CUDA thread is a separate thread to its race detector).
#pragma once

#include <cstddef>
#include <vector>

#include <boost/context/detail/fcontext.hpp>

namespace ift::simt::detail {

class FiberSet {
 public:
  // What fiber i runs each time it is resumed after finishing its previous run.
  using Body = void (*)(int index);

  explicit FiberSet(Body body);
  ~FiberSet();
  FiberSet(const FiberSet&) = delete;
  FiberSet& operator=(const FiberSet&) = delete;

  // Makes fibers 0..n-1 available (n <= kMaxFibers).
  void reserve(int n);
  // From the worker's own stack: runs fiber i until it suspends or finishes a run of Body.
  void resume(int i);
  // From inside a fiber: back to the worker, until the worker resumes this fiber again.
  void suspend();

  static constexpr int kMaxFibers = 1024;  // the most threads a CUDA block can have

 private:
  struct Fiber;
  static void entry(boost::context::detail::transfer_t transfer);

  Body body_;
  char* mapping_ = nullptr;
  size_t mapping_bytes_ = 0;
  std::vector<Fiber*> fibers_;
  boost::context::detail::fcontext_t worker_ctx_ = nullptr;  // the worker, while a fiber runs
  void* worker_tsan_ = nullptr;       // TSan handle of the worker
  const void* worker_stack_ = nullptr;  // ASan: bounds of the worker's stack
  size_t worker_stack_bytes_ = 0;
  int current_ = -1;
  char* altstack_ = nullptr;  // this thread's alternate signal stack, when we installed one
  int slot_ = -1;             // this set's entry in the table the SIGSEGV handler checks
};

}  // namespace ift::simt::detail
