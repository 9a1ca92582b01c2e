// The MPI communicator (OpenMPI from Debian): host memory (the cpu and emu backends). Reductions
// are an all-to-all of slices and a sum in rank order (engine/dist/comm.h), so their bits do not
// depend on MPI's algorithms or transport.
#include <climits>
#include <cstdio>
#include <vector>

#include "engine/base/error.h"
#include "engine/dist/impl.h"

#if IFT_HAVE_MPI
#include <mpi.h>
#endif

namespace ift::dist {

#if IFT_HAVE_MPI

namespace {

#define IFT_MPI_CHECK(call)                                                                    \
  do {                                                                                         \
    const int ift_rc_ = (call);                                                                \
    if (ift_rc_ != MPI_SUCCESS) {                                                              \
      char ift_msg_[MPI_MAX_ERROR_STRING];                                                     \
      int ift_len_ = 0;                                                                        \
      MPI_Error_string(ift_rc_, ift_msg_, &ift_len_);                                          \
      ::ift::fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ", std::string(ift_msg_, ift_len_)); \
    }                                                                                          \
  } while (0)

int count_of(size_t n) {
  IFT_CHECK(n <= size_t(INT_MAX), "MPI: a slice of ", n, " elements is more than one call can move");
  return static_cast<int>(n);
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(const Launch& l, double timeout_s) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      IFT_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      owns_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    IFT_CHECK(rank_ == l.rank && world_ == l.world, "MPI says rank ", rank_, " of ", world_, ", ", name_of(l.kind),
              "'s environment says ", l.rank, " of ", l.world);
    local_rank_ = l.local_rank;
    watchdog_ = std::make_unique<Watchdog>(rank_, timeout_s);
  }
  ~MpiCommunicator() override {
    watchdog_.reset();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }
  const char* name() const override { return "mpi"; }

  void reduce_scatter_sum(float* data, std::span<const Slice> parts, BackendKind where) override {
    host_only(where);
    Watchdog::Guard g(*watchdog_, "reduce-scatter");
    const Slice mine = parts[rank_];
    std::vector<int> send_counts(world_), send_displs(world_), recv_counts(world_), recv_displs(world_);
    for (int r = 0; r < world_; ++r) {
      send_counts[r] = count_of(parts[r].size()), send_displs[r] = count_of(parts[r].begin);
      recv_counts[r] = count_of(mine.size()), recv_displs[r] = count_of(mine.size() * r);
      if (r != rank_) bytes_sent_ += int64_t(parts[r].size() * sizeof(float));
    }
    pieces_.resize(mine.size() * world_);
    IFT_MPI_CHECK(MPI_Alltoallv(data, send_counts.data(), send_displs.data(), MPI_FLOAT, pieces_.data(), recv_counts.data(),
                                recv_displs.data(), MPI_FLOAT, MPI_COMM_WORLD));
    sum_in_rank_order(pieces_.data(), world_, mine.size(), data + mine.begin);
  }

  void all_gather(void* data, std::span<const Slice> parts, size_t elem_bytes, BackendKind where) override {
    host_only(where);
    Watchdog::Guard g(*watchdog_, "all-gather");
    MPI_Datatype t;
    IFT_MPI_CHECK(MPI_Type_contiguous(count_of(elem_bytes), MPI_BYTE, &t));
    MPI_Type_commit(&t);
    std::vector<int> counts(world_), displs(world_);
    for (int r = 0; r < world_; ++r) counts[r] = count_of(parts[r].size()), displs[r] = count_of(parts[r].begin);
    bytes_sent_ += int64_t(parts[rank_].size() * elem_bytes) * (world_ - 1);
    IFT_MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts.data(), displs.data(), t, MPI_COMM_WORLD));
    MPI_Type_free(&t);
  }

  void all_reduce_sum(float* data, size_t n, BackendKind where) override {
    const std::vector<Slice> parts = even_parts(n);
    reduce_scatter_sum(data, parts, where);
    all_gather(data, parts, sizeof(float), where);
  }

  void all_gather_host(const void* in, size_t bytes, void* out) override {
    Watchdog::Guard g(*watchdog_, "all-gather (host)");
    bytes_sent_ += int64_t(bytes) * (world_ - 1);
    IFT_MPI_CHECK(MPI_Allgather(in, count_of(bytes), MPI_BYTE, out, count_of(bytes), MPI_BYTE, MPI_COMM_WORLD));
  }

  [[noreturn]] void abort(int status) override {
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, status);
    std::_Exit(status);
  }

 private:
  void host_only(BackendKind where) const {
    IFT_CHECK(where != BackendKind::cuda, "the MPI communicator moves host memory; the cuda backend uses NCCL");
  }
  bool owns_ = false;
  std::vector<float> pieces_;  // (world, slice) the pieces of this rank's slice, one per rank
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const Launch& launch, double timeout_s) {
  return std::make_unique<MpiCommunicator>(launch, timeout_s);
}
bool have_mpi() { return true; }

#else

std::unique_ptr<Communicator> make_mpi_communicator(const Launch&, double) {
  fail("this build has no MPI (apt-get install libopenmpi-dev, tools/setup.sh, and rebuild)");
}
bool have_mpi() { return false; }

#endif

}  // namespace ift::dist
