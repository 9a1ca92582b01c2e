// Causal self-attention over packed variable-length samples (flash-style: tiled online softmax, no
// N x N score matrix in memory), for float and bf16 storage with fp32 arithmetic. Same layout and
// semantics as cpu::attention_forward / cpu::attention_backward (engine/cpu/ops.h), with q, k and v
// in one fused buffer; the shapes are one ift::AttentionArgs (kernels/args.h), whose cu_seqlens is
// device memory here. D is 1..kAttentionMaxHeadDim.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>         // __nv_bfloat16 (compiles on the host)
#include <cuda_runtime_api.h>  // cudaStream_t

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

// The largest head dim the attention kernels take (Gemma's 256). Head dims up to 128 run kernels
// whose registers are sized for 128; larger ones, kernels sized for 256 that opt in to more than
// 48 KiB of shared memory.
inline constexpr int kAttentionMaxHeadDim = 256;


// out (N, H*D) = softmax(scale * q k^T, causal within segments) v; lse (N, H) fp32 receives the
// log-sum-exp of each row of scaled scores, for the backward. All pointers are device pointers.
// Throws ift::Error naming the argument on a bad shape (and on a malformed cu_seqlens_host).
void attention_forward(float* out, float* lse, const float* qkv, const AttentionArgs& p, cudaStream_t stream);
void attention_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, const AttentionArgs& p,
                       cudaStream_t stream);

// dqkv (N rows of stride ld, the layout of qkv) receives dq, dk, dv; its columns past (H + 2*KVH)*D
// are not touched. Probabilities are recomputed from lse. delta (N, H) fp32 is scratch, overwritten
// with rowsum(dout * out). dout, out: (N, H*D). Deterministic: no atomics, fixed summation orders.
void attention_backward(float* dqkv, float* delta, const float* dout, const float* qkv, const float* out,
                        const float* lse, const AttentionArgs& p, cudaStream_t stream);
void attention_backward(__nv_bfloat16* dqkv, float* delta, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                        const __nv_bfloat16* out, const float* lse, const AttentionArgs& p, cudaStream_t stream);

// bf16 runs the tensor-core kernels (kernels/attention_tc.h) where attention_tc_supports the shapes
// and buffers (head dims 64, 96, 128, 256; ld % 8 == 0; 16-byte-aligned buffers), the SIMT kernels
// otherwise; fp32 always runs the SIMT kernels. These run the SIMT kernels whatever the shapes (the
// benchmarks' baseline, and the tests that compare the two).
void attention_forward_simt(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, const AttentionArgs& p,
                            cudaStream_t stream);
void attention_backward_simt(__nv_bfloat16* dqkv, float* delta, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                             const __nv_bfloat16* out, const float* lse, const AttentionArgs& p, cudaStream_t stream);

IFT_KERNELS_END
