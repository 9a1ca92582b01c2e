// The members of Transformer<B> (engine/transformer.h). Included, through engine/model.inl, by the
// translation unit that instantiates the model for a backend: engine/model.cpp (cpu),
// engine/emu_backend.cpp, engine/cuda/backend.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "engine/base/error.h"
#include "engine/cpu/ops.h"
#include "engine/nf4.h"
#include "engine/transformer.h"

namespace ift {

template <class B>
Transformer<B>::Transformer(const ModelConfig& config, ModelOptions options)
    : backend_(std::make_unique<B>()), config_(config), options_(options), layout_(ParamLayout::build(config, options.lora)) {
  params = Buffer<B, act_t>(*backend_, layout_.stored_total, MemoryPart::params);
  backend_->zero(params.data(), layout_.stored_total * sizeof(act_t));
  if (!layout_.nf4.empty()) {
    nf4_ = Buffer<B, uint8_t>(*backend_, layout_.nf4_bytes, MemoryPart::params);
    backend_->zero(nf4_.data(), layout_.nf4_bytes);
    nf4_scratch_ = Buffer<B, act_t>(*backend_, nf4_scratch_values(layout_), MemoryPart::workspace);
  }
  ParamLayout stored = layout_;  // the adapters at their places in `params`
  for (LoraAdapter& a : stored.adapters) {
    a.a = layout_.stored_at(a.a), a.b = layout_.stored_at(a.b);
    if (&a == &stored.adapters.front()) adapter_shift_ = layout_.adapters.front().a - a.a;
    IFT_ASSERT(layout_.stored_at(a.a + adapter_shift_) == a.a && layout_.stored_at(a.b + adapter_shift_) == a.b);
  }
  lora_.init(stored, options_.lora.dropout);
  check_attention_path(options.attention, B::kind, sizeof(act_t) == 2 ? Precision::bf16 : Precision::fp32,
                       config.head_dim);
  if constexpr (requires { backend_->set_attention_path(options.attention); })
    backend_->set_attention_path(options.attention);
  frozen_norm_sink_ = Buffer<B, grad_t>(*backend_, 2 * size_t(config.hidden), MemoryPart::workspace);
  if (config.positions == PositionKind::rope) ensure_rope_rows(config.max_positions);
}

template <class B>
int64_t Transformer<B>::rope_table_bytes(const ModelConfig& c) {
  return c.positions == PositionKind::rope ? int64_t(c.max_positions) * c.head_dim * int64_t(sizeof(float)) : 0;
}

template <class B>
void Transformer<B>::ensure_rope_rows(int rows) const {
  if (rows <= rope_rows_) return;
  RopeArgs a = rope_args(0);
  a.P = rows;
  std::vector<float> host(size_t(rows) * a.D);
  cpu::rope_table(host.data(), a);
  rope_table_ = Buffer<B, float>(*backend_, host.size(), MemoryPart::workspace);
  backend_->upload(rope_table_.data(), host.data(), host.size() * sizeof(float));
  rope_rows_ = rows;
}

template <class B>
RopeArgs Transformer<B>::rope_args(int N) const {
  const ModelConfig& c = config_;
  RopeArgs a;
  a.N = N, a.heads = c.n_heads + c.n_kv_heads, a.D = c.head_dim, a.ld = c.qkv_dim(), a.P = rope_rows_;
  a.theta = c.rope_theta;
  return a;
}

template <class B>
MemoryBytes Transformer<B>::plan(const ModelConfig& c, int N, ModelOptions options) {
  const ParamLayout layout = ParamLayout::build(c, options.lora);
  const int64_t n = N, L = c.n_layers;
  const int64_t C = c.hidden, F = c.intermediate, Vp = c.padded_vocab(), H = c.n_heads, QKV = c.qkv_dim();
  const int64_t Q = c.q_dim(), up = c.up_dim(), act = sizeof(act_t), stat = sizeof(stat_t);
  const int64_t means = c.norm_bias() ? 1 : 0;  // RMSNorm keeps no mean
  MemoryBytes m;
  // With an NF4 base, the projections' codes and scales instead of their act_t values (ParamLayout::nf4).
  m[MemoryPart::params] = int64_t(layout.stored_total) * act + int64_t(layout.nf4_bytes);
  // Per layer: x, mid (N, C), qkv, att, up; norm1, norm2, act unless recomputed (then one shared
  // (N, C) and one (N, F) serve every layer). Statistics: rstd (and mean) of both norms, lse.
  const int64_t kept = options.recompute ? 0 : 2 * C + F;
  const int64_t shared = options.recompute ? C + F : 0;
  // The logits: (N, Vp), or one chunk of them when the loss is fused.
  const int64_t chunk = fused_ce_chunk_rows(c, N, options), logit_rows = chunk ? chunk : n;
  m[MemoryPart::activations] = (L * (2 * C + QKV + Q + up + kept) + shared + 2 * C) * n * act +
                               Vp * logit_rows * act + (L * (2 * (1 + means) + H) + 1 + means) * n * stat +
                               LoraPath<B>::kept_values(layout, N) * act;
  m[MemoryPart::activation_grads] = (2 * C + QKV + Q + up + F) * n * act +  // the logits' is in place
                                    LoraPath<B>::grad_values(layout, N) * act;
  m[MemoryPart::batch] = (3 * n + n + 1) * 4;
  m[MemoryPart::workspace] = static_cast<int64_t>(B::workspace_bytes(c, N)) + 2 * C * int64_t(sizeof(grad_t)) +
                             LoraPath<B>::scratch_values(layout, options.lora.dropout, N) * act +
                             int64_t(nf4_scratch_values(layout)) * act +
                             rope_table_bytes(c);
  return m;
}

template <class B>
void Transformer<B>::reserve(int N) {
  if (N <= capacity_) return;
  const ModelConfig& c = config_;
  const int L = c.n_layers, C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads;
  const int up = c.up_dim();
  const bool means = c.norm_bias();
  const size_t n = size_t(N);
  acts_.clear(), act_buffers_.clear(), stat_buffers_.clear();
  logits_ = {}, tokens_ = {}, targets_ = {}, positions_ = {}, cu_seqlens_ = {};
  capacity_ = 0;

  auto acts = [&](size_t count, MemoryPart part = MemoryPart::activations) {
    return act_buffers_.emplace_back(*backend_, count, part).data();
  };
  auto stats = [&](size_t count) { return stat_buffers_.emplace_back(*backend_, count, MemoryPart::activations).data(); };
  act_t* shared_norm = options_.recompute ? acts(n * C) : nullptr;
  act_t* shared_act = options_.recompute ? acts(n * F) : nullptr;
  acts_.resize(L);
  for (LayerActs& a : acts_) {
    a.x = acts(n * C), a.mid = acts(n * C), a.qkv = acts(n * c.qkv_dim()), a.att = acts(n * c.q_dim());
    a.up = acts(n * up);
    a.norm1 = options_.recompute ? shared_norm : acts(n * C);
    a.norm2 = options_.recompute ? shared_norm : acts(n * C);
    a.act = options_.recompute ? shared_act : acts(n * F);
    a.rstd1 = stats(n), a.rstd2 = stats(n), a.lse = stats(n * H);
    a.mean1 = means ? stats(n) : nullptr;
    a.mean2 = means ? stats(n) : nullptr;
  }
  xf_ = acts(n * C), normf_ = acts(n * C);
  rstdf_ = stats(n);
  meanf_ = means ? stats(n) : nullptr;
  chunk_rows_ = fused_ce_chunk_rows(c, N, options_);
  logits_ = Buffer<B, act_t>(*backend_, size_t(chunk_rows_ ? chunk_rows_ : N) * c.padded_vocab(),
                             MemoryPart::activations);
  const auto grad = [&](size_t count) { return acts(count, MemoryPart::activation_grads); };
  dres_ = grad(n * C), dnorm_ = grad(n * C), dqkv_ = grad(n * c.qkv_dim()), datt_ = grad(n * c.q_dim());
  dup_ = grad(n * up), dact_ = grad(n * F);
  tokens_ = Buffer<B, int32_t>(*backend_, n, MemoryPart::batch);
  targets_ = Buffer<B, int32_t>(*backend_, n, MemoryPart::batch);
  positions_ = Buffer<B, int32_t>(*backend_, n, MemoryPart::batch);
  cu_seqlens_ = Buffer<B, int32_t>(*backend_, n + 1, MemoryPart::batch);
  lora_.reserve(*backend_, N, layout_);
  backend_->reserve_workspace(c, N);
  capacity_ = N;
}

template <class B>
size_t Transformer<B>::nf4_scratch_values(const ParamLayout& layout) {
  size_t largest = 0;
  for (const StorageTensor& t : layout.storage)
    if (t.stored == kNoParam) largest = std::max(largest, t.numel);
  return largest;
}

template <class B>
const typename B::act_t* Transformer<B>::weight(size_t offset) const {
  if (offset == kNoParam || !layout_.quantized(offset)) return p(offset);
  const auto [first, last] = layout_.nf4_slices(offset);
  act_t* out = nf4_scratch_.data();
  for (size_t i = first; i < last; ++i) {
    const Nf4Slice& s = layout_.nf4[i];
    Nf4Args a;
    a.n = static_cast<int64_t>(s.n);
    backend_->nf4_dequantize(out + (s.offset - offset), nf4_.data() + s.codes,
                             reinterpret_cast<const float*>(nf4_.data() + s.absmax), a);
  }
  return out;
}

// An NF4 base: the stored tensors gathered into their places in `params`, and every projection view
// quantized on the host (one slice per thread: each is deterministic, so the bits do not depend on
// the threads) into the NF4 buffer.
template <class B>
void Transformer<B>::load_params(std::span<const float> values) {
  IFT_CHECK(values.size() == layout_.total, "load_params: ", values.size(), " values for ", layout_.total,
            " parameters");
  if (layout_.nf4.empty()) return upload_stored(values);
  std::vector<float> stored(layout_.stored_total, 0.0f);
  for (const StorageTensor& t : layout_.storage)
    if (t.stored != kNoParam) std::copy_n(values.data() + t.offset, t.numel, stored.data() + t.stored);
  upload_stored(stored);
  std::vector<uint8_t> bytes(layout_.nf4_bytes, 0);
  std::string error;
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < layout_.nf4.size(); ++i) {
    const Nf4Slice& s = layout_.nf4[i];
    try {
      const Nf4Tensor q = nf4_quantize(values.subspan(s.offset, s.n));
      std::copy(q.packed.begin(), q.packed.end(), bytes.begin() + s.codes);
      std::memcpy(bytes.data() + s.absmax, q.absmax.data(), q.absmax.size() * sizeof(float));
    } catch (const std::exception& e) {
#pragma omp critical
      error = std::string(e.what()) + " (flat element " + std::to_string(s.offset) + " on)";
    }
  }
  IFT_CHECK(error.empty(), "load_params: an NF4 projection: ", error);
  backend_->upload(nf4_.data(), bytes.data(), bytes.size());
}

