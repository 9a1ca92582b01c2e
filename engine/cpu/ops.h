// The CPU reference ops: plain loops (OpenMP where it pays, BLAS for GEMM), the ground truth every
// kernel is compared with, and the engine of the cpu backend.
//
// Each op is templated on the scalar type: float is the backend, double is what the
// finite-difference gradient checks run in. Tokens are flattened: N = B*T rows of C channels.
// Conventions, as in the kernels: activation gradients are written (=), parameter gradients
// accumulate (+=). A norm's backward can fold in the residual gradient (dres), which is how the
// residual stream's gradient flows without a separate add.
#pragma once

#include <cstdint>

#include "kernels/args.h"

namespace ift::cpu {

// The embedding lookup (kernels/args.h: EmbeddingArgs): out[n] = (wte[tokens[n]] + wpe[positions[n]])
// * scale, wpe may be null (no learned positions). Ids out of range are errors (ift::Error) naming
// the row. The backward scatters scale * dout into dwte (and dwpe, which may be null).
template <class T>
void embedding_forward(T* out, const int32_t* tokens, const int32_t* positions, const T* wte, const T* wpe,
                       const EmbeddingArgs& args);
template <class T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, const int32_t* positions,
                        const EmbeddingArgs& args);

// The norms over C channels (kernels/args.h: NormArgs). LayerNorm: out = (x - mean) * rstd *
// (w + offset) + b; RMSNorm: out = x * rstd * (w + offset). mean, rstd: (N) saved for backward.
// Backward: dx = dres + dnorm/dx . dout (dres may be null, may alias dx); dw, db +=.
template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, const NormArgs& args);
template <class T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dres, const T* dout, const T* x, const T* w, const T* mean,
                        const T* rstd, const NormArgs& args);
template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, const NormArgs& args);
template <class T>
void rmsnorm_backward(T* dx, T* dw, const T* dres, const T* dout, const T* x, const T* w, const T* rstd,
                      const NormArgs& args);

// nn.Linear (kernels/args.h: MatmulArgs): out (N, O) = inp (N, I) . w^T + b, w (O, I); b may be null.
template <class T>
void matmul_forward(T* out, const T* inp, const T* w, const T* b, const MatmulArgs& args);
// dinp = dout . w (written; dinp may be null); dw += dout^T . inp; db += column sums of dout (may be null).
template <class T>
void matmul_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const MatmulArgs& args);

// Causal attention over packed samples (ift::AttentionArgs, kernels/args.h: the fields, the fused
// layout and the masking; cu_seqlens is host memory here). q, k, v point into one fused qkv buffer
// of row stride a.ld. out: (N, H*D); lse: (N, H).
template <class T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const AttentionArgs& a);
// dq, dk, dv (row stride ld, like q, k, v) are written. Probabilities are recomputed from lse.
template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, const AttentionArgs& a);
// Attention of new query rows against a KV cache, for decoding (ift::DecodeAttentionArgs).
template <class T>
void attention_cached(T* out, const T* q, const T* k_cache, const T* v_cache, const DecodeAttentionArgs& a);
// Checks cu_seqlens (ift::Error on a malformed one).
void check_cu_seqlens(const int32_t* cu_seqlens, int S, int N);

// RoPE in Hugging Face's rotate_half form, in place (kernels/args.h: RopeArgs): on the first
// `heads` heads of D in each row of x (row stride ld), dim j pairs with j + D/2 at angle
// positions[n] * theta^(-2j/D). With a table (rope_table's, P rows) the cos and sin come from it, as
// in the kernels; with a null table they are computed in double from theta (the ground truth, and
// what the finite-difference checks run). A position outside [0, P) with a table, or negative
// without, is an ift::Error naming the row.
template <class T>
void rope_forward(T* x, const int32_t* positions, const float* table, const RopeArgs& args);
// The inverse rotation, in place on the gradient.
template <class T>
void rope_backward(T* dx, const int32_t* positions, const float* table, const RopeArgs& args);
// The cos/sin table of args.P positions (P rows of D floats: the D/2 cosines, then the D/2 sines of
// p * theta^(-2j/D)), computed in double and rounded to fp32 once.
void rope_table(float* table, const RopeArgs& args);

// GELU, tanh approximation (GPT-2's gelu_new). dinp may alias dout.
template <class T>
void gelu_forward(T* out, const T* inp, int64_t n);
template <class T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n);

// The gated MLP activation (kernels/args.h: GluArgs): out (N, F) = act(gate) * up, gate and up
// the two halves of each row of inp (N, 2F); SwiGLU (silu) or GeGLU (tanh GELU).
template <class T>
void glu_forward(T* out, const T* inp, const GluArgs& args);
template <class T>
void glu_backward(T* dinp, const T* inp, const T* dout, const GluArgs& args);

// out = a + b (out may alias a or b).
template <class T>
void residual_forward(T* out, const T* a, const T* b, int64_t n);

// Dropout: out[i] = keep(i) ? in[i] * dropout_scale(p) : 0, keep(i) = counter_bits(counter_key(seed,
// step, site), i) >= dropout_threshold(p) (kernels/counter_hash.h). The mask is a pure function of
// the arguments: the backward pass is this same call on the gradient. out may alias in; p = 0 is the
// identity. ift::Error on p outside [0, 1) or a negative n.
template <class T>
void dropout(T* out, const T* in, const DropoutArgs& args);

// NEFTune, in place: x (N, C) += alpha / sqrt(L * C) * u, u uniform in [-1, 1) from the counter
// hash, L the length of the row's segment (NeftuneArgs, kernels/args.h). Additive: the gradient
// passes through unchanged. ift::Error on a bad shape, a malformed cu_seqlens or a bad alpha.
template <class T>
void neftune_forward(T* x, const int32_t* cu_seqlens, const NeftuneArgs& args);

// NF4 dequantize (Nf4Args, kernels/args.h): out[i] = kNf4CodeBook[code(i)] * absmax[i / 64], the
// product in fp32 whatever T (double sees the values the float backend does), then widened or kept.
// An NF4 base's projection goes through this into a scratch before its GEMM. ift::Error on n < 0.
template <class T>
void nf4_dequantize(T* out, const uint8_t* codes, const float* absmax, const Nf4Args& args);

// Cross-entropy of logits against targets (kernels/args.h: CrossEntropyArgs: N rows of stride ld, the
// first V columns the vocabulary, a negative target not trained). Returns the sum of per-token losses
// / normaliser; when dlogits is not null it receives the gradient of that returned loss, (softmax -
// onehot) / normaliser, zero on untrained rows and on the padding columns; dlogits may alias logits
// (computed in place, as the kernel does). ift::Error on ld < V, a target >= V or a normaliser <= 0.
template <class T>
double cross_entropy_forward(T* dlogits, const T* logits, const int32_t* targets, const CrossEntropyArgs& args);

// ---- optimizer ---------------------------------------------------------------------------------

// sum of squares of g (n values), accumulated in double: the global grad norm is its square root
// over all parameters.
template <class T>
double sum_of_squares(const T* g, int64_t n);

// One AdamW step (kernels/args.h: AdamWArgs, PyTorch's torch.optim.AdamW semantics) on args.n
// contiguous parameters, in place, the run arrays in host memory; weight_decay applies on the runs
// that decay. The cpu's parameters are their own master weights.
template <class T>
void adamw_update(T* params, const T* grads, float* m, float* v, const AdamWArgs& args);

}  // namespace ift::cpu
