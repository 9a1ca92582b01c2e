// The members of Model<B> (engine/model.h). Included by the translation unit that instantiates the
// model for a backend: engine/model.cpp (cpu), engine/emu_backend.cpp, engine/cuda/backend.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>

#include "engine/cpu/ops.h"
#include "engine/base/error.h"
#include "engine/model.h"

namespace ift {

template <class B>
Model<B>::Model(const ModelConfig& config, ModelOptions options)
    : backend_(std::make_unique<B>()), config_(config), options_(options), layout_(ParamLayout::build(config)) {
  params = Buffer<B, act_t>(*backend_, layout_.total, MemoryPart::params);
  grads = Buffer<B, grad_t>(*backend_, layout_.total, MemoryPart::grads);
  if constexpr (kHasMaster) master_ = Buffer<B, float>(*backend_, layout_.total, MemoryPart::master);
  backend_->zero(params.data(), layout_.total * sizeof(act_t));
  if constexpr (kHasMaster) backend_->zero(master_.data(), layout_.total * sizeof(float));
  zero_grads();
}

template <class B>
MemoryBytes Model<B>::plan(const ModelConfig& c, int N, ModelOptions options, bool optimizer) {
  const int64_t P = static_cast<int64_t>(ParamLayout::build(c).total), n = N, L = c.n_layers;
  const int64_t C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads, QKV = c.qkv_dim(), Q = c.q_dim();
  const int64_t up = c.family == Family::gpt2 ? F : 2 * F, act = sizeof(act_t), stat = sizeof(stat_t);
  const int64_t means = c.family == Family::gpt2 ? 1 : 0;  // RMSNorm keeps no mean
  MemoryBytes m;
  m[MemoryPart::params] = P * act;
  m[MemoryPart::grads] = P * int64_t(sizeof(grad_t));
  m[MemoryPart::master] = kHasMaster ? P * 4 : 0;
  m[MemoryPart::optimizer] = optimizer ? 2 * P * 4 : 0;
  // Per layer: x, mid (N, C), qkv, att, up; norm1, norm2, act unless recomputed (then one shared
  // (N, C) and one (N, F) serve every layer). Statistics: rstd (and mean) of both norms, lse.
  const int64_t kept = options.recompute ? 0 : 2 * C + F;
  const int64_t shared = options.recompute ? C + F : 0;
  m[MemoryPart::activations] = (L * (2 * C + QKV + Q + up + kept) + shared + 2 * C + V) * n * act +
                               (L * (2 * (1 + means) + H) + 1 + means) * n * stat;
  m[MemoryPart::activation_grads] = (2 * C + QKV + Q + up + F) * n * act;  // the logits' is in place
  m[MemoryPart::batch] = (3 * n + n + 1) * 4;
  m[MemoryPart::workspace] = static_cast<int64_t>(B::workspace_bytes(c, N));
  return m;
}

template <class B>
void Model<B>::reserve(int N) {
  if (N <= capacity_) return;
  const ModelConfig& c = config_;
  const int L = c.n_layers, C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads;
  const int up = c.family == Family::gpt2 ? F : 2 * F;
  const bool means = c.family == Family::gpt2;
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
  logits_ = Buffer<B, act_t>(*backend_, n * V, MemoryPart::activations);
  const auto grad = [&](size_t count) { return acts(count, MemoryPart::activation_grads); };
  dres_ = grad(n * C), dnorm_ = grad(n * C), dqkv_ = grad(n * c.qkv_dim()), datt_ = grad(n * c.q_dim());
  dup_ = grad(n * up), dact_ = grad(n * F);
  tokens_ = Buffer<B, int32_t>(*backend_, n, MemoryPart::batch);
  targets_ = Buffer<B, int32_t>(*backend_, n, MemoryPart::batch);
  positions_ = Buffer<B, int32_t>(*backend_, n, MemoryPart::batch);
  cu_seqlens_ = Buffer<B, int32_t>(*backend_, n + 1, MemoryPart::batch);
  backend_->reserve_workspace(c, N);
  capacity_ = N;
}

template <class B>
void Model<B>::init_random(uint64_t seed, double std) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const double residual_std = std / std::sqrt(2.0 * config_.n_layers);
  std::vector<float> w(layout_.total, 0.0f);
  for (const ParamView& v : layout_.views) {
    float* t = w.data() + v.offset;
    const bool residual_out = v.name.ends_with("c_proj.weight") || v.name.ends_with("o_proj.weight") ||
                              v.name.ends_with("down_proj.weight");
    if (v.decay) {
      const double s = residual_out ? residual_std : std;
      for (int64_t i = 0; i < v.numel(); ++i) t[i] = static_cast<float>(s * normal(rng));
    } else if (v.name.ends_with(".weight")) {  // the only undecayed weights are the norms'
      std::fill(t, t + v.numel(), 1.0f);
    }
  }
  load_params(w);
}