template <class B>
void Transformer<B>::upload_stored(std::span<const float> values) {
  if constexpr (std::is_same_v<act_t, float>) {
    backend_->upload(params.data(), values.data(), values.size_bytes());
  } else if constexpr (B::host_memory) {  // double on the cpu, or bf16 in the emulator
    for (size_t i = 0; i < values.size(); ++i) params[i] = static_cast<act_t>(values[i]);
  } else {  // bf16 in device memory: round on the device, through a staging buffer
    Buffer<B, float> staging(*backend_, values.size(), MemoryPart::workspace);
    backend_->upload(staging.data(), values.data(), values.size_bytes());
    backend_->to_act(params.data(), staging.data(), values.size());
  }
}

template <class B>
std::vector<float> Transformer<B>::params_to_host() const {
  if (layout_.nf4.empty()) return stored_to_host();
  const std::vector<float> stored = stored_to_host();
  std::vector<float> out(layout_.total, 0.0f);
  for (const StorageTensor& t : layout_.storage)
    if (t.stored != kNoParam) std::copy_n(stored.data() + t.stored, t.numel, out.data() + t.offset);
  const std::vector<uint8_t> bytes = nf4_to_host();
  for (const Nf4Slice& s : layout_.nf4) {
    std::vector<float> absmax((s.n + kNf4Block - 1) / kNf4Block);
    std::memcpy(absmax.data(), bytes.data() + s.absmax, absmax.size() * sizeof(float));
    Nf4Args a;
    a.n = static_cast<int64_t>(s.n);
    cpu::nf4_dequantize(out.data() + s.offset, bytes.data() + s.codes, absmax.data(), a);
    for (size_t i = 0; i < s.n; ++i) out[s.offset + i] = static_cast<float>(static_cast<act_t>(out[s.offset + i]));
  }
  return out;
}

