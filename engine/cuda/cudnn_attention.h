// cuDNN's fused attention (SDPA, flash-style) through the cuDNN 9 backend graph API: the second
// attention path of the cuda backend (`attention: cudnn` in the training config) and the second
// baseline of `ift bench kernels --filter attention`. Same semantics as ift's kernels
// (kernels/attention.h): causal within packed segments (cu_seqlens), never across them, GQA/MQA, the
// fused qkv layout of ift::AttentionArgs, and the log-sum-exp of each row of scaled scores as the
// statistics the backward pass reads. bf16 only.
//
// How: the packed batch is cuDNN's "ragged" layout. Each segment is one batch entry of cuDNN's
// (B, H, S, D) tensors, whose start is a ragged offset (cu_seqlens[b] rows of the buffer) and whose
// length is a sequence-length tensor that drives the padding mask; the causal mask is the row >= col
// comparison within the entry. B is rounded up to a power of two with empty entries, and S to a power
// of two of at least 64, so that a few execution plans serve every batch (plans are cached by shape).
// The log-sum-exp is cuDNN's ragged "Stats" in token-major order, which is ift's (N, H) lse buffer.
// Needs the cuDNN loaded at run time to be 9.6 or later (9.18.1 below sm_90), checked on creation.
//
// Compiled and linked only; never run: no GPU has executed this file. tools/gpu_check.sh compares it
// with the CPU reference when a GPU is lent. Whether cuDNN's engines take the graph is decided by
// cuDNN at run time; a graph no engine supports is an ift::Error naming `attention`, not a fallback.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "kernels/args.h"

namespace ift {

// The shapes the cuDNN path takes; "" when it takes them, else why not (cudnn_head_dim_supported,
// engine/backend.h; ld a multiple of 8; fewer than 2^31 elements). The statically known part of what
// cuDNN 9 documents for its fused flash attention on sm_80..sm_90; the rest cuDNN answers at plan
// time. cudnn_built() (engine/backend.h) says whether this build links cuDNN at all.
std::string cudnn_attention_unsupported(const AttentionArgs& a);

// One cuDNN handle on a stream, the plans it has built, and its device scratch (the plan workspace,
// the backward's fp32 dQ accumulator and softmax sums, the per-call lengths and offsets). Owns cudaMalloc'd
// memory that the backend's tally (MemoryPart) does not see: at most N*H*(D + 1) floats past the
// plan workspace.
class CudnnAttention {
 public:
  explicit CudnnAttention(cudaStream_t stream);  // throws when !cudnn_built()
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // out (N, H*D), lse (N, H) fp32: as ift::attention_forward. a.cu_seqlens_host is required (the
  // plan's shape is chosen on the host).
  void forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, const AttentionArgs& a);
  // dqkv (N rows of stride a.ld): dq, dk, dv written, as ift::attention_backward; lse from forward.
  void backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const __nv_bfloat16* out,
                const float* lse, const AttentionArgs& a);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ift
