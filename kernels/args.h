// One argument struct per op, shared by every layer that runs it: the CPU reference
// (engine/cpu/ops.h), the kernel launchers (kernels/<op>.h), the backend interface
// (engine/backend.h) and the device kernels, which take it by value. Each field is commented once,
// here. The structs are plain C++ in namespace ift (not the kernels' inline namespace), so the emu
// and cuda builds of the kernels and the CPU reference all see one type.
//
// Pointers are not part of an op's arguments: they are passed beside the struct, typed by the
// backend's element types. Pure elementwise ops of (out, in, n) have no struct.
#pragma once

#include <cstdint>

namespace ift {

// ---- embedding ---------------------------------------------------------------------------------

// out[n] (N, C) = (wte[tokens[n]] + wpe[positions[n]]) * scale; wpe is null without learned
// positions. Backward: dwte[tokens[n]] += scale * dout[n], dwpe[positions[n]] += scale * dout[n].
struct EmbeddingArgs {
  int N = 0;          // rows (tokens)
  int C = 0;          // channels
  int V = 0;          // rows of wte that are ids (the vocabulary; the table may hold padding rows past it)
  int P = 0;          // rows of wpe (learned positions), 0 without
  float scale = 1;    // Gemma's sqrt(hidden), already rounded to the storage type; 1 elsewhere
};

// ---- norms -------------------------------------------------------------------------------------

// LayerNorm:  out = (x - mean) * rstd * (w + weight_offset) + b,  rstd = 1/sqrt(var(x) + eps)
// RMSNorm:    out = x * rstd * (w + weight_offset),                rstd = 1/sqrt(mean(x^2) + eps)
// over the C channels of each of N rows; mean and rstd are saved for the backward.
struct NormArgs {
  int N = 0;                 // rows
  int C = 0;                 // channels, normalised over
  float eps = 1e-5f;         // added to the variance (mean square) before the square root
  float weight_offset = 0;   // 1 for Gemma's x * (1 + w) (its weights are stored as w); 0 elsewhere
};

// ---- RoPE (kernels/rope.h, cpu::rope_forward/backward, Backend::rope_*) ---------------------------

// Rotary position embedding in Hugging Face's rotate_half form, in place on the first `heads` heads
// of D in each of the N rows of x (row stride ld): dim j of a head pairs with dim j + D/2, and the
// pair turns by the angle positions[n] * theta^(-2j/D) (the backward turns it back). The kernels
// read cos and sin from a table of P rows of D floats (cpu::rope_table: row p holds the D/2 cosines,
// then the D/2 sines, of p * theta^(-2j/D), computed in double and rounded once), built once per
// model; every position must be in [0, P).
struct RopeArgs {
  int N = 0;                // rows of x
  int heads = 0;            // heads rotated in each row (q and k heads are adjacent in a qkv row)
  int D = 0;                // head dim, even
  int ld = 0;               // row stride of x (elements), >= heads * D
  int P = 0;                // rows (positions) of the cos/sin table
  float theta = 10000.0f;   // the base of the angles (rope_theta)
};

// ---- gated MLP activation ------------------------------------------------------------------------

enum class GluActivation { silu, gelu_tanh };  // SwiGLU (Llama) | GeGLU with the tanh GELU (Gemma)

// inp (N, 2F) holds gate in columns [0, F) and up in [F, 2F); out (N, F) = act(gate) * up. The
// backward writes d gate and d up into dinp (N, 2F), the layout of inp.
struct GluArgs {
  int N = 0;                                // rows
  int F = 0;                                // MLP width (columns of out)
  GluActivation act = GluActivation::silu;  // the gate's activation
};

// ---- attention (kernels/attention.h, cpu::attention_forward/backward, Backend::attention_*) -----

// Causal self-attention over packed samples. Row n of the fused buffer qkv (row stride ld) holds H
// query heads of D, then KVH key heads, then KVH value heads: q = qkv + n*ld, k = q + H*D,
// v = q + (H + KVH)*D. Query head h reads kv head h / (H/KVH). Segment s covers rows
// [cu_seqlens[s], cu_seqlens[s+1]); a row attends to the rows of its own segment up to itself,
// never across segments. out is (N, H*D); lse (N, H) the log-sum-exp of each row of scaled scores.
struct AttentionArgs {
  int N = 0;                                 // rows (tokens) of the packed batch, >= 1
  int H = 0;                                 // query heads
  int KVH = 0;                               // key/value heads, H % KVH == 0
  int D = 0;                                 // head dim
  int ld = 0;                                // row stride of qkv and dqkv (elements), >= (H + 2*KVH)*D
  int S = 0;                                 // segments, 1..N
  const int32_t* cu_seqlens = nullptr;       // (S + 1) in the memory of whoever runs the op:
                                             // 0 = cu[0] < cu[1] < ... < cu[S] = N
  const int32_t* cu_seqlens_host = nullptr;  // optional host copy of cu_seqlens: checked when given
  float scale = 0;                           // softmax scale, usually 1/sqrt(D); > 0
};

// Attention of n new query rows against a KV cache, for decoding. Query row i sits at position
// start + i and attends to cache rows [0, start + i]. q: n rows of stride ldq (H heads of D);
// k_cache, v_cache: (start + n, KVH*D), already holding the new rows; out: (n, H*D).
struct DecodeAttentionArgs {
  int n = 0;        // new query rows, >= 1
  int start = 0;    // positions already in the cache before them, >= 0
  int H = 0;        // query heads
  int KVH = 0;      // key/value heads, H % KVH == 0
  int D = 0;        // head dim
  int ldq = 0;      // row stride of q (elements), >= H*D
  float scale = 0;  // softmax scale, > 0
};

// ---- dropout (kernels/dropout.h, cpu::dropout) ------------------------------------------------------
// out[i] = keep(i) ? in[i] / (1 - p) : 0, with keep(i) a pure function of (seed, step, site, i)
// (kernels/counter_hash.h): the mask is never stored, the backward pass regenerates it by calling the
// same op on the gradient with the same arguments.
struct DropoutArgs {
  uint64_t seed = 0;   // the run's seed
  uint64_t step = 0;   // which forward pass: the caller folds the optimizer step and micro-batch in
  uint32_t site = 0;   // which dropout site of that pass (layer and place), so sites draw apart
  float p = 0;         // drop probability, in [0, 1); 0 is the identity
  int64_t n = 0;       // elements; element i of the buffer draws counter i
};

// ---- NEFTune (kernels/neftune.h, cpu::neftune_forward) ---------------------------------------------
// Noisy embeddings (Jain et al., 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning",
// Algorithm 1): x (N, C) += alpha / sqrt(L * C) * u, u uniform in [-1, 1), where L is the length of
// the packed segment (sample) the row belongs to. u for element n * C + c is drawn from the counter
// hash of (seed, step, kNeftuneSite) (kernels/counter_hash.h): float(bits >> 8) * 2^-23 - 1, added
// with one fused multiply-add, so the CPU reference and the kernel agree bit for bit.
struct NeftuneArgs {
  uint64_t seed = 0;   // the run's seed
  uint64_t step = 0;   // which forward pass (as DropoutArgs::step)
  float alpha = 0;     // the noise scale; 0 adds nothing
  int N = 0;           // rows of x
  int C = 0;           // channels of a row (the embedding width d)
  int S = 0;           // segments: cu_seqlens holds S + 1 boundaries, 0 ... N
};
// The site NEFTune draws from, apart from every dropout site.
inline constexpr uint32_t kNeftuneSite = 0xfffffffeu;


// ---- gemm (engine/backend.h `gemm`: the LoRA adapters' products, engine/lora_path.h) ----------

// Row-major C (M, N) = alpha op(A) (M, K) op(B) (K, N) [+ C], the products of engine/device_gemm.h
// with leading dimensions, so a column slice of a fused buffer (q of qkv, up of gate/up) is read
// and written in place.
struct GemmArgs {
  int M = 0, N = 0, K = 0;                // the product's shape
  int lda = 0, ldb = 0, ldc = 0;          // row strides (elements) of A, B, C as stored
  bool trans_a = false, trans_b = false;  // op(X) = X^T: A is then stored (K, M), B (N, K)
  bool accumulate = false;                // C += alpha op(A) op(B) instead of C =
  float alpha = 1.0f;                     // scale of the product
};

// ---- matmul, cross-entropy, AdamW (the remaining ops of the model and the optimizer) -----------

// nn.Linear (kernels: engine/device_gemm.h; cpu::matmul_forward/backward, Backend::matmul_*): out
// (N, O) = inp (N, I) w^T + b, w (O, I) as nn.Linear stores it, b (O) or null. The bias goes into
// the GEMM (cuBLASLt's epilogue, the cpu's accumulator), so the output is rounded once. Backward:
// dinp = dout w (written; dinp may be null), dw += dout^T inp, db += the column sums of dout (null:
// none). Contiguous rows; a strided product is a `gemm` (GemmArgs).
struct MatmulArgs {
  int N = 0;  // rows (tokens)
  int I = 0;  // input features (columns of inp and w)
  int O = 0;  // output features (columns of out, rows of w)
};

// Masked cross-entropy fused with its gradient (kernels/cross_entropy.h, cpu::cross_entropy_forward,
// Backend::cross_entropy). logits: N rows of stride ld, the first V columns the vocabulary (the rest,
// the classifier's padding, are not read and get a zero gradient); targets (N), negative = not
// trained. loss = sum over trained rows of (logsumexp(row) - row[target]) / normaliser; dlogits (may
// be logits itself) = (softmax(row) - onehot(target)) / normaliser, zero on untrained rows.
struct CrossEntropyArgs {
  int N = 0;               // rows
  int V = 0;               // vocabulary: the columns of a row that are read, >= 1
  int ld = 0;              // row stride of logits and dlogits (elements), >= V
  double normaliser = 1;   // > 0: the trained tokens of the whole step, so micro-batches add up to
                           // its mean; the cpu divides in double, the kernels by its fp32 rounding
};

// One AdamW step (torch.optim.AdamW; kernels/adamw.h, cpu::adamw_update, Backend::adamw) over n
// contiguous parameters, in place:
//   g = grad * grad_scale;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   w = w (1 - lr wd) - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// with wd = weight_decay on the runs that decay (matrices, embeddings) and 0 on the others (biases,
// norms). Run r covers [run_ends[r-1], run_ends[r]) (run_ends[-1] = 0), run_ends strictly
// increasing to n. The run arrays are host memory at the backend interface and the cpu reference;
// the kernel backend copies them to the device for the kernel launcher, whose arrays are device
// memory (a malformed mask there gives wrong decay, never an out-of-bounds access).
struct AdamWArgs {
  float lr = 0;                         // learning rate of this step, >= 0
  float beta1 = 0.9f, beta2 = 0.999f;   // moment decay rates, in [0, 1)
  float eps = 1e-8f;                    // added to sqrt(v_hat), >= 0
  float weight_decay = 0;               // decoupled (times lr), where the runs decay
  float grad_scale = 1;                 // folded into the gradient: the clip factor (and any loss scale)
  int64_t t = 1;                        // 1-based step count, for the bias corrections
  int64_t n = 0;                        // parameters (elements of params, grads, master, m, v)
  int runs = 0;                         // decay runs; 0: every element decays
  const int64_t* run_ends = nullptr;    // (runs) one past the last element of each run
  const uint8_t* run_decays = nullptr;  // (runs) 1 where the run decays, 0 where it does not
};

// ---- NF4 dequantize (kernels/nf4.h, cpu::nf4_dequantize, Backend::nf4_dequantize) ----------------

// QLoRA's 4-bit NormalFloat (engine/nf4.h): n values in blocks of kNf4Block, one fp32 absmax per
// block, two 4-bit codes per byte (element 2j in the high nibble of byte j, 2j + 1 in the low one).
// out[i] = kNf4CodeBook[code(i)] * absmax[i / kNf4Block], one fp32 multiply rounded once to the
// output type. codes (ceil(n / 2)) and absmax (ceil(n / kNf4Block)) are passed beside the struct.
struct Nf4Args {
  int64_t n = 0;  // values (elements of out), >= 0
};
inline constexpr int kNf4Block = 64;
// The 16 NF4 values, ascending (the QLoRA paper's appendix E; bitsandbytes' table).
inline constexpr float kNf4CodeBook[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f,
    1.0f};

}  // namespace ift
