// The transformer over a backend: forward, explicit backward, and KV-cache decoding. Nothing else:
// parameter gradients go into buffers the caller gives (a GradMap), the optimizer state lives in
// Optimizer<B> (engine/optimizer.h), and the trainer sequences the two (engine/model.h,
// engine/train/trainer.cpp).
//
//   embed -> [norm1 -> qkv -> (RoPE) -> attention -> o -> +residual
//             -> norm2 -> up -> GELU | SwiGLU | GeGLU -> down -> +residual] x L -> normf -> lm_head -> CE
//
// One code path for every family: the model reads what ModelConfig derived (the norm kind, the MLP,
// the positions, the biases), never the model_type. Transformer<B> is the same code on every backend
// (engine/backend.h): the cpu backend in fp32 (double for the finite-difference checks) and the
// kernel backends (emu, cuda) in fp32 or bf16 mixed precision.
//
// Memory is planned: plan() gives, from formulas, the bytes of the parameters, activations, their
// gradients, the batch and the workspace for a batch of N tokens, and the transformer allocates
// exactly that, once, on the first forward of that size. Nothing is allocated inside a step after.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "engine/backend.h"
#include "engine/buffer.h"
#include "engine/config.h"
#include "engine/cpu/backend.h"
#include "engine/kernel_backend.h"
#include "engine/lora_path.h"
#include "engine/params.h"

namespace ift {

// One micro-batch, flattened to N = B*T rows. Samples never attend to each other: cu_seqlens splits
// the rows into segments (every packed sample, and every row of the batch, is its own segment).
struct BatchView {
  int N = 0;                            // tokens in the batch (B*T)
  std::span<const int32_t> tokens;      // (N)
  std::span<const int32_t> targets;     // (N) next-token target of each row; negative = not trained
  std::span<const int32_t> positions;   // (N) position ids, restarting at 0 in every segment
  std::span<const int32_t> cu_seqlens;  // (S + 1) segment boundaries, 0 ... N
  // (S) or empty: segment s's token losses are multiplied by segment_weights[s] before the division
  // by loss_norm (per-sequence averaging: 1 / its trained tokens, loss_norm the step's sequences).
  // Empty: every token counts 1 (per-token normalisation, one cross-entropy call).
  std::span<const float> segment_weights = {};

  int64_t trained_tokens() const;
};

struct ModelOptions {
  // Keep only the inputs of the cheap ops (the norms' inputs and statistics, the MLP's
  // pre-activation) and recompute their outputs in the backward pass, as llm.c does: saves
  // (2 C + F) N values per layer for one extra norm pair and activation per layer.
  bool recompute = false;
  // Low-rank adapters on a frozen base (engine/lora.h); r == 0: none.
  LoraConfig lora;

  // Fused linear cross-entropy (FLCE, `loss.fused`): the classifier runs over chunks of the trained
  // rows, each chunk's logits turned into loss and gradient in place and then into its share of the
  // input gradient and the classifier's weight gradient, so the (N, V) logits never exist (only a
  // (chunk, V) buffer). Unset: on when the vocabulary is above kFusedCeVocab.
  std::optional<bool> fused_ce;
  int fused_ce_chunk = 0;  // rows per chunk; 0: automatic (fused_ce_chunk_rows)

  // Whose kernels run attention (engine/backend.h): ift's, or cuDNN's on the cuda backend (bf16).
  AttentionPath attention = AttentionPath::ift;

