// Rotary position embedding (RoPE) in Hugging Face's rotate_half form, in place, for float and bf16
// storage (fp32 arithmetic). Matches cpu::rope_forward / cpu::rope_backward (engine/cpu/ops.h).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>         // __nv_bfloat16 (compiles on the host)
#include <cuda_runtime_api.h>  // cudaStream_t

#include "kernels/target.h"

IFT_KERNELS_BEGIN

// Rotates the first `heads` heads of D in each of the N rows of x (row stride ld, elements): dim j
// pairs with j + D/2 at angle positions[n] * theta^(-2j/D). x and positions (N) are device pointers.
// The angles are computed in double (as the CPU reference does), the rotation in fp32.
// Throws ift::Error when N < 0, heads < 1, D is odd or outside [2, 256], ld < heads*D, theta <= 0,
// or a pointer is null.
void rope_forward(float* x, const int32_t* positions, int N, int heads, int D, int ld, float theta,
                  cudaStream_t stream);
void rope_forward(__nv_bfloat16* x, const int32_t* positions, int N, int heads, int D, int ld, float theta,
                  cudaStream_t stream);

// The inverse rotation, in place on the gradient dx (same layout and checks as rope_forward).
void rope_backward(float* dx, const int32_t* positions, int N, int heads, int D, int ld, float theta,
                   cudaStream_t stream);
void rope_backward(__nv_bfloat16* dx, const int32_t* positions, int N, int heads, int D, int ld, float theta,
                   cudaStream_t stream);

IFT_KERNELS_END
