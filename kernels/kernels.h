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
#include "kernels/attention_tc.h"
#include "kernels/rope.h"
#include "kernels/norm.h"
#include "kernels/elementwise.h"
#include "kernels/decode.h"
#include "kernels/dropout.h"
#include "kernels/neftune.h"
#include "kernels/nf4.h"

IFT_KERNELS_BEGIN

// Whether every launch synchronises its stream and reports errors raised while the kernel ran
// (default: on in debug builds and when IFT_SYNC_LAUNCHES=1; the emulator's launches are
// synchronous anyway). For test and check programs that read results right after a call.
void set_sync_after_launch(bool on);

IFT_KERNELS_END