  static constexpr int kFusedCeVocab = 32768;
  bool fused(const ModelConfig& c) const { return fused_ce.value_or(c.vocab_size > kFusedCeVocab); }
};

// The training-only noise of the forward passes that follow (set_train_noise): residual dropout,
// NEFTune and the LoRA adapters' dropout. Off by default and after set_train_noise({}); evaluation
// runs with it off, and decode() never applies it. Every draw is a pure function of (seed, pass, site, element) (kernels/
// counter_hash.h), so backward regenerates forward's masks and a resumed run draws what the
// uninterrupted one drew.
struct TrainNoise {
  uint64_t seed = 0;                    // the run's seed
  uint64_t pass = 0;                    // which forward pass: distinct for every micro-batch of every step
  std::vector<float> residual_dropout;  // (n_layers) or empty: drop probability of layer l's attention
                                        // and MLP outputs before they join the residual stream
  float neftune_alpha = 0;              // NEFTune's alpha: embeddings += alpha / sqrt(L d) U(-1, 1); 0 off
  bool lora_dropout = false;            // drop the adapters' inputs with ModelOptions::lora.dropout
};

// Rows per chunk of the fused classifier for a batch of N tokens, 0 when the loss is not fused. The
// automatic size holds about as many logits as one (N, C) activation (Liger's choice), rounded up to
// 64 rows and at least 256 so that the chunk's GEMMs stay large.
inline int fused_ce_chunk_rows(const ModelConfig& c, int N, const ModelOptions& o) {
  if (!o.fused(c)) return 0;
  if (o.fused_ce_chunk > 0) return std::min(N, o.fused_ce_chunk);
  const int64_t Vp = c.padded_vocab(), rows = (int64_t(N) * c.hidden + Vp - 1) / Vp;
  return static_cast<int>(std::min<int64_t>(N, std::max<int64_t>(256, (rows + 63) / 64 * 64)));
}

// Where backward() writes the gradient of each storage tensor (ParamLayout::storage): runs of the
// flat layout, each with its gradient memory. A storage tensor in no run is frozen: its dW is not
// computed. Gradients accumulate (+=).
template <class G>
struct GradMap {
  struct Run {
    size_t begin = 0, end = 0;  // [begin, end) of the flat layout
    G* grads = nullptr;         // (end - begin) gradient of element begin at grads[0]
  };
  std::vector<Run> runs;        // sorted by begin, disjoint

  // The gradient of the storage tensor starting at flat `offset`, or null when it is frozen.
  G* at(size_t offset) const {
    if (offset == kNoParam) return nullptr;
    auto it = std::upper_bound(runs.begin(), runs.end(), offset, [](size_t o, const Run& r) { return o < r.begin; });
    if (it == runs.begin() || offset >= std::prev(it)->end) return nullptr;
    return std::prev(it)->grads + (offset - std::prev(it)->begin);
  }
};

// Keys and values of every position decoded so far, per layer, in backend memory: incremental
// generation on any backend.
template <class B>
struct KVCache {
  int capacity = 0;                                // positions it can hold
  int length = 0;                                  // positions held
  using act_t = typename B::act_t;
  std::vector<Buffer<B, act_t>> k, v;              // (layers) x (capacity, kv_dim), keys after RoPE
};

template <class B>
class Transformer {
  static_assert(Backend<B>, "Transformer<B>: B lacks a member of the Backend interface (engine/backend.h)");
  std::unique_ptr<B> backend_;  // first: every buffer below is released through it, so it goes last

 public:
  using act_t = typename B::act_t;
  using grad_t = typename B::grad_t;
  using stat_t = typename B::stat_t;

  explicit Transformer(const ModelConfig& config, ModelOptions options = {});
  Transformer(Transformer&&) noexcept = default;
  Transformer& operator=(Transformer&&) = delete;  // buffers point at the backend: move-construct instead

  B& backend() const { return *backend_; }
  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }

  // (layout().stored_total) every weight, at layout().stored_at(offset): the whole flat layout, or,
  // with an NF4 base, all but the projections, which are NF4 tensors in a byte buffer of their own
  // (layout().nf4) and dequantized into a scratch of the largest before each of their GEMMs.
  Buffer<B, act_t> params;
  // The parameter buffer's element for flat element `offset` (an error for an NF4 projection).
  act_t* param_at(size_t offset) { return params.data() + layout_.stored_at(offset); }
  // The NF4 buffer's bytes (packed codes and fp32 absmax of each layout().nf4 slice); empty without.
  std::vector<uint8_t> nf4_to_host() const;

