// NEFTune's noisy embeddings, in place: x (N, C) += alpha / sqrt(L * C) * u, u uniform in [-1, 1)
// from the counter hash (NeftuneArgs, kernels/args.h), L the length of the row's segment in
// cu_seqlens. Exactly the CPU reference cpu::neftune_forward. The noise is additive, so the
// gradient passes through unchanged: there is no backward op.
//
// Storage float or bf16, arithmetic fp32. cu_seqlens is device memory (S + 1 values, 0 ... N,
// increasing: the transformer checks it on the host before any op runs). Throws ift::Error on a bad
// shape, a negative or non-finite alpha, or null pointers.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

void neftune_forward(float* x, const int32_t* cu_seqlens, const NeftuneArgs& args, cudaStream_t stream);
void neftune_forward(__nv_bfloat16* x, const int32_t* cu_seqlens, const NeftuneArgs& args, cudaStream_t stream);

IFT_KERNELS_END
