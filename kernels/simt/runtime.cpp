// The block scheduler, barriers, warp collectives, the worker pool and the launch.
//
// A block runs on one OS thread. The scheduler makes passes over the block's threads in the
// schedule order and resumes each ready one; a thread runs until it waits (at a barrier or a warp
// collective) or exits. The last thread to arrive at a barrier, or the last lane to join a warp
// collective, releases the others and carries on. A pass in which no thread could run while some
// are still alive is a deadlock.
//
// ThreadSanitizer: in the thread build this file is not instrumented (the scheduler's own state is
// touched by every fiber without synchronisation, by design), and the happens-before edges between
// CUDA threads are stated explicitly: release on arrival and acquire on departure at barriers and
// warp collectives, each on one of two alternating tokens so that a thread already past a barrier
// cannot lend its later writes to threads that have not left it yet. Block start and end are
// edges between the worker and its fibers only, never between two fibers.
#include "kernels/simt/runtime.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/base/error.h"
#include "kernels/kernel_name.h"
#include "kernels/simt/fiber.h"

#if defined(IFT_SIMT_SANITIZE_THREAD)
#include <sanitizer/tsan_interface.h>
#define IFT_TSAN_RELEASE(addr) __tsan_release(const_cast<void*>(static_cast<const void*>(addr)))
#define IFT_TSAN_ACQUIRE(addr) __tsan_acquire(const_cast<void*>(static_cast<const void*>(addr)))
#else
#define IFT_TSAN_RELEASE(addr) ((void)0)
#define IFT_TSAN_ACQUIRE(addr) ((void)0)
#endif