template <class B>
void Model<B>::load_params(std::span<const float> values) {
  IFT_CHECK(values.size() == layout_.total, "load_params: ", values.size(), " values for ", layout_.total,
            " parameters");
  if constexpr (kHasMaster) {
    backend_->upload(master_.data(), values.data(), values.size_bytes());
    backend_->to_act(params.data(), master_.data(), values.size());
  } else if constexpr (std::is_same_v<act_t, float>) {
    backend_->upload(params.data(), values.data(), values.size_bytes());
  } else {  // double, on the cpu
    backend_->to_act(params.data(), values.data(), values.size());
  }
}

template <class B>
std::vector<float> Model<B>::params_to_host() const {
  std::vector<float> out(layout_.total);
  if constexpr (kHasMaster) {
    backend_->download(out.data(), master_.data(), out.size() * sizeof(float));
  } else if constexpr (std::is_same_v<act_t, float>) {
    backend_->download(out.data(), params.data(), out.size() * sizeof(float));
  } else {
    backend_->to_float(out.data(), params.data(), out.size());
  }
  return out;
}

template <class B>
std::vector<float> Model<B>::grads_to_host() const {
  std::vector<float> out(layout_.total);
  if constexpr (std::is_same_v<grad_t, float>)
    backend_->download(out.data(), grads.data(), out.size() * sizeof(float));
  else
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(grads[i]);
  return out;
}

template <class B>
std::vector<float> Model<B>::logits_to_host() const {
  IFT_CHECK(N_ > 0, "logits_to_host: no forward has run");
  const size_t n = size_t(N_) * config_.vocab_size;
  std::vector<float> out(n);
  if constexpr (std::is_same_v<act_t, float>) {
    backend_->download(out.data(), logits_.data(), n * sizeof(float));
  } else {  // bf16 or double: download as stored, widen or narrow on the host
    std::vector<act_t> raw(n);
    backend_->download(raw.data(), logits_.data(), n * sizeof(act_t));
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(raw[i]);
  }
  return out;
}

template <class B>
void Model<B>::zero_grads() {
  backend_->zero(grads.data(), layout_.total * sizeof(grad_t));
}

template <class B>
void Model<B>::norm_forward(act_t* out, stat_t* mean, stat_t* rstd, const act_t* x, size_t w, size_t b, int N) {
  if (config_.family == Family::gpt2)
    backend_->layernorm_forward(out, mean, rstd, x, p(w), p(b), N, config_.hidden, config_.norm_eps);
  else
    backend_->rmsnorm_forward(out, rstd, x, p(w), N, config_.hidden, config_.norm_eps);
}

template <class B>
void Model<B>::norm_backward(act_t* dx, const act_t* dres, const act_t* dout, const act_t* x, size_t w, size_t b,
                             const stat_t* mean, const stat_t* rstd, int N) {
  if (config_.family == Family::gpt2)
    backend_->layernorm_backward(dx, g(w), g(b), dres, dout, x, p(w), mean, rstd, N, config_.hidden);
  else
    backend_->rmsnorm_backward(dx, g(w), dres, dout, x, p(w), rstd, N, config_.hidden);
}

