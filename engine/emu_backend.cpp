// The emu backend: the kernels built over the SIMT emulator (ift::emu), host memory, and a plain CPU
// GEMM in the place of cuBLASLt (the device, engine/emu_device.h). It exists so that the kernel path
// of the whole model (the same calls, buffers, workspace and precision as on a GPU) runs, and is
// tested, on a machine without one.
#include "engine/emu_device.h"
#include "engine/kernel_backend.inl"
#include "engine/model.inl"

namespace ift {

template class KernelBackend<float, EmuDevice>;
template class KernelBackend<__nv_bfloat16, EmuDevice>;
template class Transformer<EmuBackend<float>>;
template class Optimizer<EmuBackend<float>>;
template class Model<EmuBackend<float>>;
template class Transformer<EmuBackend<__nv_bfloat16>>;
template class Optimizer<EmuBackend<__nv_bfloat16>>;
template class Model<EmuBackend<__nv_bfloat16>>;

}  // namespace ift