namespace ift::simt {

// ---- options ----------------------------------------------------------------------------------
namespace {

std::mutex g_options_mutex;
bool g_options_loaded = false;
Options g_options;

Options options_from_env() {
  Options o;
  if (const char* s = std::getenv("IFT_SIMT_SCHEDULE"); s != nullptr && *s != '\0') {
    const std::string v = s;
    if (v == "forward") {
      o.schedule = Schedule::forward;
    } else if (v == "reverse") {
      o.schedule = Schedule::reverse;
    } else if (v == "random" || v.rfind("random:", 0) == 0) {
      o.schedule = Schedule::random;
      if (v.size() > 7) {
        char* end = nullptr;
        o.seed = std::strtoull(v.c_str() + 7, &end, 10);
        IFT_CHECK(*end == '\0', "IFT_SIMT_SCHEDULE: bad seed in '", v, "' (want random:<integer>)");
      }
    } else {
      fail("IFT_SIMT_SCHEDULE must be forward, reverse, random or random:SEED (got '", v, "')");
    }
  }
  if (const char* s = std::getenv("IFT_SIMT_EXIT"); s != nullptr && *s != '\0') {
    const std::string v = s;
    IFT_CHECK(v == "strict" || v == "lenient", "IFT_SIMT_EXIT must be strict or lenient (got '", v, "')");
    o.strict_exit = v == "strict";
  }
  if (const char* s = std::getenv("IFT_SIMT_WORKERS"); s != nullptr && *s != '\0') {
    char* end = nullptr;
    const long n = std::strtol(s, &end, 10);
    IFT_CHECK(*end == '\0' && n >= 0 && n <= 1024, "IFT_SIMT_WORKERS must be an integer in [0, 1024] (got '", s, "')");
    o.workers = static_cast<int>(n);
  }
  return o;
}

}  // namespace

Options options() {
  std::lock_guard lock(g_options_mutex);
  if (!g_options_loaded) {
    g_options = options_from_env();
    g_options_loaded = true;
  }
  return g_options;
}

void set_options(const Options& o) {
  std::lock_guard lock(g_options_mutex);
  g_options = o;
  g_options_loaded = true;
}

namespace detail {
namespace {

// Thrown inside a fiber to unwind a CUDA thread whose block is being abandoned.
struct Abort {};

enum class State : uint8_t { ready, at_barrier, in_warp_op, done };

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::shfl_idx: return "__shfl_sync";
    case WarpOp::shfl_up: return "__shfl_up_sync";
    case WarpOp::shfl_down: return "__shfl_down_sync";
    case WarpOp::shfl_xor: return "__shfl_xor_sync";
    case WarpOp::ballot: return "__ballot_sync";
    case WarpOp::any: return "__any_sync";
    case WarpOp::all: return "__all_sync";
    case WarpOp::syncwarp: return "__syncwarp";
    case WarpOp::mma_sync: return "mma.sync (mma_m16n8k16_bf16)";
    case WarpOp::ldmatrix: return "ldmatrix";
  }
  return "?";
}

bool is_shuffle(WarpOp op) { return op <= WarpOp::shfl_xor; }
bool is_gather(WarpOp op) { return op == WarpOp::mma_sync || op == WarpOp::ldmatrix; }

std::string where(const std::source_location& s) {
  std::ostringstream os;
  os << s.file_name() << ":" << s.line() << " (" << s.function_name() << ")";
  return os.str();
}

bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

std::string hex(unsigned v) {
  std::ostringstream os;
  os << "0x" << std::hex << v;
  return os.str();
}

struct ThreadSlot {
  State state = State::ready;
  uint3 idx{};
  std::source_location site;  // where it waits
  CpAsyncQueue cp_async;      // its pending cp.async copies
  std::vector<CpAsyncCopy> cp_async_storage;
};

// A lane's part in a pending warp collective.
struct LaneOp {
  unsigned mask;
  WarpOp op;
  int width;
  int arg;
  LaneWords value;
  LaneWords result;
  LaneWords* gather_out;  // gathers: where this lane receives every lane's value
  std::source_location site;
};

struct WarpState {
  unsigned waiting = 0;  // lanes that have joined a collective not complete yet
  unsigned gone = 0;     // lanes that exited, or do not exist in a partial last warp
  LaneOp lane[32];
  uint8_t generation[32];  // per lowest lane of a mask: parity picks the TSan token
  char token[32][2];       // TSan sync addresses
};

struct Launch {
  KernelRef kernel;
  dim3 grid, block;
  size_t smem_bytes;
  size_t shared_limit;  // static + dynamic: kDefaultSharedBytes, or kMaxDynamicSharedBytes once opted in
  Thunk thunk;
  const void* call;
  std::source_location site;
  Options opts;
  uint64_t total_blocks;
  uint64_t perm_mul = 1, perm_add = 0;  // random block order: k -> (mul * k + add) mod total
  int workers;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::string error;
};

struct Worker;
void thread_body(int index);

struct Worker {
  FiberSet fibers{&thread_body};
  // The block being run.
  Launch* launch = nullptr;
  int nthreads = 0;
  std::vector<ThreadSlot> threads;
  std::vector<WarpState> warps;
  std::vector<int> order;
  std::mt19937_64 rng;
  int current = -1;
  int live = 0, exited = 0, arrived = 0;
  std::source_location barrier_site;
  int barrier_first = -1;
  unsigned barrier_generation = 0;
  bool aborting = false;
  std::string error;
  std::byte* smem = nullptr;
  // The static shared variables reached in this launch (IFT_SHARED) and their bytes.
  std::vector<std::pair<const void*, size_t>> static_seen;
  size_t static_bytes = 0;
  char barrier_token[2];
  char start_token, end_token;
};

thread_local std::unique_ptr<Worker> t_worker;
thread_local bool t_in_launch = false;

Worker& worker() {
  if (!t_worker) t_worker = std::make_unique<Worker>();
  return *t_worker;
}

std::string thread_name(const Worker& w, int i) {
  const uint3 t = w.threads[i].idx;
  std::ostringstream os;
  os << "thread (" << t.x << "," << t.y << "," << t.z << ")";
  return os.str();
}

// Records the first error of the block (later ones are consequences of it).
void record_error(Worker& w, int thread, const std::string& what) {
  if (!w.error.empty()) return;
  std::ostringstream os;
  os << "block (" << blockIdx.x << "," << blockIdx.y << "," << blockIdx.z << ")";
  if (thread >= 0) os << " " << thread_name(w, thread);
  os << ": " << what;
  w.error = os.str();
  // The message is written by a fiber and read by the worker and the launching thread.
  IFT_TSAN_RELEASE(&w.error);
}

// From inside a fiber: report and unwind this CUDA thread.
[[noreturn]] void fail_here(Worker& w, const std::string& what) {
  record_error(w, w.current, what);
  throw Abort{};
}

void wait_here(Worker& w) {
  w.fibers.suspend();
  if (w.aborting) throw Abort{};
}

void thread_exit(Worker& w, int i) {
  ThreadSlot& t = w.threads[i];
  t.state = State::done;
  --w.live;
  ++w.exited;
  if (w.aborting) return;
  if (t.cp_async.count > 0) {
    record_error(w, i, "exited with " + std::to_string(t.cp_async.count) +
                           " cp.async copies not completed by cp.async.wait_group (their data would land after the thread stopped reading)");
    return;
  }
  WarpState& warp = w.warps[i / 32];
  const unsigned bit = 1u << (i % 32);
  warp.gone |= bit;
  for (unsigned pending = warp.waiting; pending != 0; pending &= pending - 1) {
    const LaneOp& op = warp.lane[std::countr_zero(pending)];
    if (op.mask & bit) {
      record_error(w, i, "exited (or took another path) while lanes " + hex(warp.waiting & op.mask) + " of its warp wait for it in " +
                             op_name(op.op) + "(mask " + hex(op.mask) + ") at " + where(op.site));
      return;
    }
  }
  if (w.arrived > 0) {
    if (w.launch->opts.strict_exit) {
      record_error(w, i, "exited while " + std::to_string(w.arrived) + " threads wait at __syncthreads at " + where(w.barrier_site) +
                             " (every thread of a block must reach every barrier; IFT_SIMT_EXIT=lenient tolerates exited threads)");
      return;
    }
    if (w.arrived == w.live) {
      for (auto& s : w.threads)
        if (s.state == State::at_barrier) s.state = State::ready;
      w.arrived = 0;
      ++w.barrier_generation;
    }
  }
}

void thread_body(int index) {
  Worker& w = *t_worker;
  IFT_TSAN_ACQUIRE(&w.start_token);
  if (!w.aborting) {
    try {
      w.launch->thunk(w.launch->call);
    } catch (const Abort&) {
    } catch (const std::exception& e) {
      record_error(w, index, e.what());
    } catch (...) {
      record_error(w, index, "kernel threw an exception that is not a std::exception");
    }
  }
  IFT_TSAN_RELEASE(&w.end_token);
  thread_exit(w, index);
}

std::string deadlock_message(const Worker& w) {
  std::ostringstream os;
  os << "deadlock: no thread can run.";
  if (w.arrived > 0) os << " " << w.arrived << " of " << w.live << " live threads wait at __syncthreads at " << where(w.barrier_site) << ";";
  int shown = 0;
  for (size_t wi = 0; wi < w.warps.size() && shown < 4; ++wi) {
    const WarpState& warp = w.warps[wi];
    if (warp.waiting == 0) continue;
    const LaneOp& op = warp.lane[std::countr_zero(warp.waiting)];
    os << " warp " << wi << ": lanes " << hex(warp.waiting) << " wait in " << op_name(op.op) << "(mask " << hex(op.mask) << ") at "
       << where(op.site) << " for lanes " << hex(op.mask & ~warp.waiting) << ";";
    ++shown;
  }
  os << " (a barrier inside divergent code, or a warp collective not reached by every lane in its mask)";
  return os.str();
}

void run_block(Worker& w, uint3 block_idx) {
  Launch& l = *w.launch;
  blockIdx = block_idx;
  for (int i = 0; i < w.nthreads; ++i) {
    w.threads[i].state = State::ready;
    w.threads[i].cp_async.count = 0;
    w.threads[i].cp_async.committed = 0;
    w.order[i] = l.opts.schedule == Schedule::reverse ? w.nthreads - 1 - i : i;
  }
  for (size_t wi = 0; wi < w.warps.size(); ++wi) {
    WarpState& warp = w.warps[wi];
    warp.waiting = 0;
    const int lanes = std::min(32, w.nthreads - static_cast<int>(wi) * 32);
    warp.gone = lanes == 32 ? 0u : ~((1u << lanes) - 1);
  }
  w.live = w.nthreads;
  w.exited = w.arrived = 0;
  w.aborting = false;
  w.error.clear();
  if (l.opts.schedule == Schedule::random) {
    const uint64_t linear = block_idx.x + uint64_t{l.grid.x} * (block_idx.y + uint64_t{l.grid.y} * block_idx.z);
    w.rng.seed(l.opts.seed * 0x9E3779B97F4A7C15ull + linear);
  }
  // Shared memory is not initialised on a GPU: a recognisable NaN pattern makes reads of it show.
  std::memset(w.smem, 0xff, l.smem_bytes);
  IFT_TSAN_RELEASE(&w.start_token);

  while (w.error.empty()) {
    if (l.opts.schedule == Schedule::random) std::shuffle(w.order.begin(), w.order.end(), w.rng);
    bool ran = false;
    for (int i : w.order) {
      if (w.threads[i].state != State::ready) continue;
      ran = true;
      threadIdx = w.threads[i].idx;
      w.current = i;
      w.fibers.resume(i);
      if (!w.error.empty()) break;
    }
    if (w.live == 0) break;
    if (!ran && w.error.empty()) {
      record_error(w, -1, deadlock_message(w));
    }
  }
  if (!w.error.empty()) {
    // Unwind every thread that has not finished, so each fiber is parked at the top again.
    w.aborting = true;
    for (int i = 0; i < w.nthreads; ++i) {
      if (w.threads[i].state == State::done) continue;
      threadIdx = w.threads[i].idx;
      w.current = i;
      w.fibers.resume(i);
    }
  }
  IFT_TSAN_ACQUIRE(&w.end_token);
  w.current = -1;
}

uint3 block_index(const Launch& l, uint64_t k) {
  uint64_t b = k;
  if (l.opts.schedule == Schedule::reverse) b = l.total_blocks - 1 - k;
  if (l.opts.schedule == Schedule::random) b = (l.perm_mul * (k % l.total_blocks) + l.perm_add) % l.total_blocks;
  const uint64_t gx = l.grid.x, gy = l.grid.y;
  return uint3{static_cast<unsigned>(b % gx), static_cast<unsigned>(b / gx % gy), static_cast<unsigned>(b / (gx * gy))};
}

// Runs blocks of `l` on the calling OS thread until none are left.
void work(Launch& l) {
  Worker& w = worker();
  w.launch = &l;
  w.nthreads = static_cast<int>(l.block.x * l.block.y * l.block.z);
  w.fibers.reserve(w.nthreads);
  w.threads.resize(w.nthreads);
  w.order.resize(w.nthreads);
  w.warps.resize((w.nthreads + 31) / 32);
  for (int i = 0; i < w.nthreads; ++i) {
    const unsigned u = static_cast<unsigned>(i);
    w.threads[i].idx = uint3{u % l.block.x, u / l.block.x % l.block.y, u / (l.block.x * l.block.y)};
  }
  // Exactly the requested size, so that AddressSanitizer sees any access past it.
  w.smem = static_cast<std::byte*>(::operator new(l.smem_bytes, std::align_val_t{16}));
  w.static_seen.clear();
  w.static_bytes = 0;
  blockDim = l.block;
  gridDim = l.grid;
  t_in_launch = true;
  while (!l.failed.load(std::memory_order_relaxed)) {
    const uint64_t k = l.next.fetch_add(1, std::memory_order_relaxed);
    if (k >= l.total_blocks) break;
    run_block(w, block_index(l, k));
    if (!w.error.empty()) {
      IFT_TSAN_ACQUIRE(&w.error);
      std::lock_guard lock(l.error_mutex);
      if (l.error.empty()) l.error = w.error;
      l.failed = true;
    }
  }
  t_in_launch = false;
  ::operator delete(w.smem, std::align_val_t{16});
  w.smem = nullptr;
  w.launch = nullptr;
}

// OS threads that run blocks beside the launching thread, created when first needed.
class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // Runs `l` on l.workers OS threads, the caller being one of them.
  void run(Launch& l) {
    {
      std::lock_guard lock(mutex_);
      while (static_cast<int>(threads_.size()) < l.workers - 1) {
        const int index = static_cast<int>(threads_.size());
        threads_.emplace_back([this, index, seen = job_id_] { loop(index, seen); });
      }
      job_ = &l;
      ++job_id_;
      busy_ = static_cast<int>(threads_.size());
    }
    wake_.notify_all();
    work(l);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [this] { return busy_ == 0; });
    job_ = nullptr;
  }

 private:
  // `seen`: the last job before this thread existed, so that it starts with the next one.
  void loop(int index, uint64_t seen) {
    for (;;) {
      Launch* job = nullptr;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || job_id_ != seen; });
        if (stop_) return;
        seen = job_id_;
        job = job_;
      }
      if (index < job->workers - 1) work(*job);
      {
        std::lock_guard lock(mutex_);
        --busy_;
      }
      done_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  Launch* job_ = nullptr;
  uint64_t job_id_ = 0;
  int busy_ = 0;
  bool stop_ = false;
};

