// Tensor-core attention (kernels/attention_tc.cu), FlashAttention-2 style: bf16 storage, mma.sync
// m16n8k16 with fp32 accumulation. Same layout and semantics as the SIMT kernels of
// kernels/attention.h (causal within packed segments, GQA/MQA, ift::AttentionArgs), which choose
// between the two: callers use attention_forward / attention_backward there. These are for that
// dispatch, the benchmarks and the tests.
#pragma once

#include <cuda_bf16.h>         // __nv_bfloat16 (compiles on the host)
#include <cuda_runtime_api.h>  // cudaStream_t

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

// Whether the tensor-core kernels take these shapes and buffers: head dim 64, 96, 128 or 256 (the
// traits of attention_tc.cu), ld a multiple of 8 and every buffer 16-byte aligned (cp.async moves
// 16 bytes). Buffers that are not used may be null.
bool attention_tc_supports(const AttentionArgs& a, const void* qkv, const void* out_or_dout, const void* dqkv);

// out (N, H*D), lse (N, H): as attention_forward. Throws ift::Error when !attention_tc_supports.
void attention_forward_tc(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, const AttentionArgs& a,
                          cudaStream_t stream);
// dq, dk, dv into dqkv, as attention_backward, given delta = rowsum(dout * out) (N, H) already
// computed. Two passes (dK/dV per key tile, dQ per query tile): deterministic, no atomics.
void attention_backward_tc(__nv_bfloat16* dqkv, const float* delta, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                           const float* lse, const AttentionArgs& a, cudaStream_t stream);

IFT_KERNELS_END
