// Rotary position embedding (RoPE) in Hugging Face's rotate_half form, in place, for float and bf16
// storage (fp32 arithmetic), with the cos and sin of every (position, pair) read from a table built
// once per model (RopeArgs, kernels/args.h; cpu::rope_table builds it in double and rounds once).
// Matches cpu::rope_forward / cpu::rope_backward (engine/cpu/ops.h) given the same table.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>         // __nv_bfloat16 (compiles on the host)
#include <cuda_runtime_api.h>  // cudaStream_t

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

// Rotates the first `heads` heads of D in each of the N rows of x (row stride ld, elements): dim j
// pairs with j + D/2 at angle positions[n] * theta^(-2j/D), whose cos and sin are table[positions[n]]
// (P rows of D floats: D/2 cosines, then D/2 sines). x, positions (N) and table are device pointers.
// Positions live in device memory, so they cannot be checked before the launch: a row whose
// position is outside [0, P) gets NaN in its rotated heads (the loss then shows it).
// Throws ift::Error when N < 0, heads < 1, D is odd or outside [2, 256] (the attention kernels'
// range), ld < heads*D, P < 1, or a pointer is null.
void rope_forward(float* x, const int32_t* positions, const float* table, const RopeArgs& args, cudaStream_t stream);
void rope_forward(__nv_bfloat16* x, const int32_t* positions, const float* table, const RopeArgs& args,
                  cudaStream_t stream);

// The inverse rotation, in place on the gradient dx (same layout and checks as rope_forward).
void rope_backward(float* dx, const int32_t* positions, const float* table, const RopeArgs& args, cudaStream_t stream);
void rope_backward(__nv_bfloat16* dx, const int32_t* positions, const float* table, const RopeArgs& args,
                   cudaStream_t stream);

IFT_KERNELS_END