std::string config_error(dim3 grid, dim3 block, size_t smem) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  std::ostringstream os;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0) os << "empty grid or block";
  else if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    os << "block (" << block.x << "," << block.y << "," << block.z << ") exceeds 1024 threads or the per-dimension limits (1024, 1024, 64)";
  else if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    os << "grid (" << grid.x << "," << grid.y << "," << grid.z << ") exceeds the limits (2^31-1, 65535, 65535)";
  else if (smem > kMaxDynamicSharedBytes)
    os << smem << " bytes of dynamic shared memory exceed the " << kMaxDynamicSharedBytes << " a block can have";
  return os.str();
}

}  // namespace

void block_barrier(const std::source_location& site) {
  Worker& w = *t_worker;
  const int i = w.current;
  [[maybe_unused]] const unsigned generation = w.barrier_generation;
  IFT_TSAN_RELEASE(&w.barrier_token[generation & 1]);
  if (w.arrived == 0) {
    w.barrier_site = site;
    w.barrier_first = i;
  } else if (!same_site(site, w.barrier_site)) {
    fail_here(w, "divergent __syncthreads: this thread waits at " + where(site) + " while " + thread_name(w, w.barrier_first) +
                     " waits at " + where(w.barrier_site) + " (a barrier must be reached by every thread from the same place)");
  }
  w.threads[i].site = site;
  if (++w.arrived == w.live) {
    if (w.exited > 0 && w.launch->opts.strict_exit)
      fail_here(w, std::to_string(w.exited) + " threads of the block exited before reaching __syncthreads at " + where(site) +
                       " (every thread of a block must reach every barrier; IFT_SIMT_EXIT=lenient tolerates exited threads)");
    for (auto& s : w.threads)
      if (s.state == State::at_barrier) s.state = State::ready;
    w.arrived = 0;
    ++w.barrier_generation;
  } else {
    w.threads[i].state = State::at_barrier;
    wait_here(w);
  }
  IFT_TSAN_ACQUIRE(&w.barrier_token[generation & 1]);
}

