// Attention of a few new query rows over a KV cache, for incremental decoding. Same semantics as
// cpu::attention_cached (engine/cpu/ops.h): new row i sits at position start + i and attends to the
// cached positions 0 .. start + i (its own key and value already appended to the cache). The
// shapes are one ift::DecodeAttentionArgs (kernels/args.h); D is 1..kDecodeMaxHeadDim.
#pragma once

#include <cuda_bf16.h>         // __nv_bfloat16 (compiles on the host)
#include <cuda_runtime_api.h>  // cudaStream_t

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

inline constexpr int kDecodeMaxHeadDim = 256;

// out (n, H*D) = softmax(scale * q k^T over positions <= start + i) v, with k_cache and v_cache
// (start + n, KVH*D). fp32 arithmetic whatever the storage. Throws ift::Error on a bad shape.
void attention_decode(float* out, const float* q, const float* k_cache, const float* v_cache,
                      const DecodeAttentionArgs& p, cudaStream_t stream);
void attention_decode(__nv_bfloat16* out, const __nv_bfloat16* q, const __nv_bfloat16* k_cache,
                      const __nv_bfloat16* v_cache, const DecodeAttentionArgs& p, cudaStream_t stream);

IFT_KERNELS_END