template <class B>
void Model<B>::mlp_activation(act_t* act, const act_t* up, int N) {
  if (config_.family == Family::gpt2)
    backend_->gelu_forward(act, up, size_t(N) * config_.intermediate);
  else
    backend_->swiglu_forward(act, up, N, config_.intermediate);
}

template <class B>
AttentionDims Model<B>::attention_dims() const {
  const ModelConfig& c = config_;
  AttentionDims d;
  d.N = N_, d.H = c.n_heads, d.KVH = c.n_kv_heads, d.D = c.head_dim, d.ld = c.qkv_dim();
  d.S = static_cast<int>(cu_seqlens_host_.size()) - 1;
  d.cu_seqlens = cu_seqlens_.data(), d.cu_seqlens_host = cu_seqlens_host_.data();
  d.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  return d;
}

template <class B>
double Model<B>::forward(const BatchView& batch, double loss_norm) {
  const ModelConfig& c = config_;
  const int N = batch.N, C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads;
  const int QKV = c.qkv_dim(), Q = c.q_dim(), up_width = c.family == Family::gpt2 ? F : 2 * F;
  IFT_CHECK(N > 0, "batch: no tokens");
  IFT_CHECK(batch.tokens.size() == size_t(N) && batch.targets.size() == size_t(N) &&
                batch.positions.size() == size_t(N),
            "batch: tokens, targets and positions must each hold N = ", N, " values");
  IFT_CHECK(batch.cu_seqlens.size() >= 2, "batch: cu_seqlens needs at least two entries");
  const int S = static_cast<int>(batch.cu_seqlens.size()) - 1;
  cpu::check_cu_seqlens(batch.cu_seqlens.data(), S, N);
  // Checked here, on the host, for every backend: a kernel cannot report a bad id.
  for (int n = 0; n < N; ++n) {
    IFT_CHECK(batch.tokens[n] >= 0 && batch.tokens[n] < V, "token id ", batch.tokens[n], " at row ", n,
              " is outside the vocabulary [0, ", V, ")");
    IFT_CHECK(batch.targets[n] < V, "target id ", batch.targets[n], " at row ", n, " is outside the vocabulary [0, ",
              V, ")");
    IFT_CHECK(c.family != Family::gpt2 || (batch.positions[n] >= 0 && batch.positions[n] < c.max_positions),
              "position ", batch.positions[n], " at row ", n, " is outside the learned positions [0, ",
              c.max_positions, ")");
  }
  reserve(N);
  N_ = N;
  loss_norm_ = loss_norm;
  backend_->upload(tokens_.data(), batch.tokens.data(), batch.tokens.size_bytes());
  backend_->upload(targets_.data(), batch.targets.data(), batch.targets.size_bytes());
  backend_->upload(positions_.data(), batch.positions.data(), batch.positions.size_bytes());
  backend_->upload(cu_seqlens_.data(), batch.cu_seqlens.data(), batch.cu_seqlens.size_bytes());
  cu_seqlens_host_.assign(batch.cu_seqlens.begin(), batch.cu_seqlens.end());
  const AttentionDims dims = attention_dims();

  backend_->embedding_forward(acts_[0].x, tokens_.data(), positions_.data(), p(layout_.wte), p(layout_.wpe), N, C, V,
                              c.max_positions);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerParams& P = layout_.layers[l];
    LayerActs& a = acts_[l];
    norm_forward(a.norm1, a.mean1, a.rstd1, a.x, P.norm1_w, P.norm1_b, N);
    backend_->matmul_forward(a.qkv, a.norm1, p(P.qkv_w), p(P.qkv_b), N, C, QKV);
    if (c.family == Family::llama)  // q and k heads are adjacent in each row: one pass rotates both
      backend_->rope_forward(a.qkv, positions_.data(), N, H + c.n_kv_heads, c.head_dim, QKV, c.rope_theta);
    backend_->attention_forward(a.att, a.lse, a.qkv, dims);
    backend_->matmul_forward(a.mid, a.att, p(P.o_w), p(P.o_b), N, Q, C);
    backend_->residual_forward(a.mid, a.mid, a.x, size_t(N) * C);
    norm_forward(a.norm2, a.mean2, a.rstd2, a.mid, P.norm2_w, P.norm2_b, N);
    backend_->matmul_forward(a.up, a.norm2, p(P.up_w), p(P.up_b), N, C, up_width);
    mlp_activation(a.act, a.up, N);
    act_t* next = l + 1 < c.n_layers ? acts_[l + 1].x : xf_;
    backend_->matmul_forward(next, a.act, p(P.down_w), p(P.down_b), N, F, C);
    backend_->residual_forward(next, next, a.mid, size_t(N) * C);
  }
  norm_forward(normf_, meanf_, rstdf_, xf_, layout_.normf_w, layout_.normf_b, N);
  backend_->matmul_forward(logits_.data(), normf_, p(layout_.lm_head), nullptr, N, C, V);
  return backend_->cross_entropy(nullptr, logits_.data(), targets_.data(), N, V, loss_norm);
}