  // The bytes of the parameters, activations, activation gradients, batch and workspace for a batch
  // of N tokens, from the shapes alone (the optimizer plans gradients, masters and moments).
  static MemoryBytes plan(const ModelConfig& config, int N, ModelOptions options);

  // Sets every parameter from fp32 values in the flat layout (rounded to act_t; an NF4 base's
  // projections quantized, engine/nf4.h, the same bits on every backend).
  void load_params(std::span<const float> values);
  // act_t widened to fp32; an NF4 projection as its GEMM sees it (dequantized, rounded to act_t).
  std::vector<float> params_to_host() const;

  // Residual dropout, NEFTune and LoRA dropout for the forward passes from now on (TrainNoise above);
  // TrainNoise{} switches them off. ift::Error on a probability outside [0, 1) or a list whose length
  // is not n_layers.
  void set_train_noise(TrainNoise noise);
  const TrainNoise& train_noise() const { return noise_; }

  // Runs the batch and keeps what backward needs. Returns sum over trained rows of the token loss,
  // divided by loss_norm (the trained tokens of the whole optimizer step, so micro-batches add up).
  double forward(const BatchView& batch, double loss_norm);
  // grads += d(loss of the last forward)/d(params) for every storage tensor `grads` maps; frozen
  // ones get no dW. Overwrites the logits with their gradient.
  void backward(const GradMap<grad_t>& grads);
  // (N, V) of the last forward (the classifier's padding columns dropped), until backward() runs:
  // as stored (act_t), or widened to fp32. An error with the fused cross-entropy, which keeps none.
  std::vector<act_t> logits() const;
  std::vector<float> logits_to_host() const;

  // Incremental decoding through the same backend ops (generation, chat, task evaluation).
  KVCache<B> make_cache(int capacity) const;
  // Runs `tokens` as the positions after those already in `cache`, appends their keys and values,
  // and returns the logits (V) of the last token. Touches nothing forward() keeps, so it can run
  // between training steps.
  std::vector<float> decode(std::span<const int32_t> tokens, KVCache<B>& cache) const;

 private:
  struct LayerActs {
    act_t *x, *norm1, *qkv, *att, *mid, *norm2, *up, *act;  // (N, C) (N, C) (N, QKV) (N, Q) (N, C) (N, C) (N, up) (N, F)
    stat_t *mean1, *rstd1, *lse, *mean2, *rstd2;             // (N) (N) (N, H) (N) (N); means only for LayerNorm
  };

  void reserve(int N);  // allocates activations, their gradients, the batch and the workspace for N tokens
  void norm_forward(act_t* out, stat_t* mean, stat_t* rstd, const act_t* x, size_t w, size_t b, int N) const;
  // residual_out = x + residual, then out = norm(residual_out), in one pass
  void residual_norm_forward(act_t* residual_out, act_t* out, stat_t* mean, stat_t* rstd, const act_t* x,
                             const act_t* residual, size_t w, size_t b, int N) const;
  void norm_backward(act_t* dx, const act_t* dres, const act_t* dout, const act_t* x, size_t w, size_t b,
                     const stat_t* mean, const stat_t* rstd, int N, const GradMap<grad_t>& grads);
  void mlp_activation(act_t* act, const act_t* up, int N) const;
  // The ops' arguments for N rows, from the config (kernels/args.h).
  NormArgs norm_args(int N) const;
  GluArgs glu_args(int N) const;
  EmbeddingArgs embedding_args(int N) const;
  // RoPE over the q and k heads of N rows of qkv, with the table's current rows.
  RopeArgs rope_args(int N) const;
  // Grows the cos/sin table to cover positions [0, rows) (it starts with max_positions rows, the
  // planned size; a batch or a decoded sequence past them grows it, unplanned).
  void ensure_rope_rows(int rows) const;
  // Bytes of the cos/sin table as planned: max_positions rows of head_dim floats (0 without RoPE).
  static int64_t rope_table_bytes(const ModelConfig& config);
  // The fused classifier and loss (ModelOptions::fused_ce): the chunks of the trained rows, then the
  // loss of them (grads null: forward) or also dnorm_ and the classifier's dW (backward).
  void plan_chunks(std::span<const int32_t> targets);
  double fused_classifier(const GradMap<grad_t>* grads);
  void check_window(int length, const char* what) const;
  const act_t* p(size_t offset) const { return offset == kNoParam ? nullptr : params.data() + layout_.stored_at(offset); }
  // A projection's weight as its GEMM reads it: p(offset), or an NF4 one dequantized into nf4_scratch_.
  const act_t* weight(size_t offset) const;
  // Elements of the largest NF4 projection (the scratch), 0 without an NF4 base.
  static size_t nf4_scratch_values(const ParamLayout& layout);
  void upload_stored(std::span<const float> stored);  // (layout_.stored_total) into params
  std::vector<float> stored_to_host() const;          // params widened to fp32
  AttentionArgs attention_dims() const;
  // The residual dropout of layer l's sublayer (0 attention, 1 MLP) in the last forward; p = 0: none.
  DropoutArgs residual_dropout(int l, int sublayer) const;
  // The cross-entropy of rows [begin, end) of the last forward, logits starting at `logits` (into
  // dlogits when not null): one call, or one per segment piece under segment_weights_.
  double loss_rows(act_t* dlogits, const act_t* logits, int begin, int end);