template <class B>
std::vector<uint8_t> Transformer<B>::nf4_to_host() const {
  std::vector<uint8_t> bytes(layout_.nf4_bytes);
  if (!bytes.empty()) backend_->download(bytes.data(), nf4_.data(), bytes.size());
  return bytes;
}

template <class B>
std::vector<float> Transformer<B>::stored_to_host() const {
  std::vector<float> out(layout_.stored_total);
  if constexpr (std::is_same_v<act_t, float>) {
    backend_->download(out.data(), params.data(), out.size() * sizeof(float));
  } else {
    std::vector<act_t> raw(out.size());
    backend_->download(raw.data(), params.data(), raw.size() * sizeof(act_t));
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(raw[i]);
  }
  return out;
}

template <class B>
std::vector<typename B::act_t> Transformer<B>::logits() const {
  IFT_CHECK(N_ > 0, "logits: no forward has run");
  IFT_CHECK(!chunk_rows_, "logits: the fused cross-entropy (loss.fused, --fused-ce) keeps no (N, V) logits; run "
                          "with it off to read them");
  const size_t V = size_t(config_.vocab_size), Vp = size_t(config_.padded_vocab());
  std::vector<act_t> out(size_t(N_) * V);  // the padding columns dropped: one strided download per row
  for (size_t n = 0; n < size_t(N_); ++n)
    backend_->download(out.data() + n * V, logits_.data() + n * Vp, V * sizeof(act_t));
  return out;
}

template <class B>
std::vector<float> Transformer<B>::logits_to_host() const {
  const std::vector<act_t> raw = logits();
  return std::vector<float>(raw.begin(), raw.end());
}

template <class B>
void Transformer<B>::norm_forward(act_t* out, stat_t* mean, stat_t* rstd, const act_t* x, size_t w, size_t b,
                                  int N) const {
  if (config_.norm == NormKind::layernorm)
    backend_->layernorm_forward(out, mean, rstd, x, p(w), p(b), norm_args(N));
  else
    backend_->rmsnorm_forward(out, rstd, x, p(w), norm_args(N));
}

template <class B>
void Transformer<B>::residual_norm_forward(act_t* residual_out, act_t* out, stat_t* mean, stat_t* rstd, const act_t* x,
                                           const act_t* residual, size_t w, size_t b, int N) const {
  if (config_.norm == NormKind::layernorm)
    backend_->layernorm_residual_forward(residual_out, out, mean, rstd, x, residual, p(w), p(b), norm_args(N));
  else
    backend_->rmsnorm_residual_forward(residual_out, out, rstd, x, residual, p(w), norm_args(N));
}

