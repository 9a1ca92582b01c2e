// The NCCL communicator (the CUDA toolkit's NCCL): device memory, the cuda backend. Each rank
// uses the GPU of its local rank. The NCCL unique id goes from rank 0 to the others over MPI when
// mpirun or srun started the job (and this build has MPI), else over TCP: rank 0 listens on
// MASTER_ADDR, port MASTER_PORT + 1 (torchrun's own store holds MASTER_PORT; IFT_RENDEZVOUS_PORT
// overrides), and the others connect until the watchdog's time runs out.
//
// Compiled and linked in CUDA builds; never run (no GPU where it was written). The collectives run
// on a stream of their own after a device-wide synchronisation: correct, but nothing overlaps the
// backward (docs/distributed.md).
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <nccl.h>

#include "engine/cuda/check.h"
#include "engine/dist/impl.h"

#if IFT_HAVE_MPI
#include <mpi.h>
#endif

namespace ift::dist {

namespace {

void send_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t k = ::send(fd, c, n, MSG_NOSIGNAL);
    IFT_CHECK(k > 0, "NCCL rendezvous: send failed: ", std::strerror(errno));
    c += k, n -= size_t(k);
  }
}

void recv_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t k = ::recv(fd, c, n, 0);
    IFT_CHECK(k > 0, "NCCL rendezvous: the connection to rank 0 closed before the NCCL id arrived");
    c += k, n -= size_t(k);
  }
}

