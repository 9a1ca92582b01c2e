#include "kernels/simt/fiber.h"

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <mutex>

#include <sys/mman.h>
#include <unistd.h>

#include "engine/base/error.h"
#include "kernels/simt/runtime.h"

#if defined(IFT_SIMT_SANITIZE_ADDRESS)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(IFT_SIMT_SANITIZE_THREAD)
#include <sanitizer/tsan_interface.h>
#endif

namespace ift::simt::detail {

namespace ctx = boost::context::detail;

namespace {

// Generous guard regions: a frame larger than the guard could step over it into the stack below
// without a fault (kernels are also compiled with -fstack-clash-protection, which probes each page).
constexpr size_t kGuardBytes = 64 * 1024;
// Stacks whose tops were a power of two apart would all map to the same cache sets, and switching
// between 256 fibers would then thrash L1 and L2 (this made the emulator 5x slower). Hence one
// spare page per stack, an odd number of pages between stack tops, and a top that moves down by a
// cache line per fiber within the spare page.
constexpr size_t kColourBytes = 4096;
constexpr size_t kStride = kGuardBytes + kStackBytes + kColourBytes;

// Every worker's stack mapping, for the SIGSEGV handler (which may not lock or allocate).
constexpr int kMaxSets = 256;
std::atomic<uintptr_t> g_mappings[kMaxSets];
struct sigaction g_previous_segv;

void write_str(const char* s) { [[maybe_unused]] auto n = ::write(2, s, std::strlen(s)); }
void write_uint(uint64_t v) {
  char buf[24];
  int i = sizeof(buf);
  do buf[--i] = static_cast<char>('0' + v % 10); while ((v /= 10) != 0 && i > 0);
  [[maybe_unused]] auto n = ::write(2, buf + i, sizeof(buf) - i);
}
void write_dim(const char* name, const uint3& d) {
  write_str(name);
  write_str(" (");
  write_uint(d.x);
  write_str(",");
  write_uint(d.y);
  write_str(",");
  write_uint(d.z);
  write_str(")");
}

void on_segv(int sig, siginfo_t* info, void* uctx) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (auto& slot : g_mappings) {
    const uintptr_t base = slot.load(std::memory_order_acquire);
    if (base == 0 || addr < base || addr >= base + FiberSet::kMaxFibers * kStride) continue;
    if ((addr - base) % kStride >= kGuardBytes) continue;
    write_str("ift simt: stack overflow in an emulated CUDA thread: ");
    write_dim("thread", threadIdx);
    write_str(" of ");
    write_dim("block", blockIdx);
    write_str(". Each CUDA thread runs on a fiber with a ");
    write_uint(kStackBytes / 1024);
    write_str(" KiB stack: large local arrays or deep recursion in a kernel do not fit (and would spill"
              " to local memory on a GPU).\n");
    ::_exit(134);
  }
  // Not ours: put back whoever handled SIGSEGV before us; returning re-runs the faulting access.
  sigaction(SIGSEGV, &g_previous_segv, nullptr);
  (void)sig;
  (void)uctx;
}

void install_segv_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &g_previous_segv) != 0) fail("simt: cannot install the SIGSEGV handler");
  });
}

}  // namespace

struct FiberSet::Fiber {
  FiberSet* set;
  int index;
  ctx::fcontext_t ctx;  // where the fiber resumes
  char* stack_lo;       // lowest usable address of its stack
  void* tsan = nullptr;
  void* fake_stack = nullptr;  // ASan's fake stack of this fiber while it is switched out
};

FiberSet::FiberSet(Body body) : body_(body) {
  mapping_bytes_ = kMaxFibers * kStride;
  // Address space only: stack pages are committed when first touched.
  void* m = mmap(nullptr, mapping_bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) fail("simt: cannot reserve ", mapping_bytes_ >> 20, " MiB of address space for fiber stacks");
  mapping_ = static_cast<char*>(m);
  for (int i = 0; i < kMaxSets; ++i) {
    uintptr_t expected = 0;
    if (g_mappings[i].compare_exchange_strong(expected, reinterpret_cast<uintptr_t>(mapping_))) {
      slot_ = i;
      break;
    }
  }
  install_segv_handler();
  // The handler runs while the stack pointer is inside a guard region: it needs a stack of its own.
  // Keep one that is already installed (sanitizers set one up for every thread).
  stack_t current{};
  sigaltstack(nullptr, &current);
  if (current.ss_flags & SS_DISABLE) {
    constexpr size_t kAltBytes = 64 * 1024;
    altstack_ = new char[kAltBytes];
    stack_t ss{};
    ss.ss_sp = altstack_;
    ss.ss_size = kAltBytes;
    sigaltstack(&ss, nullptr);
  }
#if defined(IFT_SIMT_SANITIZE_THREAD)
  worker_tsan_ = __tsan_get_current_fiber();
#endif
}