template <class B>
void Transformer<B>::norm_backward(act_t* dx, const act_t* dres, const act_t* dout, const act_t* x, size_t w,
                                   size_t b, const stat_t* mean, const stat_t* rstd, int N,
                                   const GradMap<grad_t>& grads) {
  // The norm ops always write dw (and db); a frozen norm's go to a scratch sink. Their cost is one
  // reduction over the rows the op computes dx from anyway.
  grad_t* dw = grads.at(w);
  grad_t* db = grads.at(b);
  if (!dw) dw = frozen_norm_sink_.data();
  if (!db) db = frozen_norm_sink_.data() + config_.hidden;
  if (config_.norm == NormKind::layernorm)
    backend_->layernorm_backward(dx, dw, db, dres, dout, x, p(w), mean, rstd, norm_args(N));
  else
    backend_->rmsnorm_backward(dx, dw, dres, dout, x, p(w), rstd, norm_args(N));
}

template <class B>
void Transformer<B>::mlp_activation(act_t* act, const act_t* up, int N) const {
  if (config_.mlp == MlpKind::gelu)
    backend_->gelu_forward(act, up, size_t(N) * config_.intermediate);
  else
    backend_->glu_forward(act, up, glu_args(N));
}

template <class B>
NormArgs Transformer<B>::norm_args(int N) const {
  return NormArgs{N, config_.hidden, config_.norm_eps, config_.norm_weight_offset};
}

template <class B>
GluArgs Transformer<B>::glu_args(int N) const {
  return GluArgs{N, config_.intermediate,
                 config_.mlp == MlpKind::geglu ? GluActivation::gelu_tanh : GluActivation::silu};
}

// Gemma multiplies the embeddings by sqrt(hidden) as a tensor of the model's dtype: the scale is
// rounded to act_t first, as transformers does.
template <class B>
EmbeddingArgs Transformer<B>::embedding_args(int N) const {
  const ModelConfig& c = config_;
  return EmbeddingArgs{N, c.hidden, c.vocab_size, c.learned_positions() ? c.max_positions : 0,
                       static_cast<float>(static_cast<act_t>(c.embedding_scale))};
}

template <class B>
AttentionArgs Transformer<B>::attention_dims() const {
  const ModelConfig& c = config_;
  AttentionArgs d;
  d.N = N_, d.H = c.n_heads, d.KVH = c.n_kv_heads, d.D = c.head_dim, d.ld = c.qkv_dim();
  d.S = static_cast<int>(cu_seqlens_host_.size()) - 1;
  d.cu_seqlens = cu_seqlens_.data(), d.cu_seqlens_host = cu_seqlens_host_.data();
  d.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  return d;
}

template <class B>
void Transformer<B>::set_train_noise(TrainNoise noise) {
  IFT_CHECK(noise.residual_dropout.empty() || noise.residual_dropout.size() == size_t(config_.n_layers),
            "residual dropout: ", noise.residual_dropout.size(), " probabilities for ", config_.n_layers, " layers");
  for (float p : noise.residual_dropout)
    IFT_CHECK(p >= 0.0f && p < 1.0f, "residual dropout: probability ", p, " is outside [0, 1)");
  IFT_CHECK(noise.neftune_alpha >= 0 && std::isfinite(noise.neftune_alpha), "neftune_alpha ", noise.neftune_alpha,
            " must be finite and >= 0");
  noise_ = std::move(noise);
}

// Sites 2 l (attention output) and 2 l + 1 (MLP output) of the pass.
template <class B>
DropoutArgs Transformer<B>::residual_dropout(int l, int sublayer) const {
  DropoutArgs a;
  a.seed = last_noise_.seed, a.step = last_noise_.pass, a.site = uint32_t(2 * l + sublayer);
  a.p = last_noise_.residual_dropout.empty() ? 0.0f : last_noise_.residual_dropout[l];
  a.n = int64_t(N_) * config_.hidden;
  return a;
}

// The cross-entropy of rows [begin, end), whose logits start at `logits` (into dlogits when not
// null): one call, or under per-sequence averaging (segment_weights_) one per segment piece, each
// with its segment's normaliser. The fused classifier calls it per chunk, the unfused once.
template <class B>
double Transformer<B>::loss_rows(act_t* dlogits, const act_t* logits, int begin, int end) {
  const int V = config_.vocab_size, Vp = config_.padded_vocab();
  if (segment_weights_.empty())
    return backend_->cross_entropy(dlogits, logits, targets_.data() + begin, {end - begin, V, Vp, loss_norm_});
  // A segment of weight 0 holds no trained token: its call only writes its rows' zero gradient.
  double total = 0;
  for (size_t s = 0; s < segment_weights_.size(); ++s) {
    const int r0 = std::max(begin, cu_seqlens_host_[s]), r1 = std::min(end, cu_seqlens_host_[s + 1]);
    if (r1 <= r0) continue;
    const float w = segment_weights_[s];
    const size_t at = size_t(r0 - begin) * Vp;
    total += backend_->cross_entropy(dlogits ? dlogits + at : nullptr, logits + at, targets_.data() + r0,
                                     {r1 - r0, V, Vp, w > 0 ? loss_norm_ / w : loss_norm_});
  }
  return total;
}

