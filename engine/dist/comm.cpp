// The launcher's environment, slices, the single-process communicator, the watchdog, and the
// choice of communicator for a process.
#include "engine/dist/comm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "engine/base/error.h"
#include "engine/dist/impl.h"

namespace ift::dist {

namespace {

// An integer environment variable; `fallback` when unset. A set but malformed value is an error.
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  IFT_CHECK(*end == 0 && x >= 0 && x < (1 << 24), "environment variable ", name, "='", v, "' is not a rank or size");
  return static_cast<int>(x);
}

class SingleCommunicator final : public Communicator {
 public:
  const char* name() const override { return "single"; }
  void all_reduce_sum(float*, size_t, BackendKind) override {}
  void reduce_scatter_sum(float*, std::span<const Slice>, BackendKind) override {}
  void all_gather(void*, std::span<const Slice>, size_t, BackendKind) override {}
  void all_gather_host(const void* in, size_t bytes, void* out) override { std::memcpy(out, in, bytes); }
  [[noreturn]] void abort(int status) override { std::_Exit(status); }
};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::mutex g_mutex;
std::unique_ptr<Communicator> g_comm;

}  // namespace

Launch detect_launch() {
  Launch l;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    l.kind = Launch::Kind::mpirun;
    l.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    l.world = env_int("OMPI_COMM_WORLD_SIZE", 1);
    l.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
  } else if (std::getenv("SLURM_PROCID") && std::getenv("SLURM_STEP_ID") && std::getenv("SLURM_NTASKS")) {
    l.kind = Launch::Kind::srun;
    l.rank = env_int("SLURM_PROCID", 0);
    l.world = env_int("SLURM_NTASKS", 1);
    l.local_rank = env_int("SLURM_LOCALID", 0);
  } else if (std::getenv("WORLD_SIZE") && std::getenv("RANK")) {
    l.kind = Launch::Kind::torchrun;
    l.rank = env_int("RANK", 0);
    l.world = env_int("WORLD_SIZE", 1);
    l.local_rank = env_int("LOCAL_RANK", 0);
  }
  IFT_CHECK(l.world >= 1 && l.rank < l.world, name_of(l.kind), ": rank ", l.rank, " is not below the world size ", l.world);
  return l;
}

const char* name_of(Launch::Kind kind) {
  switch (kind) {
    case Launch::Kind::mpirun: return "mpirun";
    case Launch::Kind::srun: return "srun";
    case Launch::Kind::torchrun: return "torchrun";
    default: return "none";
  }
}

Slice slice_of(size_t n, int rank, int world) {
  constexpr size_t kAlign = 64;
  const size_t per = (n / kAlign + world - 1) / world * kAlign;  // aligned part; the last takes the rest
  const size_t begin = std::min(n, per * rank);
  const size_t end = rank == world - 1 ? n : std::min(n, per * (rank + 1));
  return {begin, end};
}

std::vector<Slice> Communicator::even_parts(size_t n) const {
  std::vector<Slice> parts(world_);
  for (int r = 0; r < world_; ++r) parts[r] = slice_of(n, r, world_);
  return parts;
}

namespace {
template <class T>
T gathered_sum(Communicator& comm, T x) {
  std::vector<T> all(comm.world());
  comm.all_gather_host(&x, sizeof x, all.data());
  T s = 0;
  for (T v : all) s += v;
  return s;
}
}  // namespace

double Communicator::sum(double x) { return gathered_sum(*this, x); }
int64_t Communicator::sum(int64_t x) { return gathered_sum(*this, x); }

bool Communicator::any(bool x) { return sum(int64_t(x ? 1 : 0)) > 0; }

void Communicator::check_same(uint64_t value, const std::string& what) {
  std::vector<uint64_t> all(world_);
  all_gather_host(&value, sizeof value, all.data());
  for (int r = 1; r < world_; ++r)
    IFT_CHECK(all[r] == all[0], what, " differs between rank 0 and rank ", r, " (hash ", all[0], " vs ", all[r],
              "): every rank must run the same configuration");
}

void sum_in_rank_order(const float* parts, int world, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = parts[i];
  for (int r = 1; r < world; ++r) {
    const float* p = parts + size_t(r) * n;
    for (size_t i = 0; i < n; ++i) out[i] += p[i];
  }
}

Watchdog::Watchdog(int rank, double timeout_s) : rank_(rank), timeout_s_(timeout_s) {
  if (timeout_s_ > 0) thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  done_ = true;
  if (thread_.joinable()) thread_.join();
}

Watchdog::Guard::Guard(Watchdog& w, const char* what) : w_(w) {
  w_.since_ns_ = now_ns();
  w_.what_ = what;
}

Watchdog::Guard::~Guard() { w_.what_ = nullptr; }

void Watchdog::run() {
  while (!done_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const char* what = what_.load();
    if (!what) continue;
    const double secs = double(now_ns() - since_ns_.load()) * 1e-9;
    if (secs > timeout_s_) {
      std::fprintf(stderr, "ift: rank %d: collective '%s' has not finished after %.0f s (distributed.timeout_s): a peer "
                   "rank died or hangs; ending this rank\n", rank_, what, secs);
      std::fflush(stderr);
      std::_Exit(1);
    }
  }
}

Communicator& process_communicator(BackendKind backend, double timeout_s) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_comm) return *g_comm;
  const Launch l = detect_launch();
  if (l.world == 1) {
    g_comm = std::make_unique<SingleCommunicator>();
  } else if (backend == BackendKind::cuda) {
    IFT_CHECK(have_nccl(), "launched by ", name_of(l.kind), " with ", l.world,
              " ranks on the cuda backend, but this build has no NCCL (build with CUDA)");
    g_comm = make_nccl_communicator(l, timeout_s);
  } else {
    IFT_CHECK(l.kind != Launch::Kind::torchrun, "launched by torchrun with ", l.world, " ranks on the ", name_of(backend),
              " backend: torchrun runs go through NCCL (the cuda backend); launch cpu and emu runs with mpirun or srun");
    IFT_CHECK(have_mpi(), "launched by ", name_of(l.kind), " with ", l.world,
              " ranks, but this build has no MPI (apt-get install libopenmpi-dev, tools/setup.sh, and rebuild)");
    g_comm = make_mpi_communicator(l, timeout_s);
  }
  return *g_comm;
}

Communicator* existing_communicator() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_comm.get();
}

}  // namespace ift::dist