template <class B>
void Model<B>::backward() {
  const ModelConfig& c = config_;
  const int N = N_, C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads;
  const int QKV = c.qkv_dim(), Q = c.q_dim(), up_width = c.family == Family::gpt2 ? F : 2 * F;
  IFT_CHECK(N > 0 && !acts_.empty(), "backward called without a forward");
  const AttentionDims dims = attention_dims();

  act_t* dlogits = logits_.data();  // the gradient replaces the logits, in place
  backend_->cross_entropy(dlogits, logits_.data(), targets_.data(), N, V, loss_norm_);
  backend_->matmul_backward(dnorm_, g(layout_.lm_head), nullptr, dlogits, normf_, p(layout_.lm_head), N, C, V);
  norm_backward(dres_, nullptr, dnorm_, xf_, layout_.normf_w, layout_.normf_b, meanf_, rstdf_, N);

  for (int l = c.n_layers - 1; l >= 0; --l) {
    const LayerParams& P = layout_.layers[l];
    LayerActs& a = acts_[l];
    if (options_.recompute) {  // the outputs of the cheap ops, from their kept inputs
      norm_forward(a.norm2, a.mean2, a.rstd2, a.mid, P.norm2_w, P.norm2_b, N);
      mlp_activation(a.act, a.up, N);
    }
    // MLP; dres is the gradient of the layer's output, which is also the residual's.
    backend_->matmul_backward(dact_, g(P.down_w), g(P.down_b), dres_, a.act, p(P.down_w), N, F, C);
    if (c.family == Family::gpt2)
      backend_->gelu_backward(dup_, a.up, dact_, size_t(N) * F);
    else
      backend_->swiglu_backward(dup_, a.up, dact_, N, F);
    backend_->matmul_backward(dnorm_, g(P.up_w), g(P.up_b), dup_, a.norm2, p(P.up_w), N, C, up_width);
    norm_backward(dres_, dres_, dnorm_, a.mid, P.norm2_w, P.norm2_b, a.mean2, a.rstd2, N);
    // Attention.
    backend_->matmul_backward(datt_, g(P.o_w), g(P.o_b), dres_, a.att, p(P.o_w), N, Q, C);
    backend_->attention_backward(dqkv_, datt_, a.qkv, a.att, a.lse, dims);
    if (c.family == Family::llama)
      backend_->rope_backward(dqkv_, positions_.data(), N, H + c.n_kv_heads, c.head_dim, QKV, c.rope_theta);
    if (options_.recompute) norm_forward(a.norm1, a.mean1, a.rstd1, a.x, P.norm1_w, P.norm1_b, N);
    backend_->matmul_backward(dnorm_, g(P.qkv_w), g(P.qkv_b), dqkv_, a.norm1, p(P.qkv_w), N, C, QKV);
    norm_backward(dres_, dres_, dnorm_, a.x, P.norm1_w, P.norm1_b, a.mean1, a.rstd1, N);
  }
  backend_->embedding_backward(g(layout_.wte), g(layout_.wpe), dres_, tokens_.data(), positions_.data(), N, C, V,
                               c.max_positions);
}

