// The host API of all kernels: the only kernel header engine/ includes.
//
// Each op is a plain C++ function that checks shapes, dtypes and alignment, throws ift::Error
// instead of crashing, and launches its kernels on a stream through launch_kernel
// (kernels/launch.cuh). The same declarations serve both builds: ift_kernels_cuda (nvcc, real GPUs)
// and ift_kernels_emu (the host compiler over the SIMT emulator in kernels/simt/, which runs every
// kernel on the CPU in tests). Kernel sources and their launchers live in kernels/<family>.cu; only
// the public function of each op is declared here.
#pragma once

#include <cuda_runtime_api.h>  // cudaStream_t (host-only header, compiles without a GPU)
#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "kernels/attention.h"
#include "kernels/rope.h"
#include "kernels/norm.h"
#include "kernels/elementwise.h"
#include "kernels/decode.h"
