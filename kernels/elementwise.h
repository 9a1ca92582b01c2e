// Elementwise and embedding kernels: embedding lookup, GELU (tanh), SwiGLU/GeGLU, residual add, bias
// gradient, fp32 <-> bf16 casts. Semantics and layouts are those of the CPU reference
// (engine/cpu/ops.h); arithmetic is fp32 whatever the storage type (float or bf16).
//
// Conventions: pointers are device pointers (host memory in the emulated build); activation
// gradients are written (=), parameter gradients accumulate (+=) and are fp32 (float*), so that
// gradient accumulation over micro-batches does not round to bf16 at every step. No parameter
// gradient uses float atomics: every reduction runs in a fixed order, so results are bitwise
// reproducible run to run. Every function checks its arguments and throws ift::Error naming the op
// and the bad argument; vector (16-byte) loads are used when every pointer is 16-byte aligned and
// the row length is a multiple of the vector width, scalar loads otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/args.h"
#include "kernels/target.h"

IFT_KERNELS_BEGIN

// out[n] (N, C) = (wte[tokens[n]] (V, C) + wpe[positions[n]] (P, C)) * scale (EmbeddingArgs,
// kernels/args.h); wpe (and positions) may be null. Ids live in device memory, so they cannot be
// checked before the launch: a row whose token or position is out of range is filled with NaN (the
// loss then shows it) and nothing outside the tables is read.
void embedding_forward(float* out, const int32_t* tokens, const int32_t* positions, const float* wte,
                       const float* wpe, const EmbeddingArgs& args, cudaStream_t stream);
void embedding_forward(__nv_bfloat16* out, const int32_t* tokens, const int32_t* positions, const __nv_bfloat16* wte,
                       const __nv_bfloat16* wpe, const EmbeddingArgs& args, cudaStream_t stream);

// dwte[tokens[n]] += scale * dout[n]; dwpe[positions[n]] += scale * dout[n] (dwpe may be null).
// Deterministic without atomics and parallel over tokens, as llm.c's encoder backward: the rows are
// first grouped by id on the host (embedding_buckets, a stable sort of the N ids: each group's rows
// in increasing order), then one block per (id, channel slice) adds its rows in that order, the
// CPU reference's order and roundings (one fused multiply-add per term): bitwise equal to it.
// `buckets` is embedding_buckets' output (embedding_buckets_ints(N) int32s) copied to device
// memory. Rows with an out-of-range token or position are left out of both tables (the forward pass
// already filled them with NaN).
size_t embedding_buckets_ints(int N);
// Host memory in and out: tokens and positions (N; positions null when there is no wpe).
void embedding_buckets(int32_t* buckets, const int32_t* tokens, const int32_t* positions, const EmbeddingArgs& args);
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* buckets, const EmbeddingArgs& args,
                        cudaStream_t stream);
void embedding_backward(float* dwte, float* dwpe, const __nv_bfloat16* dout, const int32_t* buckets,
                        const EmbeddingArgs& args, cudaStream_t stream);

// GELU, tanh approximation (GPT-2's gelu_new), over n values. dinp may alias dout.
void gelu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream);
void gelu_forward(__nv_bfloat16* out, const __nv_bfloat16* inp, int64_t n, cudaStream_t stream);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n, cudaStream_t stream);
void gelu_backward(__nv_bfloat16* dinp, const __nv_bfloat16* inp, const __nv_bfloat16* dout, int64_t n,
                   cudaStream_t stream);

// The gated MLP activation (GluArgs, kernels/args.h): inp (N, 2F) holds gate in columns [0, F) and
// up in [F, 2F); out (N, F) = act(gate) * up, act silu (SwiGLU) or the tanh GELU (GeGLU). dinp (N,
// 2F) receives d gate and d up in the same layout.
void glu_forward(float* out, const float* inp, const GluArgs& args, cudaStream_t stream);
void glu_forward(__nv_bfloat16* out, const __nv_bfloat16* inp, const GluArgs& args, cudaStream_t stream);
void glu_backward(float* dinp, const float* inp, const float* dout, const GluArgs& args, cudaStream_t stream);
void glu_backward(__nv_bfloat16* dinp, const __nv_bfloat16* inp, const __nv_bfloat16* dout, const GluArgs& args,
                  cudaStream_t stream);

// out = a + b over n values (out may alias a or b).
void residual_forward(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream);
void residual_forward(__nv_bfloat16* out, const __nv_bfloat16* a, const __nv_bfloat16* b, int64_t n,
                      cudaStream_t stream);

// dbias (O) += column sums of dout (N, O), in two deterministic stages: blocks sum chunks of rows
// into scratch (at least bias_backward_scratch_floats(N, O) floats, passed as scratch_floats), then
// column_sums_accumulate adds the chunks in order.
size_t bias_backward_scratch_floats(int N, int O);
void bias_backward(float* dbias, const float* dout, int N, int O, float* scratch, size_t scratch_floats,
                   cudaStream_t stream);
void bias_backward(float* dbias, const __nv_bfloat16* dout, int N, int O, float* scratch, size_t scratch_floats,
                   cudaStream_t stream);

// out[c] += sum over r of partials[r * cols + c], summed in a fixed order (the second stage of every
// deterministic column reduction: bias and norm parameter gradients).
void column_sums_accumulate(float* out, const float* partials, int rows, int cols, cudaStream_t stream);

// Casts n values; to bf16 rounds to nearest even.
void cast(__nv_bfloat16* out, const float* in, int64_t n, cudaStream_t stream);
void cast(float* out, const __nv_bfloat16* in, int64_t n, cudaStream_t stream);

IFT_KERNELS_END
