// Masked cross-entropy over logits (N, V), fused with its gradient (kernels/args.h CrossEntropyArgs),
// in the semantics of cpu::cross_entropy_forward (engine/cpu/ops.h):
//
//   loss     = sum over trained rows n of (logsumexp(logits[n]) - logits[n, targets[n]]) / normaliser
//   dlogits  = (softmax(logits[n]) - onehot(targets[n])) / normaliser on trained rows, 0 on the others
//
// A row whose target is negative (-100, -1) is not trained. The normaliser is passed in, so that all
// micro-batches of a step divide by the trained tokens of the whole step. The gradient may be written
// in place of the logits (dlogits == logits): no second (N, V) buffer is ever needed. Storage is
// float or bf16; all arithmetic is fp32. The loss is summed in a fixed order (no atomics), so it is
// bit-for-bit the same from run to run. Pointers are device pointers.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

// The baseline (cross_entropy_forward_baseline) splits a row into blocks of this many entries.
inline constexpr int kCrossEntropyChunk = 4096;

// Bytes of device scratch cross_entropy_forward needs for N rows of V logits: one loss per row.
size_t cross_entropy_scratch_bytes(int N, int V);
// The baseline's: one (max, sum) pair per row and chunk, and one loss per row.
size_t cross_entropy_baseline_scratch_bytes(int N, int V);

// args:     kernels/args.h CrossEntropyArgs: N rows of stride ld (> V: a classifier GEMM padded to a
//           multiple of 128 columns, as llm.c's Vp; the padding is not read), the vocabulary V, the
//           normaliser (> 0 and finite once rounded to fp32: all arithmetic here is fp32).
// loss:     (1) device float, written: the summed row losses / normaliser.
// dlogits:  (N, ld) or null (loss only); may be `logits` itself (in place), must not partly overlap it.
//           Columns V..ld of a row (the padding) are set to 0.
// logits:   (N, ld).
// targets:  (N) int32; < 0 not trained; a target >= V cannot be reported from the device, so it
//           makes the loss and that row's gradient NaN (the trainer's non-finite check then skips
//           the step).
// scratch:  cross_entropy_scratch_bytes(N, V) bytes, 8-byte aligned, not overlapping the others.
// Throws ift::Error naming the op and the argument on bad shapes, pointers or sizes.
void cross_entropy_forward(const CrossEntropyArgs& args, float* loss, float* dlogits, const float* logits,
                           const int32_t* targets, void* scratch, size_t scratch_bytes, cudaStream_t stream);
void cross_entropy_forward(const CrossEntropyArgs& args, float* loss, __nv_bfloat16* dlogits,
                           const __nv_bfloat16* logits, const int32_t* targets, void* scratch, size_t scratch_bytes,
                           cudaStream_t stream);

// The kernel cross_entropy_forward replaced (three launches over (row, chunk) blocks, scalar loads),
// same contract and results within fp32 rounding; kept for `ift bench kernels` to time beside it.
// scratch: cross_entropy_baseline_scratch_bytes(N, V) bytes.
void cross_entropy_forward_baseline(const CrossEntropyArgs& args, float* loss, float* dlogits, const float* logits,
                                    const int32_t* targets, void* scratch, size_t scratch_bytes, cudaStream_t stream);
void cross_entropy_forward_baseline(const CrossEntropyArgs& args, float* loss, __nv_bfloat16* dlogits,
                                    const __nv_bfloat16* logits, const int32_t* targets, void* scratch,
                                    size_t scratch_bytes, cudaStream_t stream);

IFT_KERNELS_END
