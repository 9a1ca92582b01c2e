// Which build of the kernels a translation unit sees. Every kernel is compiled twice (nvcc for
// GPUs, the host compiler over the SIMT emulator), and one binary may link both builds: `ift` offers
// `--backend emu` and `--backend cuda` side by side. So each build lives in its own inline namespace,
// ift::cuda or ift::emu, exactly as CUB and Thrust version theirs: `ift::layernorm_forward` names the
// build the translation unit was compiled for, and the two never collide at link time (two inline
// kernel templates of one name would otherwise be merged silently by the linker).
//
// nvcc selects cuda; a host translation unit selects emu unless it defines IFT_KERNELS_CUDA=1 before
// including any kernel header (the cuda backend, engine/cuda/backend.cpp, does).
#pragma once

#if defined(__CUDACC__) || (defined(IFT_KERNELS_CUDA) && IFT_KERNELS_CUDA)
#define IFT_KERNEL_NS cuda
#else
#define IFT_KERNEL_NS emu
#endif

#define IFT_KERNELS_BEGIN \
  namespace ift {         \
  inline namespace IFT_KERNEL_NS {
#define IFT_KERNELS_END \
  }                     \
  }
