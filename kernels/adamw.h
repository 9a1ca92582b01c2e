// The optimizer's kernels over flat buffers: the global gradient norm's sum of squares, and the
// fused AdamW step in the semantics of cpu::adamw_update (engine/cpu/ops.h, torch.optim.AdamW):
//
//   g = grad * grad_scale                      (grad_scale folds clipping and any loss scaling)
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   w = w (1 - lr wd) - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
//
// with wd = weight_decay where the decay mask says so and 0 elsewhere (biases, norms). Master
// weights and moments are fp32; gradients are float or bf16; a bf16 working copy of the weights,
// when given, receives the updated master rounded to nearest even. All math is fp32. Both kernels
// are deterministic: the update is elementwise, the sum of squares is reduced in a fixed order in
// two stages (per-block partials, then one block), never with atomics. Pointers are device pointers.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

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

// Which parameters decay: the flat buffer [0, n) cut into `count` contiguous segments (one per run
// of tensors with the same flag, or one per tensor), segment s covering [ends[s-1], ends[s]) with
// ends[-1] = 0. Both arrays live in device memory (built once from the parameter layout), so the
// kernel cannot check them: ends must be strictly increasing with ends[count - 1] == n (a malformed
// mask gives wrong decay, never an out-of-bounds access). count == 0 means every element decays.
struct AdamWDecayMask {
  const int64_t* ends = nullptr;   // (count) device: one past the last element of each segment
  const uint8_t* decays = nullptr; // (count) device: 1 where the segment decays, 0 where it does not
  int count = 0;
};

// One AdamW step over n parameters; master, m, v are updated in place.
struct AdamWUpdate {
  float* master = nullptr;               // (n) fp32 master weights
  float* m = nullptr;                    // (n) first moments
  float* v = nullptr;                    // (n) second moments
  __nv_bfloat16* params_bf16 = nullptr;  // (n) or null: receives the updated master rounded to bf16
  int64_t n = 0;                         // parameters in the buffers
  AdamWDecayMask mask;                   // where weight_decay applies
  float lr = 0;                          // learning rate of this step
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0;                // decoupled, multiplied by lr
  float grad_scale = 1;                  // e.g. max_norm / norm when clipping
  int64_t t = 1;                         // 1-based step count, for bias correction
};

// grads: (n) float or bf16, read only. Throws ift::Error naming the argument on null buffers, n < 0,
// t < 1, betas outside [0, 1), a negative eps, lr or weight decay, non-finite hyperparameters, or a
// mask with count > 0 and null arrays.
void adamw_update(const AdamWUpdate& update, const float* grads, cudaStream_t stream);
void adamw_update(const AdamWUpdate& update, const __nv_bfloat16* grads, cudaStream_t stream);

IFT_KERNELS_END
