// One argument struct per op, shared by every layer that runs it: the CPU reference
// (engine/cpu/ops.h), the kernel launchers (kernels/<op>.h), the backend interface
// (engine/backend.h) and the device kernels, which take it by value. Each field is commented once,
// here. The structs are plain C++ in namespace ift (not the kernels' inline namespace), so the emu
// and cuda builds of the kernels and the CPU reference all see one type.
//
// Pointers are not part of an op's arguments: they are passed beside the struct, typed by the
// backend's element types. Pure elementwise ops of (out, in, n) have no struct.
#pragma once

#include <cstdint>

namespace ift {

}  // namespace ift