// ---- optimizer -------------------------------------------------------------------------------

template <class B>
void Model<B>::enable_optimizer(const AdamWConfig& config) {
  adamw_ = config;
  decay_runs_ = decay_runs(layout_, config);
  if (m_.size() == layout_.total) return;
  m_ = Buffer<B, float>(*backend_, layout_.total, MemoryPart::optimizer);
  v_ = Buffer<B, float>(*backend_, layout_.total, MemoryPart::optimizer);
  backend_->zero(m_.data(), layout_.total * sizeof(float));
  backend_->zero(v_.data(), layout_.total * sizeof(float));
  t_ = 0;
}

template <class B>
double Model<B>::step(float lr) {
  IFT_CHECK(m_.size() == layout_.total, "Model::step: enable_optimizer was not called");
  const double norm = std::sqrt(backend_->sum_of_squares(grads.data(), layout_.total));
  if (!std::isfinite(norm)) return norm;
  ++t_;
  AdamWHyper h;
  h.lr = lr, h.beta1 = adamw_.beta1, h.beta2 = adamw_.beta2, h.eps = adamw_.eps, h.weight_decay = adamw_.weight_decay;
  h.t = t_;
  h.grad_scale = adamw_.max_grad_norm > 0 && norm > adamw_.max_grad_norm
                     ? static_cast<float>(adamw_.max_grad_norm / (norm + 1e-6))
                     : 1.0f;
  float* master = nullptr;
  if constexpr (kHasMaster) master = master_.data();
  backend_->adamw(master, params.data(), grads.data(), m_.data(), v_.data(), layout_.total, decay_runs_, h);
  return norm;
}

template <class B>
OptimizerState Model<B>::optimizer_state() const {
  IFT_CHECK(m_.size() == layout_.total, "optimizer_state: enable_optimizer was not called");
  OptimizerState s;
  s.m.resize(layout_.total), s.v.resize(layout_.total), s.steps = t_;
  backend_->download(s.m.data(), m_.data(), layout_.total * sizeof(float));
  backend_->download(s.v.data(), v_.data(), layout_.total * sizeof(float));
  return s;
}

template <class B>
void Model<B>::set_optimizer_state(const OptimizerState& s) {
  IFT_CHECK(m_.size() == layout_.total, "set_optimizer_state: enable_optimizer was not called");
  IFT_CHECK(s.m.size() == layout_.total && s.v.size() == layout_.total, "optimizer state: moments of ", s.m.size(),
            " and ", s.v.size(), " values for ", layout_.total, " parameters");
  backend_->upload(m_.data(), s.m.data(), layout_.total * sizeof(float));
  backend_->upload(v_.data(), s.v.data(), layout_.total * sizeof(float));
  t_ = s.steps;
}

// ---- decoding (cpu) ----------------------------------------------------------------------------

template <class B>
KVCache<typename B::act_t> Model<B>::make_cache(int capacity) const requires(B::kind == BackendKind::cpu) {
  IFT_CHECK(capacity > 0, "KV cache: capacity must be positive");
  IFT_CHECK(config_.family != Family::gpt2 || capacity <= config_.max_positions, "KV cache: ", capacity,
            " positions exceed the model's ", config_.max_positions, " learned positions");
  KVCache<act_t> cache;
  cache.capacity = capacity;
  cache.k.assign(config_.n_layers, std::vector<act_t>(size_t(capacity) * config_.kv_dim()));
  cache.v.assign(config_.n_layers, std::vector<act_t>(size_t(capacity) * config_.kv_dim()));
  return cache;
}

