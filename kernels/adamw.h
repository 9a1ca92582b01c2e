// The optimizer's kernels over flat buffers: the global gradient norm's sum of squares, and the
// fused AdamW step (kernels/args.h AdamWArgs) in the semantics of cpu::adamw_update (engine/cpu/ops.h,
// torch.optim.AdamW):
//
//   g = grad * grad_scale                      (grad_scale folds clipping and any loss scaling)
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   w = w (1 - lr wd) - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
//
// with wd = weight_decay where AdamWArgs's decay runs say so and 0 elsewhere (biases, norms). Master
// weights and moments are fp32; gradients are float or bf16; a bf16 working copy of the weights,
// when given, receives the updated master rounded to nearest even. All math is fp32. Both kernels
// are deterministic: the update is elementwise, the sum of squares is reduced in a fixed order in
// two stages (per-block partials, then one block), never with atomics. Pointers are device pointers.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

// ---- global gradient norm ------------------------------------------------------------------------

// Floats of device scratch sum_of_squares needs for n values (the per-block partials).
size_t sum_of_squares_scratch_floats(int64_t n);

// out (1, device float, written) = sum of x[i]^2 over n values (the squared global grad norm: its
// square root, after summing over ranks, is what clipping divides by); n == 0 writes 0. scratch:
// sum_of_squares_scratch_floats(n) floats. Throws ift::Error on null pointers, n < 0 or too little
// scratch.
void sum_of_squares(float* out, const float* x, int64_t n, float* scratch, size_t scratch_floats, cudaStream_t stream);
void sum_of_squares(float* out, const __nv_bfloat16* x, int64_t n, float* scratch, size_t scratch_floats,
                    cudaStream_t stream);

// ---- AdamW ---------------------------------------------------------------------------------------

// One AdamW step (kernels/args.h AdamWArgs: the hyperparameters, n, the decay runs, whose arrays
// are device memory here, built once from the parameter layout or copied in by the backend).
// master, m, v: (n) fp32, updated in place. params_bf16: (n) or null, receives the updated master
// rounded to bf16. grads: (n) float or bf16, read only. Throws ift::Error naming the argument on
// null buffers, n < 0, t < 1, betas outside [0, 1), a negative eps, lr or weight decay,
// non-finite hyperparameters, or runs > 0 with null arrays.
void adamw_update(const AdamWArgs& args, float* master, float* m, float* v, __nv_bfloat16* params_bf16,
                  const float* grads, cudaStream_t stream);
void adamw_update(const AdamWArgs& args, float* master, float* m, float* v, __nv_bfloat16* params_bf16,
                  const __nv_bfloat16* grads, cudaStream_t stream);

IFT_KERNELS_END
