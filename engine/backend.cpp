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

AttentionPath parse_attention_path(std::string_view name) {
  if (name == "ift") return AttentionPath::ift;
  if (name == "cudnn") return AttentionPath::cudnn;
  fail("attention: unknown path '", name, "' (ift, cudnn)");
}

const char* name_of(AttentionPath path) { return path == AttentionPath::ift ? "ift" : "cudnn"; }

bool cudnn_built() {
#if IFT_HAVE_CUDNN
  return true;
#else
  return false;
#endif
}

bool cudnn_head_dim_supported(int head_dim) { return head_dim > 0 && head_dim % 8 == 0 && head_dim <= 128; }

void check_attention_path(AttentionPath path, BackendKind kind, Precision precision, int head_dim) {
  if (path == AttentionPath::ift) return;
  IFT_CHECK(kind == BackendKind::cuda, "attention: cudnn runs on backend cuda only (this run's backend is ",
            name_of(kind), "); use attention: ift");
  IFT_CHECK(precision == Precision::bf16, "attention: cudnn runs in precision bf16 only (this run's is ",
            name_of(precision), "); use attention: ift");
  IFT_CHECK(cudnn_built(), "attention: cudnn: this build has no cuDNN (CMake found no cudnn_graph.h and libcudnn; "
            "install cuDNN 9 and reconfigure, or use attention: ift)");
  IFT_CHECK(head_dim == 0 || cudnn_head_dim_supported(head_dim), "attention: cudnn does not take head dim ", head_dim,
            " (cuDNN's fused attention here: multiples of 8 up to 128); use attention: ift");
}

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
