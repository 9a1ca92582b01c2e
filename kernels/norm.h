// LayerNorm and RMSNorm over the last dimension C of (N, C) rows, forward and backward, with an
// optional fused residual add. Semantics are those of the CPU reference (engine/cpu/ops.h):
//   LayerNorm: out = (x - mean) * rstd * (weight + offset) + bias, rstd = 1 / sqrt(var + eps)
//   RMSNorm:   out = x * rstd * (weight + offset),                 rstd = 1 / sqrt(mean(x^2) + eps)
// with N, C, eps and the weight offset (Gemma's 1) in NormArgs (kernels/args.h).
// Storage type T is float or bf16; arithmetic is fp32; mean and rstd are saved in fp32.
//
// Gradients: dx is written (=) and may fold in the residual stream's gradient,
// dx = dres + dnorm/dx . dout (dres may be null, may alias dx). dweight and dbias are fp32 and
// accumulate (+=) through a deterministic two-stage reduction: the backward kernel's blocks write
// per-block column sums into `scratch` (a caller-owned buffer of at least *_backward_scratch_floats
// floats, passed as scratch_floats), then column_sums_accumulate (kernels/elementwise.h) adds them
// in a fixed order. No float atomics: results are bitwise reproducible run to run.
//
// Vector (16-byte) loads are used when C is a multiple of the vector width (4 floats, 8 bf16) and
// every pointer is 16-byte aligned; scalar loads otherwise. Each row is read once and held in
// registers: by a warp (the forward up to C = 8192, the backward, which holds four values per
// channel, up to C = 1024) or by a block of up to 1024 threads above, which bounds C at 65536 (a
// larger C is an ift::Error). Every function checks its arguments and throws ift::Error naming the
// op and the bad argument.
#pragma once

#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

// out, x: (N, C); weight, bias: (C) (bias may be null); mean, rstd: (N) fp32, written.
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* weight, const float* bias,
                       const NormArgs& args, cudaStream_t stream);
void layernorm_forward(__nv_bfloat16* out, float* mean, float* rstd, const __nv_bfloat16* x,
                       const __nv_bfloat16* weight, const __nv_bfloat16* bias, const NormArgs& args, cudaStream_t stream);

// residual_out = x + residual (rounded to the storage type), then out = LayerNorm(residual_out).
// residual_out may alias x (the residual stream updated in place).
void layernorm_residual_forward(float* residual_out, float* out, float* mean, float* rstd, const float* x,
                                const float* residual, const float* weight, const float* bias, const NormArgs& args, cudaStream_t stream);
void layernorm_residual_forward(__nv_bfloat16* residual_out, __nv_bfloat16* out, float* mean, float* rstd,
                                const __nv_bfloat16* x, const __nv_bfloat16* residual, const __nv_bfloat16* weight,
                                const __nv_bfloat16* bias, const NormArgs& args, cudaStream_t stream);

// dx written; dweight, dbias (C) += (dbias may be null when the forward had no bias). scratch:
// layernorm_backward_scratch_floats(N, C) floats.
size_t layernorm_backward_scratch_floats(int N, int C);
void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dres, const float* dout, const float* x,
                        const float* weight, const float* mean, const float* rstd, const NormArgs& args, float* scratch,
                        size_t scratch_floats, cudaStream_t stream);
void layernorm_backward(__nv_bfloat16* dx, float* dweight, float* dbias, const __nv_bfloat16* dres,
                        const __nv_bfloat16* dout, const __nv_bfloat16* x, const __nv_bfloat16* weight,
                        const float* mean, const float* rstd, const NormArgs& args, float* scratch,
                        size_t scratch_floats, cudaStream_t stream);

// out, x: (N, C); weight: (C); rstd: (N) fp32, written.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, const NormArgs& args, cudaStream_t stream);
void rmsnorm_forward(__nv_bfloat16* out, float* rstd, const __nv_bfloat16* x, const __nv_bfloat16* weight, const NormArgs& args, cudaStream_t stream);

// residual_out = x + residual (rounded to the storage type), then out = RMSNorm(residual_out);
// residual_out may alias x.
void rmsnorm_residual_forward(float* residual_out, float* out, float* rstd, const float* x, const float* residual,
                              const float* weight, const NormArgs& args, cudaStream_t stream);
void rmsnorm_residual_forward(__nv_bfloat16* residual_out, __nv_bfloat16* out, float* rstd, const __nv_bfloat16* x,
                              const __nv_bfloat16* residual, const __nv_bfloat16* weight, const NormArgs& args, cudaStream_t stream);

// dx written; dweight (C) +=. scratch: rmsnorm_backward_scratch_floats(N, C) floats.
size_t rmsnorm_backward_scratch_floats(int N, int C);
void rmsnorm_backward(float* dx, float* dweight, const float* dres, const float* dout, const float* x,
                      const float* weight, const float* rstd, const NormArgs& args, float* scratch,
                        size_t scratch_floats, cudaStream_t stream);
void rmsnorm_backward(__nv_bfloat16* dx, float* dweight, const __nv_bfloat16* dres, const __nv_bfloat16* dout,
                      const __nv_bfloat16* x, const __nv_bfloat16* weight, const float* rstd, const NormArgs& args, float* scratch,
                        size_t scratch_floats, cudaStream_t stream);

// The kernels the ones above replaced (a block per row re-reading the row from memory; the backward's
// column sums in shared memory, which bounds C by the device's shared memory per block: sm_90
// LayerNorm 29040, RMSNorm 58080), with the same contracts and scratch sizes: `ift bench kernels`
// times them beside the new ones in the same run.
void layernorm_forward_baseline(float* out, float* mean, float* rstd, const float* x, const float* weight,
                                const float* bias, const NormArgs& args, cudaStream_t stream);
void layernorm_forward_baseline(__nv_bfloat16* out, float* mean, float* rstd, const __nv_bfloat16* x,
                                const __nv_bfloat16* weight, const __nv_bfloat16* bias, const NormArgs& args,
                                cudaStream_t stream);
void layernorm_backward_baseline(float* dx, float* dweight, float* dbias, const float* dres, const float* dout,
                                 const float* x, const float* weight, const float* mean, const float* rstd,
                                 const NormArgs& args, float* scratch, size_t scratch_floats, cudaStream_t stream);
void layernorm_backward_baseline(__nv_bfloat16* dx, float* dweight, float* dbias, const __nv_bfloat16* dres,
                                 const __nv_bfloat16* dout, const __nv_bfloat16* x, const __nv_bfloat16* weight,
                                 const float* mean, const float* rstd, const NormArgs& args, float* scratch,
                                 size_t scratch_floats, cudaStream_t stream);
void rmsnorm_forward_baseline(float* out, float* rstd, const float* x, const float* weight, const NormArgs& args,
                              cudaStream_t stream);
void rmsnorm_forward_baseline(__nv_bfloat16* out, float* rstd, const __nv_bfloat16* x, const __nv_bfloat16* weight,
                              const NormArgs& args, cudaStream_t stream);
void rmsnorm_backward_baseline(float* dx, float* dweight, const float* dres, const float* dout, const float* x,
                               const float* weight, const float* rstd, const NormArgs& args, float* scratch,
                               size_t scratch_floats, cudaStream_t stream);
void rmsnorm_backward_baseline(__nv_bfloat16* dx, float* dweight, const __nv_bfloat16* dres,
                               const __nv_bfloat16* dout, const __nv_bfloat16* x, const __nv_bfloat16* weight,
                               const float* rstd, const NormArgs& args, float* scratch, size_t scratch_floats,
                               cudaStream_t stream);

IFT_KERNELS_END
