// Shared by the communicator implementations (engine/dist/*.cpp): the watchdog and the factories.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "engine/dist/comm.h"

namespace ift::dist {

// Ends the process when one collective runs past the limit: a rank blocked on a dead or hung peer
// must not wait forever (NCCL and TCP transports may never notice a peer that is gone).
class Watchdog {
 public:
  Watchdog(int rank, double timeout_s);
  ~Watchdog();
  // Marks a collective as in flight for the lifetime of the guard.
  class Guard {
   public:
    Guard(Watchdog& w, const char* what);
    ~Guard();
   private:
    Watchdog& w_;
  };

 private:
  void run();
  int rank_;
  double timeout_s_;
  std::atomic<const char*> what_{nullptr};
  std::atomic<int64_t> since_ns_{0};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

std::unique_ptr<Communicator> make_mpi_communicator(const Launch& launch, double timeout_s);   // mpi.cpp
std::unique_ptr<Communicator> make_nccl_communicator(const Launch& launch, double timeout_s);  // nccl.cpp

// The fixed-order sum of an all-to-all's result: `parts` holds world consecutive pieces of
// `n` values; out = parts[0] + parts[1] + ... in that order (the same bits on every rank).
void sum_in_rank_order(const float* parts, int world, size_t n, float* out);

}  // namespace ift::dist