namespace {
// The common part of warp_collective and warp_gather.
LaneWords collective(WarpOp op, unsigned mask, const LaneWords& value, int arg, int width, LaneWords* gather_out,
                     const std::source_location& site) {
  Worker& w = *t_worker;
  const int i = w.current;
  WarpState& warp = w.warps[i / 32];
  const int lane = i % 32;
  const unsigned bit = 1u << lane;
  const auto call = [&] { return std::string(op_name(op)) + "(mask " + hex(mask) + ") at " + where(site); };

  if (!(mask & bit)) fail_here(w, call() + ": the calling lane " + std::to_string(lane) + " is not in the mask");
  if (is_shuffle(op) && (width < 1 || width > 32 || (width & (width - 1)) != 0))
    fail_here(w, call() + ": width " + std::to_string(width) + " is not a power of two in [1, 32]");
  if (mask & warp.gone)
    fail_here(w, call() + ": the mask names lanes " + hex(mask & warp.gone) +
                       " that have exited or do not exist (every lane named in a mask must call the same collective with the same mask)");
  if (const unsigned joined = warp.waiting & mask; joined != 0) {
    const LaneOp& other = warp.lane[std::countr_zero(joined)];
    if (other.mask != mask || other.op != op || (is_shuffle(op) && other.width != width))
      fail_here(w, call() + (is_shuffle(op) ? " width " + std::to_string(width) : "") + " does not match lane " +
                       std::to_string(std::countr_zero(joined)) + ", which waits in " + op_name(other.op) + "(mask " + hex(other.mask) + ")" +
                       (is_shuffle(other.op) ? " width " + std::to_string(other.width) : "") + " at " + where(other.site));
  }
  for (unsigned others = warp.waiting & ~mask; others != 0; others &= others - 1) {
    const LaneOp& other = warp.lane[std::countr_zero(others)];
    if (other.mask & bit)
      fail_here(w, call() + ": lane " + std::to_string(std::countr_zero(others)) + " waits for this lane in " + op_name(other.op) +
                       "(mask " + hex(other.mask) + ") at " + where(other.site) + " (every lane named in a mask must pass the same mask)");
  }

  const int leader = std::countr_zero(mask);
  [[maybe_unused]] const unsigned generation = warp.generation[leader];
  IFT_TSAN_RELEASE(&warp.token[leader][generation & 1]);
  warp.lane[lane] = LaneOp{mask, op, width, arg, value, LaneWords{}, gather_out, site};
  warp.waiting |= bit;
  if ((warp.waiting & mask) == mask) {
    // Everyone is here: compute every lane's result (PTX ISA, shfl.sync: lanes are grouped in
    // segments of `width`; a source outside the lane's segment yields the lane's own value).
    uint32_t ballot = 0;
    for (unsigned m = mask; m != 0; m &= m - 1) {
      const int l = std::countr_zero(m);
      if (warp.lane[l].value.w[0] != 0) ballot |= 1u << l;
    }
    for (unsigned m = mask; m != 0; m &= m - 1) {
      const int l = std::countr_zero(m);
      LaneOp& me = warp.lane[l];
      if (is_gather(op)) {
        for (unsigned n = mask; n != 0; n &= n - 1) me.gather_out[std::countr_zero(n)] = warp.lane[std::countr_zero(n)].value;
        continue;
      }
      if (!is_shuffle(op)) {
        me.result = LaneWords{{ballot, 0, 0, 0}};
        continue;
      }
      const int seg_start = l & ~(width - 1), seg_end = seg_start + width - 1;
      const int b = me.arg;
      int src = l;
      bool valid = true;
      switch (op) {
        case WarpOp::shfl_idx: src = seg_start + (b & (width - 1)); break;
        case WarpOp::shfl_up: src = l - b; valid = src >= seg_start; break;
        case WarpOp::shfl_down: src = l + b; valid = src <= seg_end; break;
        case WarpOp::shfl_xor: src = l ^ b; valid = src <= seg_end; break;
        default: break;
      }
      if (!valid || src < 0 || src > 31) src = l;
      if (!(mask & (1u << src)))
        fail_here(w, call() + ": lane " + std::to_string(l) + " reads lane " + std::to_string(src) + ", which is not in the mask");
      me.result = warp.lane[src].value;
    }
    warp.waiting &= ~mask;
    ++warp.generation[leader];
    // The gathers' results were written into the other lanes' buffers after this lane's release
    // above: release again, so that their acquire below orders those writes before their reads.
    IFT_TSAN_RELEASE(&warp.token[leader][generation & 1]);
    for (unsigned m = mask & ~bit; m != 0; m &= m - 1) w.threads[(i / 32) * 32 + std::countr_zero(m)].state = State::ready;
  } else {
    w.threads[i].state = State::in_warp_op;
    w.threads[i].site = site;
    wait_here(w);
  }
  IFT_TSAN_ACQUIRE(&warp.token[leader][generation & 1]);
  return warp.lane[lane].result;
}
}  // namespace