template <class B>
void Transformer<B>::check_window(int length, const char* what) const {
  IFT_CHECK(config_.sliding_window <= 0 || length <= config_.sliding_window, what, " of ", length,
            " positions is longer than the model's sliding_window (", config_.sliding_window,
            "): sliding-window attention is not implemented, so such sequences are refused");
}

template <class B>
double Transformer<B>::forward(const BatchView& batch, double loss_norm) {
  const ModelConfig& c = config_;
  const int N = batch.N, C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads;
  const int QKV = c.qkv_dim(), Q = c.q_dim(), up_width = c.up_dim();
  IFT_CHECK(N > 0, "batch: no tokens");
  IFT_CHECK(batch.tokens.size() == size_t(N) && batch.targets.size() == size_t(N) &&
                batch.positions.size() == size_t(N),
            "batch: tokens, targets and positions must each hold N = ", N, " values");
  IFT_CHECK(batch.cu_seqlens.size() >= 2, "batch: cu_seqlens needs at least two entries");
  const int S = static_cast<int>(batch.cu_seqlens.size()) - 1;
  cpu::check_cu_seqlens(batch.cu_seqlens.data(), S, N);
  IFT_CHECK(batch.segment_weights.empty() || batch.segment_weights.size() == size_t(S), "batch: ",
            batch.segment_weights.size(), " segment weights for ", S, " segments");
  for (float w : batch.segment_weights)
    IFT_CHECK(w >= 0 && std::isfinite(w), "batch: segment weight ", w, " must be finite and >= 0");
  for (int s = 0; s < S; ++s) check_window(batch.cu_seqlens[s + 1] - batch.cu_seqlens[s], "a segment");
  // Checked here, on the host, for every backend: a kernel cannot report a bad id.
  for (int n = 0; n < N; ++n) {
    IFT_CHECK(batch.tokens[n] >= 0 && batch.tokens[n] < V, "token id ", batch.tokens[n], " at row ", n,
              " is outside the vocabulary [0, ", V, ")");
    IFT_CHECK(batch.targets[n] < V, "target id ", batch.targets[n], " at row ", n, " is outside the vocabulary [0, ",
              V, ")");
    IFT_CHECK(!c.learned_positions() || (batch.positions[n] >= 0 && batch.positions[n] < c.max_positions),
              "position ", batch.positions[n], " at row ", n, " is outside the learned positions [0, ",
              c.max_positions, ")");
    IFT_CHECK(batch.positions[n] >= 0, "position ", batch.positions[n], " at row ", n, " is negative");
  }
  if (c.positions == PositionKind::rope)  // positions past max_positions: RoPE extrapolates
    ensure_rope_rows(1 + *std::max_element(batch.positions.begin(), batch.positions.end()));
  reserve(N);
  N_ = N;
  loss_norm_ = loss_norm;
  backend_->upload(tokens_.data(), batch.tokens.data(), batch.tokens.size_bytes());
  backend_->upload(targets_.data(), batch.targets.data(), batch.targets.size_bytes());
  backend_->upload(positions_.data(), batch.positions.data(), batch.positions.size_bytes());
  backend_->upload(cu_seqlens_.data(), batch.cu_seqlens.data(), batch.cu_seqlens.size_bytes());
  cu_seqlens_host_.assign(batch.cu_seqlens.begin(), batch.cu_seqlens.end());
  segment_weights_.assign(batch.segment_weights.begin(), batch.segment_weights.end());
  const AttentionArgs dims = attention_dims();
  last_noise_ = noise_;
  lora_.set_pass(last_noise_.lora_dropout, last_noise_.seed, last_noise_.pass);

  backend_->embedding_forward(acts_[0].x, tokens_.data(), positions_.data(), p(layout_.wte), p(layout_.wpe),
                              embedding_args(N));
  if (last_noise_.neftune_alpha > 0) {
    // NEFTune perturbs the embedding layer's output, before Gemma's sqrt(hidden): added after the
    // scaled lookup, the noise is scaled with it.
    NeftuneArgs na;
    na.seed = last_noise_.seed, na.step = last_noise_.pass;
    na.alpha = last_noise_.neftune_alpha * c.embedding_scale;
    na.N = N, na.C = C, na.S = S;
    backend_->neftune_forward(acts_[0].x, cu_seqlens_.data(), na);
  }
  // Each residual add is fused with the norm that reads its result: one pass over the stream.
  norm_forward(acts_[0].norm1, acts_[0].mean1, acts_[0].rstd1, acts_[0].x, layout_.layers[0].norm1_w,
               layout_.layers[0].norm1_b, N);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerParams& P = layout_.layers[l];
    LayerActs& a = acts_[l];
    backend_->matmul_forward(a.qkv, a.norm1, weight(P.qkv_w), p(P.qkv_b), {N, C, QKV});
    lora_.forward(*backend_, params.data(), l, LoraSlot::qkv, a.qkv, QKV, a.norm1, N);
    if (c.positions == PositionKind::rope)  // q and k heads are adjacent in each row: one pass rotates both
      backend_->rope_forward(a.qkv, positions_.data(), rope_table_.data(), rope_args(N));
    backend_->attention_forward(a.att, a.lse, a.qkv, dims);
    backend_->matmul_forward(a.mid, a.att, weight(P.o_w), p(P.o_b), {N, Q, C});
    lora_.forward(*backend_, params.data(), l, LoraSlot::o, a.mid, C, a.att, N);
    if (const DropoutArgs d = residual_dropout(l, 0); d.p > 0) backend_->dropout(a.mid, a.mid, d);
    residual_norm_forward(a.mid, a.norm2, a.mean2, a.rstd2, a.mid, a.x, P.norm2_w, P.norm2_b, N);
    backend_->matmul_forward(a.up, a.norm2, weight(P.up_w), p(P.up_b), {N, C, up_width});
    lora_.forward(*backend_, params.data(), l, LoraSlot::up, a.up, up_width, a.norm2, N);
    mlp_activation(a.act, a.up, N);
    const bool last = l + 1 == c.n_layers;
    act_t* next = last ? xf_ : acts_[l + 1].x;
    backend_->matmul_forward(next, a.act, weight(P.down_w), p(P.down_b), {N, F, C});
    lora_.forward(*backend_, params.data(), l, LoraSlot::down, next, C, a.act, N);
    if (const DropoutArgs d = residual_dropout(l, 1); d.p > 0) backend_->dropout(next, next, d);
    if (last)
      residual_norm_forward(next, normf_, meanf_, rstdf_, next, a.mid, layout_.normf_w, layout_.normf_b, N);
    else
      residual_norm_forward(next, acts_[l + 1].norm1, acts_[l + 1].mean1, acts_[l + 1].rstd1, next, a.mid,
                            layout_.layers[l + 1].norm1_w, layout_.layers[l + 1].norm1_b, N);
  }
  if (chunk_rows_) {
    plan_chunks(batch.targets);
    return fused_classifier(nullptr);
  }
  backend_->matmul_forward(logits_.data(), normf_, p(layout_.lm_head), nullptr, {N, C, c.padded_vocab()});
  return loss_rows(nullptr, logits_.data(), 0, N);
}

