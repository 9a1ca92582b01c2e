// Builds without CUDA have no NCCL communicator.
#include "engine/base/error.h"
#include "engine/dist/impl.h"

namespace ift::dist {

std::unique_ptr<Communicator> make_nccl_communicator(const Launch&, double) {
  fail("this build has no NCCL (the cuda backend and NCCL come with a CUDA build)");
}
bool have_nccl() { return false; }

}  // namespace ift::dist
