// The name of a kernel for error messages, from the text of its launch_kernel call (the macro in
// kernels/launch.cuh passes it): everything before the first top-level comma, e.g.
// "norm_backward_kernel<K, kRms, T>". Shared by the nvcc build and the emulator's runtime.
#pragma once

#include <string>

namespace ift::detail {

inline std::string kernel_name_of(const char* launch_text) {
  std::string name;
  int depth = 0;
  for (const char* c = launch_text; *c != '\0'; ++c) {
    if (*c == '(' || *c == '<' || *c == '[' || *c == '{') ++depth;
    if (*c == ')' || *c == '>' || *c == ']' || *c == '}') --depth;
    if (*c == ',' && depth <= 0) break;
    name += *c;
  }
  return name;
}

}  // namespace ift::detail