LaneWords warp_collective(WarpOp op, unsigned mask, const LaneWords& value, int arg, int width,
                          const std::source_location& site) {
  IFT_ASSERT(!is_gather(op));
  return collective(op, mask, value, arg, width, nullptr, site);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const std::source_location& site) {
  const LaneWords r = warp_collective(op, mask, LaneWords{{static_cast<uint32_t>(value), static_cast<uint32_t>(value >> 32), 0, 0}},
                                      arg, width, site);
  return r.w[0] | uint64_t{r.w[1]} << 32;
}

void warp_gather(WarpOp op, unsigned mask, const LaneWords& value, LaneWords (&out)[32], const std::source_location& site) {
  IFT_ASSERT(is_gather(op));
  collective(op, mask, value, 0, 32, out, site);
}

bool in_shared(const void* p, size_t bytes) {
  const Worker& w = *t_worker;
  const auto* b = static_cast<const std::byte*>(p);
  if (b >= w.smem && b + bytes <= w.smem + w.launch->smem_bytes && bytes <= w.launch->smem_bytes) return true;
  for (const auto& [address, size] : w.static_seen) {
    const auto* s = static_cast<const std::byte*>(address);
    if (b >= s && b + bytes <= s + size) return true;
  }
  return false;
}

CpAsyncQueue& cp_async_queue() {
  Worker& w = *t_worker;
  return w.threads[w.current].cp_async;
}