FiberSet::~FiberSet() {
  // Fibers are parked at the end of a run of Body, with nothing on their stacks to destroy.
  for (Fiber* f : fibers_) {
#if defined(IFT_SIMT_SANITIZE_THREAD)
    __tsan_destroy_fiber(f->tsan);
#endif
    delete f;
  }
  if (slot_ >= 0) g_mappings[slot_].store(0, std::memory_order_release);
  munmap(mapping_, mapping_bytes_);
  if (altstack_ != nullptr) {
    stack_t ss{};
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, nullptr);
    delete[] altstack_;
  }
}

void FiberSet::reserve(int n) {
  IFT_CHECK(n <= kMaxFibers, "simt: a block has at most ", kMaxFibers, " threads (got ", n, ")");
  while (static_cast<int>(fibers_.size()) < n) {
    const int i = static_cast<int>(fibers_.size());
    char* stack_lo = mapping_ + i * kStride + kGuardBytes;
    if (mprotect(stack_lo, kStackBytes + kColourBytes, PROT_READ | PROT_WRITE) != 0) fail("simt: cannot map a fiber stack");
    auto* f = new Fiber{this, i, nullptr, stack_lo};
    const size_t usable = kStackBytes + kColourBytes - (i % 64) * 64;
    f->ctx = ctx::make_fcontext(stack_lo + usable, usable, &FiberSet::entry);
#if defined(IFT_SIMT_SANITIZE_THREAD)
    f->tsan = __tsan_create_fiber(0);
#endif
    fibers_.push_back(f);
  }
}

void FiberSet::resume(int i) {
  Fiber* f = fibers_[i];
  current_ = i;
#if defined(IFT_SIMT_SANITIZE_ADDRESS)
  void* worker_fake = nullptr;
  __sanitizer_start_switch_fiber(&worker_fake, f->stack_lo, kStackBytes + kColourBytes);
#endif
#if defined(IFT_SIMT_SANITIZE_THREAD)
  // no_sync: a switch is not a synchronisation between CUDA threads; barriers and warp
  // collectives say where those are.
  __tsan_switch_to_fiber(f->tsan, __tsan_switch_to_fiber_no_sync);
#endif
  const ctx::transfer_t back = ctx::jump_fcontext(f->ctx, f);
#if defined(IFT_SIMT_SANITIZE_ADDRESS)
  __sanitizer_finish_switch_fiber(worker_fake, nullptr, nullptr);
#endif
  f->ctx = back.fctx;
  current_ = -1;
}

void FiberSet::suspend() {
  [[maybe_unused]] Fiber* f = fibers_[current_];
#if defined(IFT_SIMT_SANITIZE_ADDRESS)
  __sanitizer_start_switch_fiber(&f->fake_stack, worker_stack_, worker_stack_bytes_);
#endif
#if defined(IFT_SIMT_SANITIZE_THREAD)
  __tsan_switch_to_fiber(worker_tsan_, __tsan_switch_to_fiber_no_sync);
#endif
  const ctx::transfer_t t = ctx::jump_fcontext(worker_ctx_, nullptr);
  // Resumed by the worker: t.fctx is the worker's context to jump back to next time.
  worker_ctx_ = t.fctx;
#if defined(IFT_SIMT_SANITIZE_ADDRESS)
  __sanitizer_finish_switch_fiber(f->fake_stack, &worker_stack_, &worker_stack_bytes_);
#endif
}

void FiberSet::entry(ctx::transfer_t t) {
  auto* f = static_cast<Fiber*>(t.data);
  FiberSet* set = f->set;
  set->worker_ctx_ = t.fctx;
#if defined(IFT_SIMT_SANITIZE_ADDRESS)
  __sanitizer_finish_switch_fiber(nullptr, &set->worker_stack_, &set->worker_stack_bytes_);
#endif
  // Never returns: returning from an fcontext entry function ends the OS thread.
  for (;;) {
    set->body_(f->index);
    set->suspend();
  }
}

}  // namespace ift::simt::detail