// Chunks of at most chunk_rows_ consecutive rows, each beginning and ending on a trained row: the rows
// no target trains (prompts, padding) between chunks never reach the classifier. The few untrained
// rows inside a chunk do (fewer, larger GEMMs), and get a zero gradient from the cross-entropy.
template <class B>
void Transformer<B>::plan_chunks(std::span<const int32_t> targets) {
  chunks_.clear();
  const int N = static_cast<int>(targets.size());
  for (int a = 0; a < N;) {
    if (targets[a] < 0) {
      ++a;
      continue;
    }
    const int limit = std::min(N, a + chunk_rows_);
    int end = a + 1;
    for (int r = end; r < limit; ++r)
      if (targets[r] >= 0) end = r + 1;
    chunks_.emplace_back(a, end);
    a = end;
  }
}

// Per chunk: logits = normf . lm_head^T into the chunk buffer, the cross-entropy (its gradient in
// place when grads is given), then dnorm (written) and the classifier's dW (accumulated, chunk after
// chunk in row order: deterministic). The rows of no chunk get a zero dnorm. The backward pass runs
// the chunk's classifier GEMM again (the forward kept no logits): one GEMM of the classifier's three
// more, in exchange for the (N, V) buffer.
template <class B>
double Transformer<B>::fused_classifier(const GradMap<grad_t>* grads) {
  const ModelConfig& c = config_;
  const int C = c.hidden, Vp = c.padded_vocab();
  act_t* chunk = logits_.data();
  const act_t* w = p(layout_.lm_head);
  grad_t* dw = grads ? grads->at(layout_.lm_head) : nullptr;
  const auto zero_rows = [&](int begin, int end) {
    if (end > begin) backend_->zero(dnorm_ + size_t(begin) * C, size_t(end - begin) * C * sizeof(act_t));
  };
  double loss = 0;
  int written = 0;  // dnorm rows [0, written) are done
  for (const auto& [a, e] : chunks_) {
    const int rows = e - a;
    const act_t* x = normf_ + size_t(a) * C;
    backend_->matmul_forward(chunk, x, w, nullptr, {rows, C, Vp});
    loss += loss_rows(grads ? chunk : nullptr, chunk, a, e);
    if (!grads) continue;
    zero_rows(written, a);
    backend_->matmul_backward(dnorm_ + size_t(a) * C, dw, nullptr, chunk, x, w, {rows, C, Vp});
    written = e;
  }
  if (grads) zero_rows(written, N_);
  return loss;
}