CpAsyncCopy& cp_async_push() {
  Worker& w = *t_worker;
  ThreadSlot& t = w.threads[w.current];
  CpAsyncQueue& q = t.cp_async;
  if (q.count == static_cast<int>(t.cp_async_storage.size())) {
    t.cp_async_storage.resize(std::max<size_t>(16, 2 * t.cp_async_storage.size()));
  }
  q.pending = t.cp_async_storage.data();
  q.capacity = static_cast<int>(t.cp_async_storage.size());
  return q.pending[q.count++];
}

void* dynamic_shared() { return t_worker->smem; }

namespace {
std::mutex g_opt_in_mutex;
std::unordered_map<const void*, size_t> g_opt_in;  // kernel -> MaxDynamicSharedMemorySize

// 0 when the kernel has not opted in.
size_t opted_in_bytes(const void* fn) {
  std::lock_guard lock(g_opt_in_mutex);
  const auto it = g_opt_in.find(fn);
  return it == g_opt_in.end() ? 0 : it->second;
}

std::string shared_advice(size_t limit) {
  return limit == kDefaultSharedBytes
             ? " a block may use without opting in (opt_in_dynamic_shared in kernels/launch.cuh: cudaFuncSetAttribute "
               "MaxDynamicSharedMemorySize)"
             : " a block may use on the device, even with the opt-in";
}
}  // namespace