template <class B>
std::vector<typename B::act_t> Model<B>::decode(std::span<const int32_t> tokens, KVCache<act_t>& cache) const
    requires(B::kind == BackendKind::cpu) {
  using T = act_t;
  const ModelConfig& c = config_;
  const int n = static_cast<int>(tokens.size()), start = cache.length;
  const int C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads, KV = c.kv_dim();
  const int QKV = c.qkv_dim(), Q = c.q_dim(), up_width = c.family == Family::gpt2 ? F : 2 * F;
  IFT_CHECK(n > 0, "decode: no tokens");
  IFT_CHECK(start + n <= cache.capacity, "decode: ", start + n, " positions exceed the KV cache's ", cache.capacity);
  std::vector<int32_t> pos(n);
  for (int i = 0; i < n; ++i) pos[i] = start + i;
  std::vector<T> x(size_t(n) * C), h(size_t(n) * C), mean(n), rstd(n), qkv(size_t(n) * QKV), att(size_t(n) * Q);
  std::vector<T> up(size_t(n) * up_width), act(size_t(n) * F), y(size_t(n) * C);
  const auto norm = [&](T* out, const T* in, size_t w, size_t b, int rows) {
    if (c.family == Family::gpt2)
      cpu::layernorm_forward(out, mean.data(), rstd.data(), in, p(w), p(b), rows, C, c.norm_eps);
    else
      cpu::rmsnorm_forward(out, rstd.data(), in, p(w), rows, C, c.norm_eps);
  };
  cpu::embedding_forward(x.data(), tokens.data(), pos.data(), p(layout_.wte), p(layout_.wpe), n, C, V,
                         c.max_positions);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerParams& P = layout_.layers[l];
    norm(h.data(), x.data(), P.norm1_w, P.norm1_b, n);
    cpu::matmul_forward(qkv.data(), h.data(), p(P.qkv_w), p(P.qkv_b), n, C, QKV);
    if (c.family == Family::llama)
      cpu::rope_forward(qkv.data(), pos.data(), n, H + c.n_kv_heads, c.head_dim, QKV, c.rope_theta);
    for (int i = 0; i < n; ++i) {
      const T* row = qkv.data() + size_t(i) * QKV;
      std::copy(row + Q, row + Q + KV, cache.k[l].begin() + size_t(start + i) * KV);
      std::copy(row + Q + KV, row + Q + 2 * KV, cache.v[l].begin() + size_t(start + i) * KV);
    }
    cpu::attention_cached(att.data(), qkv.data(), QKV, cache.k[l].data(), cache.v[l].data(), n, start, H,
                          c.n_kv_heads, c.head_dim, scale);
    cpu::matmul_forward(y.data(), att.data(), p(P.o_w), p(P.o_b), n, Q, C);
    cpu::residual_forward(x.data(), x.data(), y.data(), int64_t(n) * C);
    norm(h.data(), x.data(), P.norm2_w, P.norm2_b, n);
    cpu::matmul_forward(up.data(), h.data(), p(P.up_w), p(P.up_b), n, C, up_width);
    if (c.family == Family::gpt2)
      cpu::gelu_forward(act.data(), up.data(), int64_t(n) * F);
    else
      cpu::swiglu_forward(act.data(), up.data(), n, F);
    cpu::matmul_forward(y.data(), act.data(), p(P.down_w), p(P.down_b), n, F, C);
    cpu::residual_forward(x.data(), x.data(), y.data(), int64_t(n) * C);
  }
  cache.length = start + n;
  // Only the last position's logits are needed to pick the next token.
  const T* last = x.data() + size_t(n - 1) * C;
  norm(h.data(), last, layout_.normf_w, layout_.normf_b, 1);
  std::vector<T> logits(V);
  cpu::matmul_forward(logits.data(), h.data(), p(layout_.lm_head), static_cast<const T*>(nullptr), 1, C, V);
  return logits;
}

}  // namespace ift