// Rank 0 serves the id to world - 1 connections; the others fetch it.
void tcp_rendezvous(ncclUniqueId& id, const Launch& l, double timeout_s) {
  const char* addr = std::getenv("MASTER_ADDR");
  const char* port_env = std::getenv("IFT_RENDEZVOUS_PORT");
  const char* master_port = std::getenv("MASTER_PORT");
  IFT_CHECK(addr && (port_env || master_port), name_of(l.kind),
            " launch without MPI: MASTER_ADDR and MASTER_PORT must say where rank 0 is (torchrun sets them)");
  const int port = port_env ? std::atoi(port_env) : std::atoi(master_port) + 1;
  IFT_CHECK(port > 0 && port < 65536, "NCCL rendezvous: port ", port, " is not a TCP port");
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET, hints.ai_socktype = SOCK_STREAM;
  if (l.rank == 0) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    IFT_CHECK(fd >= 0, "NCCL rendezvous: socket: ", std::strerror(errno));
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET, a.sin_port = htons(uint16_t(port)), a.sin_addr.s_addr = htonl(INADDR_ANY);
    IFT_CHECK(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "NCCL rendezvous: rank 0 cannot listen on port ",
              port, ": ", std::strerror(errno), " (set IFT_RENDEZVOUS_PORT)");
    IFT_CHECK(::listen(fd, l.world) == 0, "NCCL rendezvous: listen: ", std::strerror(errno));
    for (int i = 1; i < l.world; ++i) {
      const int c = ::accept(fd, nullptr, nullptr);
      IFT_CHECK(c >= 0, "NCCL rendezvous: accept: ", std::strerror(errno));
      send_all(c, &id, sizeof id);
      ::close(c);
    }
    ::close(fd);
    return;
  }
  IFT_CHECK(::getaddrinfo(addr, std::to_string(port).c_str(), &hints, &res) == 0 && res, "NCCL rendezvous: cannot resolve MASTER_ADDR '",
            addr, "'");
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    const int fd = ::socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    IFT_CHECK(fd >= 0, "NCCL rendezvous: socket: ", std::strerror(errno));
    if (::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
      recv_all(fd, &id, sizeof id);
      ::close(fd);
      break;
    }
    ::close(fd);
    IFT_CHECK(std::chrono::steady_clock::now() < give_up, "rank ", l.rank, ": rank 0 did not answer at ", addr, ":", port,
              " within distributed.timeout_s");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ::freeaddrinfo(res);
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const Launch& l, double timeout_s) {
    rank_ = l.rank, world_ = l.world, local_rank_ = l.local_rank;
    int devices = 0;
    IFT_CUDA_CHECK(cudaGetDeviceCount(&devices));
    IFT_CHECK(devices > 0, "rank ", rank_, ": no CUDA device");
    IFT_CUDA_CHECK(cudaSetDevice(local_rank_ % devices));
    ncclUniqueId id{};
    if (rank_ == 0) IFT_NCCL_CHECK(ncclGetUniqueId(&id));
    bool sent = false;
#if IFT_HAVE_MPI
    if (l.kind == Launch::Kind::mpirun || l.kind == Launch::Kind::srun) {
      int inited = 0;
      MPI_Initialized(&inited);
      if (!inited) MPI_Init(nullptr, nullptr), owns_mpi_ = true;
      MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
      sent = true;
    }
#endif
    if (!sent) tcp_rendezvous(id, l, timeout_s);
    IFT_NCCL_CHECK(ncclCommInitRank(&comm_, world_, id, rank_));
    IFT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    watchdog_ = std::make_unique<Watchdog>(rank_, timeout_s);
  }
  ~NcclCommunicator() override {
    watchdog_.reset();
    if (scratch_) cudaFree(scratch_);
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
#if IFT_HAVE_MPI
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_mpi_ && !finalized) MPI_Finalize();
#endif
  }
  const char* name() const override { return "nccl"; }

  void all_reduce_sum(float* data, size_t n, BackendKind where) override {
    device_only(where);
    Watchdog::Guard g(*watchdog_, "all-reduce");
    IFT_CUDA_CHECK(cudaDeviceSynchronize());  // the backend's stream wrote the gradients
    IFT_NCCL_CHECK(ncclAllReduce(data, data, n, ncclFloat, ncclSum, comm_, stream_));
    IFT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    bytes_sent_ += int64_t(2 * n * sizeof(float)) * (world_ - 1) / world_;  // a ring's
  }

  // Slices are uneven (comm.h), so one reduce (or broadcast) per slice, in one group.
  void reduce_scatter_sum(float* data, std::span<const Slice> parts, BackendKind where) override {
    device_only(where);
    Watchdog::Guard g(*watchdog_, "reduce-scatter");
    IFT_CUDA_CHECK(cudaDeviceSynchronize());
    IFT_NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < world_; ++r) {
      const Slice s = parts[r];
      IFT_NCCL_CHECK(ncclReduce(data + s.begin, data + s.begin, s.size(), ncclFloat, ncclSum, r, comm_, stream_));
      if (r != rank_) bytes_sent_ += int64_t(s.size() * sizeof(float));
    }
    IFT_NCCL_CHECK(ncclGroupEnd());
    IFT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void all_gather(void* data, std::span<const Slice> parts, size_t elem_bytes, BackendKind where) override {
    device_only(where);
    Watchdog::Guard g(*watchdog_, "all-gather");
    IFT_CUDA_CHECK(cudaDeviceSynchronize());
    char* p = static_cast<char*>(data);
    IFT_NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < world_; ++r) {
      const Slice s = parts[r];
      IFT_NCCL_CHECK(ncclBroadcast(p + s.begin * elem_bytes, p + s.begin * elem_bytes, s.size() * elem_bytes, ncclUint8, r,
                                   comm_, stream_));
    }
    IFT_NCCL_CHECK(ncclGroupEnd());
    IFT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    bytes_sent_ += int64_t(parts[rank_].size() * elem_bytes) * (world_ - 1);
  }

  void all_gather_host(const void* in, size_t bytes, void* out) override {
    Watchdog::Guard g(*watchdog_, "all-gather (host)");
    const size_t need = bytes * size_t(world_);
    if (need > scratch_bytes_) {
      if (scratch_) IFT_CUDA_CHECK(cudaFree(scratch_));
      IFT_CUDA_CHECK(cudaMalloc(&scratch_, need));
      scratch_bytes_ = need;
    }
    char* s = static_cast<char*>(scratch_);
    IFT_CUDA_CHECK(cudaMemcpyAsync(s + bytes * rank_, in, bytes, cudaMemcpyHostToDevice, stream_));
    IFT_NCCL_CHECK(ncclAllGather(s + bytes * rank_, s, bytes, ncclUint8, comm_, stream_));
    IFT_CUDA_CHECK(cudaMemcpyAsync(out, s, need, cudaMemcpyDeviceToHost, stream_));
    IFT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    bytes_sent_ += int64_t(bytes) * (world_ - 1);
  }

  [[noreturn]] void abort(int status) override {
    std::fflush(stderr);
    if (comm_) ncclCommAbort(comm_), comm_ = nullptr;
#if IFT_HAVE_MPI
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) MPI_Abort(MPI_COMM_WORLD, status);
#endif
    std::_Exit(status);
  }

 private:
  void device_only(BackendKind where) const {
    IFT_CHECK(where == BackendKind::cuda, "the NCCL communicator moves device memory; the ", name_of(where),
              " backend uses MPI");
  }
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;  // device staging of all_gather_host
  size_t scratch_bytes_ = 0;
  bool owns_mpi_ = false;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const Launch& launch, double timeout_s) {
  return std::make_unique<NcclCommunicator>(launch, timeout_s);
}
bool have_nccl() { return true; }

}  // namespace ift::dist
