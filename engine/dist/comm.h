// Communicators for data parallelism: one process, MPI (cpu and emu backends: host memory), NCCL
// (cuda backend: device memory). Which one a process gets follows from the launcher that started
// it (mpirun, srun, torchrun, or none) and the backend.
//
// Every reduction is a sum in rank order (rank 0's value + rank 1's + ...), carried out by the rank
// that owns the slice: reduce-scatter is an all-to-all of the slices followed by that ordered sum,
// all-reduce is reduce-scatter followed by all-gather. So on MPI the result has the same bits on
// every rank and in every run of the same world size, whatever the transport. NCCL's own ring or
// tree reduction is used as is: deterministic for a fixed topology, but not rank-ordered.
//
// A collective that does not finish within the watchdog's time (a peer died or hangs) ends the
// process with a message naming this rank and the collective; under mpirun and srun the launcher
// usually ends the job first, naming the rank that died.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace ift::dist {

// Who started this process, from the launcher's environment:
//   mpirun (OpenMPI): OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK
//   srun (Slurm):     SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (only when SLURM_NTASKS > 1 or
//                     SLURM_STEP_ID is set: a plain sbatch shell is one process)
//   torchrun:         RANK / WORLD_SIZE / LOCAL_RANK (+ MASTER_ADDR / MASTER_PORT)
struct Launch {
  enum class Kind { none, mpirun, srun, torchrun } kind = Kind::none;
  int rank = 0, world = 1, local_rank = 0;
};
Launch detect_launch();
const char* name_of(Launch::Kind kind);

// A contiguous slice [begin, end) of n elements owned by one rank: n split into `world` parts
// whose boundaries are multiples of 64 elements (256 bytes of fp32, as the kernels' vector loads
// want), the last part taking the rest. Some parts may be empty when n is small.
struct Slice {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};
Slice slice_of(size_t n, int rank, int world);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* name() const = 0;  // "single" | "mpi" | "nccl"
  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return local_rank_; }

  // data (n fp32 values in the memory of backend `where`): afterwards every rank holds the sum.
  virtual void all_reduce_sum(float* data, size_t n, BackendKind where) = 0;
  // parts[r] (world of them, disjoint, relative to data) is what rank r owns: afterwards
  // parts[rank] of data holds the sum over the ranks; the rest of data is unspecified.
  virtual void reduce_scatter_sum(float* data, std::span<const Slice> parts, BackendKind where) = 0;
  // parts[r] of data (elements of elem_bytes) goes from rank r to every rank.
  virtual void all_gather(void* data, std::span<const Slice> parts, size_t elem_bytes, BackendKind where) = 0;
  // Host bytes: out (world * bytes) receives every rank's `in`, in rank order.
  virtual void all_gather_host(const void* in, size_t bytes, void* out) = 0;
  // Ends every process of the job now (MPI_Abort, or this process where there is no job to end).
  [[noreturn]] virtual void abort(int status) = 0;

  // The even split of n elements (slice_of for every rank).
  std::vector<Slice> even_parts(size_t n) const;

  // Built on all_gather_host: sums in rank order, the same bits on every rank.
  double sum(double x);
  int64_t sum(int64_t x);
  bool any(bool x);
  void barrier() { (void)sum(int64_t(0)); }
  // Throws naming the first rank whose value differs from rank 0's.
  void check_same(uint64_t value, const std::string& what);

  // Bytes this rank has sent through collectives so far (what `ift bench train --world N` and the
  // metrics report per step).
  int64_t bytes_sent() const { return bytes_sent_; }

 protected:
  int rank_ = 0, world_ = 1, local_rank_ = 0;
  int64_t bytes_sent_ = 0;
};

// The process's communicator, created on first use from detect_launch() and the backend the
// process trains on: single without a launcher, MPI for cpu and emu under mpirun or srun, NCCL
// for cuda (its unique id sent over MPI under mpirun and srun, over TCP at MASTER_ADDR and
// MASTER_PORT + 1 under torchrun). Throws when the launch needs what this build lacks.
// `timeout_s` is the watchdog's limit on one collective.
Communicator& process_communicator(BackendKind backend, double timeout_s = 600);
// Whether process_communicator has been created (for error paths that must not create one).
Communicator* existing_communicator();

// What this build can do (ift info, docs).
bool have_mpi();
bool have_nccl();

}  // namespace ift::dist
