// NF4 dequantize: out[i] = kNf4CodeBook[code(i)] * absmax[i / 64] (Nf4Args, kernels/args.h), exactly
// the CPU reference cpu::nf4_dequantize: one fp32 multiply, rounded once to the output type. What an
// NF4 base (QLoRA, `lora.quantize: nf4`) runs before each projection's GEMM, into a scratch of the
// projection's size.
//
// Output float or bf16; codes (ceil(n / 2) bytes, the even element in the high nibble) and absmax
// (ceil(n / 64) fp32) are device memory. n = 0 does nothing. Throws ift::Error on a negative n or
// null pointers.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

void nf4_dequantize(float* out, const uint8_t* codes, const float* absmax, const Nf4Args& args, cudaStream_t stream);
void nf4_dequantize(__nv_bfloat16* out, const uint8_t* codes, const float* absmax, const Nf4Args& args,
                    cudaStream_t stream);

IFT_KERNELS_END