template <class B>
void Transformer<B>::backward(const GradMap<grad_t>& grads) {
  const ModelConfig& c = config_;
  const int N = N_, C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads;
  const int QKV = c.qkv_dim(), Q = c.q_dim(), up_width = c.up_dim();
  const auto g = [&](size_t offset) { return grads.at(offset); };
  IFT_CHECK(N > 0 && !acts_.empty(), "backward called without a forward");
  const AttentionArgs dims = attention_dims();
  const AdapterGrads lora_grads{&grads, adapter_shift_};

  if (chunk_rows_) {
    fused_classifier(&grads);
  } else {
    act_t* dlogits = logits_.data();  // the gradient replaces the logits, in place
    // The cross-entropy gives the padding columns a zero gradient, so the classifier's padding rows
    // get no gradient and the input gradient none of their values.
    loss_rows(dlogits, logits_.data(), 0, N);
    backend_->matmul_backward(dnorm_, g(layout_.lm_head), nullptr, dlogits, normf_, p(layout_.lm_head),
                              {N, C, c.padded_vocab()});
  }
  norm_backward(dres_, nullptr, dnorm_, xf_, layout_.normf_w, layout_.normf_b, meanf_, rstdf_, N, grads);

  for (int l = c.n_layers - 1; l >= 0; --l) {
    const LayerParams& P = layout_.layers[l];
    LayerActs& a = acts_[l];
    if (options_.recompute) {  // the outputs of the cheap ops, from their kept inputs
      norm_forward(a.norm2, a.mean2, a.rstd2, a.mid, P.norm2_w, P.norm2_b, N);
      mlp_activation(a.act, a.up, N);
    }
    // MLP; dres is the gradient of the layer's output, which is also the residual's. Through a
    // residual dropout, the down projection sees dres under forward's mask (dnorm_ is free here).
    const act_t* ddown = dres_;
    if (const DropoutArgs d = residual_dropout(l, 1); d.p > 0) backend_->dropout(dnorm_, dres_, d), ddown = dnorm_;
    backend_->matmul_backward(dact_, g(P.down_w), g(P.down_b), ddown, a.act, weight(P.down_w), {N, F, C});
    lora_.backward(*backend_, params.data(), l, LoraSlot::down, dact_, ddown, C, a.act, N, lora_grads);
    if (c.mlp == MlpKind::gelu)
      backend_->gelu_backward(dup_, a.up, dact_, size_t(N) * F);
    else
      backend_->glu_backward(dup_, a.up, dact_, glu_args(N));
    backend_->matmul_backward(dnorm_, g(P.up_w), g(P.up_b), dup_, a.norm2, weight(P.up_w), {N, C, up_width});
    lora_.backward(*backend_, params.data(), l, LoraSlot::up, dnorm_, dup_, up_width, a.norm2, N, lora_grads);
    norm_backward(dres_, dres_, dnorm_, a.mid, P.norm2_w, P.norm2_b, a.mean2, a.rstd2, N, grads);
    // Attention.
    const act_t* dproj = dres_;
    if (const DropoutArgs d = residual_dropout(l, 0); d.p > 0) backend_->dropout(dnorm_, dres_, d), dproj = dnorm_;
    backend_->matmul_backward(datt_, g(P.o_w), g(P.o_b), dproj, a.att, weight(P.o_w), {N, Q, C});
    lora_.backward(*backend_, params.data(), l, LoraSlot::o, datt_, dproj, C, a.att, N, lora_grads);
    backend_->attention_backward(dqkv_, datt_, a.qkv, a.att, a.lse, dims);
    if (c.positions == PositionKind::rope)
      backend_->rope_backward(dqkv_, positions_.data(), rope_table_.data(), rope_args(N));
    if (options_.recompute) norm_forward(a.norm1, a.mean1, a.rstd1, a.x, P.norm1_w, P.norm1_b, N);
    backend_->matmul_backward(dnorm_, g(P.qkv_w), g(P.qkv_b), dqkv_, a.norm1, weight(P.qkv_w), {N, C, QKV});
    lora_.backward(*backend_, params.data(), l, LoraSlot::qkv, dnorm_, dqkv_, QKV, a.norm1, N, lora_grads);
    norm_backward(dres_, dres_, dnorm_, a.x, P.norm1_w, P.norm1_b, a.mean1, a.rstd1, N, grads);
  }
  // The embeddings' gradient is a scatter of dres; a frozen table gets none (wpe goes with wte: a
  // frozen wte with a trainable wpe is refused when the groups are made, engine/optimizer.h).
  if (g(layout_.wte))
    backend_->embedding_backward(g(layout_.wte), g(layout_.wpe), dres_, tokens_.data(), positions_.data(),
                                 embedding_args(N));
}

// ---- decoding ---------------------------------------------------------------------------------

template <class B>
KVCache<B> Transformer<B>::make_cache(int capacity) const {
  IFT_CHECK(capacity > 0, "KV cache: capacity must be positive");
  IFT_CHECK(!config_.learned_positions() || capacity <= config_.max_positions, "KV cache: ", capacity,
            " positions exceed the model's ", config_.max_positions, " learned positions");
  KVCache<B> cache;
  cache.capacity = capacity;
  const size_t n = size_t(capacity) * config_.kv_dim();
  for (int l = 0; l < config_.n_layers; ++l) {
    cache.k.emplace_back(*backend_, n, MemoryPart::activations);
    cache.v.emplace_back(*backend_, n, MemoryPart::activations);
  }
  return cache;
}

