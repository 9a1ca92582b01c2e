#include "engine/backend.h"

#include <cstdio>

#include "engine/base/error.h"

namespace ift {

BackendKind parse_backend(std::string_view name) {
  if (name == "cpu") return BackendKind::cpu;
  if (name == "emu") return BackendKind::emu;
  if (name == "cuda") {
    IFT_CHECK(cuda_built(), "backend 'cuda': this build has no CUDA (configure with -DIFT_CUDA=ON where nvcc exists)");
    return BackendKind::cuda;
  }
  fail("unknown backend '", name, "' (cpu, emu", cuda_built() ? ", cuda" : "", ")");
}

Precision parse_precision(std::string_view name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  fail("unknown precision '", name, "' (fp32, bf16)");
}

const char* name_of(BackendKind kind) {
  switch (kind) {
    case BackendKind::cpu: return "cpu";
    case BackendKind::emu: return "emu";
    case BackendKind::cuda: return "cuda";
  }
  return "?";
}

const char* name_of(Precision precision) { return precision == Precision::fp32 ? "fp32" : "bf16"; }

bool cuda_built() {
#if IFT_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

const char* name_of(MemoryPart part) {
  static constexpr const char* names[kMemoryParts] = {"parameters",  "gradients",            "master weights",
                                                      "optimizer",   "activations",          "activation grads",
                                                      "batch",       "workspace"};
  return names[static_cast<int>(part)];
}

int64_t MemoryBytes::total() const {
  int64_t t = 0;
  for (int64_t b : bytes) t += b;
  return t;
}

std::string MemoryBytes::table() const {
  std::string out;
  char line[128];
  auto row = [&](const char* name, int64_t b) {
    std::snprintf(line, sizeof line, "  %-18s %12.2f MiB %16lld bytes\n", name, b / 1048576.0, static_cast<long long>(b));
    out += line;
  };
  for (int p = 0; p < kMemoryParts; ++p)
    if (bytes[p] != 0) row(name_of(static_cast<MemoryPart>(p)), bytes[p]);
  row("total", total());
  return out;
}

}  // namespace ift