  ModelConfig config_;
  ModelOptions options_;
  ParamLayout layout_;

  int capacity_ = 0;            // tokens the activation buffers hold
  int N_ = 0;                   // tokens of the last forward
  double loss_norm_ = 1;
  std::vector<float> segment_weights_;  // of the last forward; empty: per-token
  TrainNoise noise_;       // for the next forward passes
  TrainNoise last_noise_;  // what the last forward used: backward regenerates its masks
  std::vector<int32_t> cu_seqlens_host_;
  Buffer<B, int32_t> tokens_, targets_, positions_, cu_seqlens_;  // (N) (N) (N) (N + 1)
  std::vector<Buffer<B, act_t>> act_buffers_;
  std::vector<Buffer<B, stat_t>> stat_buffers_;
  std::vector<LayerActs> acts_;
  act_t *xf_ = nullptr, *normf_ = nullptr;  // (N, C) the final residual, its norm
  stat_t *meanf_ = nullptr, *rstdf_ = nullptr;
  Buffer<B, act_t> logits_;                 // (N, V); the gradient in place after backward; fused: (chunk, V)
  int chunk_rows_ = 0;                      // rows of logits_ when the loss is fused, else 0
  std::vector<std::pair<int, int>> chunks_; // fused: row ranges [begin, end) of the last forward's chunks
  act_t *dres_ = nullptr, *dnorm_ = nullptr, *dqkv_ = nullptr, *datt_ = nullptr, *dup_ = nullptr, *dact_ = nullptr;
  Buffer<B, grad_t> frozen_norm_sink_;      // (2 C) where a frozen norm's unused dw/db go (norm ops always write them)
  // (rope_rows_, D) RoPE's cos/sin (cpu::rope_table), MemoryPart::workspace; grown by decoding
  mutable Buffer<B, float> rope_table_;
  mutable int rope_rows_ = 0;
  LoraPath<B> lora_;                        // the adapters beside the four projections (engine/lora_path.h)
  // LoraPath addresses the adapters where they lie in `params` (it is given their stored offsets);
  // backward finds their gradients by flat offset, stored + adapter_shift_ (the adapters follow the
  // base, so the NF4 projections before them shift them all alike; 0 without NF4).
  size_t adapter_shift_ = 0;
  struct AdapterGrads {
    const GradMap<grad_t>* grads;
    size_t shift;
    grad_t* at(size_t stored) const { return grads->at(stored + shift); }
  };
  Buffer<B, uint8_t> nf4_;                  // (layout_.nf4_bytes) the NF4 projections, MemoryPart::params
  mutable Buffer<B, act_t> nf4_scratch_;    // (nf4_scratch_values) one dequantized projection, workspace
};

}  // namespace ift