void opt_in_dynamic_shared(const void* fn, size_t bytes, const std::source_location& site) {
  IFT_CHECK(bytes <= kMaxDynamicSharedBytes, "simt: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, ", bytes, ") from ",
            where(site), ": more than the ", kMaxDynamicSharedBytes, " bytes of shared memory a block can have");
  std::lock_guard lock(g_opt_in_mutex);
  g_opt_in[fn] = bytes;
}

void static_shared(const void* address, size_t bytes, const std::source_location& site) {
  Worker& w = *t_worker;
  for (const auto& seen : w.static_seen)
    if (seen.first == address) return;
  w.static_seen.emplace_back(address, bytes);
  w.static_bytes += bytes;
  const Launch& l = *w.launch;
  if (w.static_bytes > kDefaultSharedBytes)
    fail_here(w, "kernel " + ift::detail::kernel_name_of(l.kernel.text) + ": " + std::to_string(w.static_bytes) +
                     " bytes of static shared memory (the last declared at " + where(site) + ") exceed the " +
                     std::to_string(kDefaultSharedBytes) + " bytes of static shared memory a kernel can have");
  if (w.static_bytes + l.smem_bytes > l.shared_limit)
    fail_here(w, "kernel " + ift::detail::kernel_name_of(l.kernel.text) + ": " + std::to_string(w.static_bytes + l.smem_bytes) +
                     " bytes of shared memory (" + std::to_string(w.static_bytes) + " static, the last declared at " + where(site) +
                     ", + " + std::to_string(l.smem_bytes) + " dynamic) exceed the " + std::to_string(l.shared_limit) +
                     " bytes" + shared_advice(l.shared_limit));
}