// The layer of forward() on n new rows, with attention over the cache instead of the batch. Scratch
// is allocated per call (decoding is not planned memory: it runs beside training, at any length).
template <class B>
std::vector<float> Transformer<B>::decode(std::span<const int32_t> tokens, KVCache<B>& cache) const {
  const ModelConfig& c = config_;
  const int n = static_cast<int>(tokens.size()), start = cache.length;
  const int C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads, KV = c.kv_dim();
  const int QKV = c.qkv_dim(), Q = c.q_dim(), up_width = c.up_dim();
  IFT_CHECK(n > 0, "decode: no tokens");
  IFT_CHECK(start + n <= cache.capacity, "decode: ", start + n, " positions exceed the KV cache's ", cache.capacity);
  check_window(start + n, "a decoded sequence");
  for (int32_t t : tokens)
    IFT_CHECK(t >= 0 && t < V, "decode: token id ", t, " is outside the vocabulary [0, ", V, ")");
  B& be = *backend_;
  std::vector<int32_t> pos_host(n);
  for (int i = 0; i < n; ++i) pos_host[i] = start + i;
  const size_t rows = size_t(n);
  Buffer<B, int32_t> ids(be, rows, MemoryPart::batch), pos(be, rows, MemoryPart::batch);
  be.upload(ids.data(), tokens.data(), tokens.size_bytes());
  be.upload(pos.data(), pos_host.data(), rows * sizeof(int32_t));
  Buffer<B, act_t> x(be, rows * C, MemoryPart::activations), h(be, rows * C, MemoryPart::activations);
  Buffer<B, act_t> qkv(be, rows * QKV, MemoryPart::activations), att(be, rows * Q, MemoryPart::activations);
  Buffer<B, act_t> up(be, rows * up_width, MemoryPart::activations), act(be, rows * F, MemoryPart::activations);
  Buffer<B, act_t> y(be, rows * C, MemoryPart::activations);
  Buffer<B, stat_t> mean(be, rows, MemoryPart::activations), rstd(be, rows, MemoryPart::activations);
  Buffer<B, act_t> lora_t(be, lora_.empty() ? 0 : rows * layout_.lora_r, MemoryPart::activations);
  be.reserve_workspace(c, n);
  if (c.positions == PositionKind::rope) ensure_rope_rows(start + n);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  be.embedding_forward(x.data(), ids.data(), pos.data(), p(layout_.wte), p(layout_.wpe), embedding_args(n));
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerParams& P = layout_.layers[l];
    norm_forward(h.data(), mean.data(), rstd.data(), x.data(), P.norm1_w, P.norm1_b, n);
    be.matmul_forward(qkv.data(), h.data(), weight(P.qkv_w), p(P.qkv_b), {n, C, QKV});
    lora_.forward(be, params.data(), l, LoraSlot::qkv, qkv.data(), QKV, h.data(), n, lora_t.data());
    if (c.positions == PositionKind::rope)
      be.rope_forward(qkv.data(), pos.data(), rope_table_.data(), rope_args(n));
    act_t* k = cache.k[l].data() + size_t(start) * KV;
    act_t* v = cache.v[l].data() + size_t(start) * KV;
    be.copy_rows(k, KV, qkv.data() + Q, QKV, n, KV);
    be.copy_rows(v, KV, qkv.data() + Q + KV, QKV, n, KV);
    DecodeAttentionArgs dec;
    dec.n = n, dec.start = start, dec.H = H, dec.KVH = c.n_kv_heads, dec.D = c.head_dim, dec.ldq = QKV, dec.scale = scale;
    be.attention_decode(att.data(), qkv.data(), cache.k[l].data(), cache.v[l].data(), dec);
    be.matmul_forward(y.data(), att.data(), weight(P.o_w), p(P.o_b), {n, Q, C});
    lora_.forward(be, params.data(), l, LoraSlot::o, y.data(), C, att.data(), n, lora_t.data());
    be.residual_forward(x.data(), x.data(), y.data(), rows * C);
    norm_forward(h.data(), mean.data(), rstd.data(), x.data(), P.norm2_w, P.norm2_b, n);
    be.matmul_forward(up.data(), h.data(), weight(P.up_w), p(P.up_b), {n, C, up_width});
    lora_.forward(be, params.data(), l, LoraSlot::up, up.data(), up_width, h.data(), n, lora_t.data());
    mlp_activation(act.data(), up.data(), n);
    be.matmul_forward(y.data(), act.data(), weight(P.down_w), p(P.down_b), {n, F, C});
    lora_.forward(be, params.data(), l, LoraSlot::down, y.data(), C, act.data(), n, lora_t.data());
    be.residual_forward(x.data(), x.data(), y.data(), rows * C);
  }
  cache.length = start + n;
  // Only the last position's logits are needed to pick the next token.
  const act_t* last = x.data() + (rows - 1) * C;
  norm_forward(h.data(), mean.data(), rstd.data(), last, layout_.normf_w, layout_.normf_b, 1);
  Buffer<B, act_t> logits(be, size_t(c.padded_vocab()), MemoryPart::activations);
  be.matmul_forward(logits.data(), h.data(), p(layout_.lm_head), nullptr, {1, C, c.padded_vocab()});
  std::vector<act_t> raw(V);  // the vocabulary's columns; the padding is never sampled
  be.download(raw.data(), logits.data(), raw.size() * sizeof(act_t));
  return std::vector<float>(raw.begin(), raw.end());
}

}  // namespace ift
