// Dropout with a mask that is never stored: out = in * keep / (1 - p), keep drawn from the counter
// hash of (seed, step, site, element index) (kernels/counter_hash.h), exactly the mask of the CPU
// reference cpu::dropout. The backward pass is the same call on the gradient with the same
// DropoutArgs (kernels/args.h): d in = d out * keep / (1 - p).
//
// Storage float or bf16, arithmetic fp32 (one multiply, rounded once). out may alias in. p = 0 is
// the identity (every element kept, multiplied by 1). Throws ift::Error on p outside [0, 1), a
// negative n, or null pointers.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

void dropout(float* out, const float* in, const DropoutArgs& args, cudaStream_t stream);
void dropout(__nv_bfloat16* out, const __nv_bfloat16* in, const DropoutArgs& args, cudaStream_t stream);

IFT_KERNELS_END