void kernel_fail(const char* what, const std::source_location& site) {
  fail_here(*t_worker, std::string(what) + " at " + where(site));
}

void launch(KernelRef kernel, dim3 grid, dim3 block, size_t smem_bytes, Thunk thunk, const void* call,
            const std::source_location& site) {
  const std::string name = ift::detail::kernel_name_of(kernel.text);
  const std::string from = "kernel " + name + " launched from " + where(site);
  IFT_CHECK(!t_in_launch, "simt: ", from, ": launching a kernel from inside a kernel is not supported");
  if (const std::string bad = config_error(grid, block, smem_bytes); !bad.empty()) fail("simt: ", from, ": invalid configuration: ", bad);
  // As on a GPU: without the opt-in, static + dynamic shared memory is at most 48 KiB; with it, the
  // dynamic part is at most the opted-in size and static + dynamic at most the device's maximum.
  const size_t granted = opted_in_bytes(kernel.fn);
  const size_t dynamic_limit = granted > 0 ? granted : kDefaultSharedBytes;
  if (smem_bytes > dynamic_limit)
    fail("simt: ", from, ": kernel ", name, " asks for ", smem_bytes, " bytes of dynamic shared memory, more than the ", dynamic_limit,
         granted > 0 ? " bytes it opted in to (opt_in_dynamic_shared)" : " bytes" + shared_advice(kDefaultSharedBytes));

  Launch l;
  l.kernel = kernel;
  l.shared_limit = granted > 0 ? kMaxDynamicSharedBytes : kDefaultSharedBytes;
  l.grid = grid;
  l.block = block;
  l.smem_bytes = smem_bytes;
  l.thunk = thunk;
  l.call = call;
  l.site = site;
  l.opts = options();
  l.total_blocks = uint64_t{grid.x} * grid.y * grid.z;
  if (l.opts.schedule == Schedule::random) {
    std::mt19937_64 rng(l.opts.seed);
    do l.perm_mul = rng() % l.total_blocks | 1; while (std::gcd(l.perm_mul, l.total_blocks) != 1);
    l.perm_add = rng() % l.total_blocks;
  }
#if defined(IFT_SIMT_SANITIZE_ADDRESS)
  // `__shared__` is plain `static` in this build (AddressSanitizer does not check thread_local
  // arrays), so only one block may run at a time.
  l.workers = 1;
#else
  l.workers = l.opts.workers > 0 ? l.opts.workers : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#endif
  l.workers = static_cast<int>(std::min<uint64_t>(l.workers, l.total_blocks));

  // One launch at a time: the pool and its workers' fibers serve every launch in the process.
  static std::mutex launch_mutex;
  static Pool pool;
  std::lock_guard lock(launch_mutex);
  pool.run(l);
  if (l.failed) fail("simt: ", from, ": ", l.error);
}

}  // namespace detail
}  // namespace ift::simt
