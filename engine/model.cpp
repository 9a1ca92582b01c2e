#include "engine/model.h"

#include <cmath>
#include <random>

#include "engine/cpu/ops.h"
#include "engine/error.h"

namespace ift {

int64_t BatchView::trained_tokens() const {
  int64_t n = 0;
  for (int32_t t : targets) n += t >= 0;
  return n;
}

template <class T>
CpuModel<T>::CpuModel(const ModelConfig& config) : config_(config), layout_(ParamLayout::build(config)) {
  params.assign(layout_.total, T(0));
  grads.assign(layout_.total, T(0));
}

template <class T>
void CpuModel<T>::init_random(uint64_t seed, double std) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const double residual_std = std / std::sqrt(2.0 * config_.n_layers);
  std::fill(params.begin(), params.end(), T(0));
  for (const ParamView& v : layout_.views) {
    T* w = params.data() + v.offset;
    const bool residual_out = v.name.ends_with("c_proj.weight") || v.name.ends_with("o_proj.weight") ||
                              v.name.ends_with("down_proj.weight");
    if (v.decay) {
      const double s = residual_out ? residual_std : std;
      for (int64_t i = 0; i < v.numel(); ++i) w[i] = static_cast<T>(s * normal(rng));
    } else if (v.name.ends_with(".weight")) {  // the only undecayed weights are the norms'
      std::fill(w, w + v.numel(), T(1));
    }
  }
}

template <class T>
void CpuModel<T>::norm_forward(T* out, T* mean, T* rstd, const T* x, size_t w, size_t b, int N) const {
  if (config_.family == Family::gpt2)
    cpu::layernorm_forward(out, mean, rstd, x, p(w), p(b), N, config_.hidden, config_.norm_eps);
  else
    cpu::rmsnorm_forward(out, rstd, x, p(w), N, config_.hidden, config_.norm_eps);
}

template <class T>
void CpuModel<T>::norm_backward(T* dx, const T* dres, const T* dout, const T* x, size_t w, size_t b, const T* mean,
                                const T* rstd, int N) {
  if (config_.family == Family::gpt2)
    cpu::layernorm_backward(dx, g(w), g(b), dres, dout, x, p(w), mean, rstd, N, config_.hidden);
  else
    cpu::rmsnorm_backward(dx, g(w), dres, dout, x, p(w), rstd, N, config_.hidden);
}

template <class T>
double CpuModel<T>::forward(const BatchView& batch, double loss_norm) {
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
  N_ = N;
  tokens_.assign(batch.tokens.begin(), batch.tokens.end());
  targets_.assign(batch.targets.begin(), batch.targets.end());
  positions_.assign(batch.positions.begin(), batch.positions.end());
  cu_seqlens_.assign(batch.cu_seqlens.begin(), batch.cu_seqlens.end());
  loss_norm_ = loss_norm;

  acts_.resize(c.n_layers);
  for (LayerActs& a : acts_) {
    a.x.resize(size_t(N) * C), a.norm1.resize(size_t(N) * C), a.mean1.resize(N), a.rstd1.resize(N);
    a.qkv.resize(size_t(N) * QKV), a.att.resize(size_t(N) * Q), a.lse.resize(size_t(N) * H);
    a.mid.resize(size_t(N) * C), a.norm2.resize(size_t(N) * C), a.mean2.resize(N), a.rstd2.resize(N);
    a.up.resize(size_t(N) * up_width), a.act.resize(size_t(N) * F);
  }
  xf_.resize(size_t(N) * C), normf_.resize(size_t(N) * C), meanf_.resize(N), rstdf_.resize(N);
  logits_.resize(size_t(N) * V);

  cpu::AttentionShape shape;
  shape.N = N, shape.H = H, shape.KVH = c.n_kv_heads, shape.D = c.head_dim, shape.ld = QKV;
  shape.cu_seqlens = cu_seqlens_.data(), shape.S = S;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  T* x0 = acts_[0].x.data();
  cpu::embedding_forward(x0, tokens_.data(), positions_.data(), p(layout_.wte), p(layout_.wpe), N, C, V,
                         c.max_positions);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerParams& L = layout_.layers[l];
    LayerActs& a = acts_[l];
    norm_forward(a.norm1.data(), a.mean1.data(), a.rstd1.data(), a.x.data(), L.norm1_w, L.norm1_b, N);
    cpu::matmul_forward(a.qkv.data(), a.norm1.data(), p(L.qkv_w), p(L.qkv_b), N, C, QKV);
    if (c.family == Family::llama)  // q and k heads are adjacent in each row: one pass rotates both
      cpu::rope_forward(a.qkv.data(), positions_.data(), N, H + c.n_kv_heads, c.head_dim, QKV, c.rope_theta);
    const T* q = a.qkv.data();
    cpu::attention_forward(a.att.data(), a.lse.data(), q, q + Q, q + Q + c.kv_dim(), shape);
    cpu::matmul_forward(a.mid.data(), a.att.data(), p(L.o_w), p(L.o_b), N, Q, C);
    cpu::residual_forward(a.mid.data(), a.mid.data(), a.x.data(), int64_t(N) * C);
    norm_forward(a.norm2.data(), a.mean2.data(), a.rstd2.data(), a.mid.data(), L.norm2_w, L.norm2_b, N);
    cpu::matmul_forward(a.up.data(), a.norm2.data(), p(L.up_w), p(L.up_b), N, C, up_width);
    if (c.family == Family::gpt2)
      cpu::gelu_forward(a.act.data(), a.up.data(), int64_t(N) * F);
    else
      cpu::swiglu_forward(a.act.data(), a.up.data(), N, F);
    T* next = l + 1 < c.n_layers ? acts_[l + 1].x.data() : xf_.data();
    cpu::matmul_forward(next, a.act.data(), p(L.down_w), p(L.down_b), N, F, C);
    cpu::residual_forward(next, next, a.mid.data(), int64_t(N) * C);
  }
  norm_forward(normf_.data(), meanf_.data(), rstdf_.data(), xf_.data(), layout_.normf_w, layout_.normf_b, N);
  cpu::matmul_forward(logits_.data(), normf_.data(), p(layout_.lm_head), static_cast<const T*>(nullptr), N, C, V);
  return cpu::cross_entropy_forward(static_cast<T*>(nullptr), logits_.data(), targets_.data(), N, V, loss_norm);
}

template <class T>
void CpuModel<T>::backward() {
  const ModelConfig& c = config_;
  const int N = N_, C = c.hidden, F = c.intermediate, V = c.vocab_size, H = c.n_heads;
  const int QKV = c.qkv_dim(), Q = c.q_dim(), KV = c.kv_dim(), up_width = c.family == Family::gpt2 ? F : 2 * F;
  IFT_CHECK(N > 0 && !acts_.empty(), "backward called without a forward");

  std::vector<T> dlogits(size_t(N) * V), dres(size_t(N) * C), dnorm(size_t(N) * C);
  std::vector<T> dqkv(size_t(N) * QKV), datt(size_t(N) * Q), dup(size_t(N) * up_width), dact(size_t(N) * F);

  cpu::cross_entropy_forward(dlogits.data(), logits_.data(), targets_.data(), N, V, loss_norm_);
  cpu::matmul_backward(dnorm.data(), g(layout_.lm_head), static_cast<T*>(nullptr), dlogits.data(), normf_.data(),
                       p(layout_.lm_head), N, C, V);
  norm_backward(dres.data(), nullptr, dnorm.data(), xf_.data(), layout_.normf_w, layout_.normf_b, meanf_.data(),
                rstdf_.data(), N);

  cpu::AttentionShape shape;
  shape.N = N, shape.H = H, shape.KVH = c.n_kv_heads, shape.D = c.head_dim, shape.ld = QKV;
  shape.cu_seqlens = cu_seqlens_.data(), shape.S = static_cast<int>(cu_seqlens_.size()) - 1;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  for (int l = c.n_layers - 1; l >= 0; --l) {
    const LayerParams& L = layout_.layers[l];
    LayerActs& a = acts_[l];
    // MLP; dres is the gradient of the layer's output, which is also the residual's.
    cpu::matmul_backward(dact.data(), g(L.down_w), g(L.down_b), dres.data(), a.act.data(), p(L.down_w), N, F, C);
    if (c.family == Family::gpt2)
      cpu::gelu_backward(dup.data(), a.up.data(), dact.data(), int64_t(N) * F);
    else
      cpu::swiglu_backward(dup.data(), a.up.data(), dact.data(), N, F);
    cpu::matmul_backward(dnorm.data(), g(L.up_w), g(L.up_b), dup.data(), a.norm2.data(), p(L.up_w), N, C, up_width);
    norm_backward(dres.data(), dres.data(), dnorm.data(), a.mid.data(), L.norm2_w, L.norm2_b, a.mean2.data(),
                  a.rstd2.data(), N);
    // Attention.
    cpu::matmul_backward(datt.data(), g(L.o_w), g(L.o_b), dres.data(), a.att.data(), p(L.o_w), N, Q, C);
    const T* q = a.qkv.data();
    cpu::attention_backward(dqkv.data(), dqkv.data() + Q, dqkv.data() + Q + KV, datt.data(), q, q + Q, q + Q + KV,
                            a.att.data(), a.lse.data(), shape);
    if (c.family == Family::llama)
      cpu::rope_backward(dqkv.data(), positions_.data(), N, H + c.n_kv_heads, c.head_dim, QKV, c.rope_theta);
    cpu::matmul_backward(dnorm.data(), g(L.qkv_w), g(L.qkv_b), dqkv.data(), a.norm1.data(), p(L.qkv_w), N, C, QKV);
    norm_backward(dres.data(), dres.data(), dnorm.data(), a.x.data(), L.norm1_w, L.norm1_b, a.mean1.data(),
                  a.rstd1.data(), N);
  }
  cpu::embedding_backward(g(layout_.wte), g(layout_.wpe), dres.data(), tokens_.data(), positions_.data(), N, C);
}

template <class T>
KVCache<T> CpuModel<T>::make_cache(int capacity) const {
  IFT_CHECK(capacity > 0, "KV cache: capacity must be positive");
  IFT_CHECK(config_.family != Family::gpt2 || capacity <= config_.max_positions, "KV cache: ", capacity,
            " positions exceed the model's ", config_.max_positions, " learned positions");
  KVCache<T> cache;
  cache.capacity = capacity;
  cache.k.assign(config_.n_layers, std::vector<T>(size_t(capacity) * config_.kv_dim()));
  cache.v.assign(config_.n_layers, std::vector<T>(size_t(capacity) * config_.kv_dim()));
  return cache;
}

template <class T>
std::vector<T> CpuModel<T>::decode(std::span<const int32_t> tokens, KVCache<T>& cache) const {
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
  cpu::embedding_forward(x.data(), tokens.data(), pos.data(), p(layout_.wte), p(layout_.wpe), n, C, V,
                         c.max_positions);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerParams& L = layout_.layers[l];
    norm_forward(h.data(), mean.data(), rstd.data(), x.data(), L.norm1_w, L.norm1_b, n);
    cpu::matmul_forward(qkv.data(), h.data(), p(L.qkv_w), p(L.qkv_b), n, C, QKV);
    if (c.family == Family::llama)
      cpu::rope_forward(qkv.data(), pos.data(), n, H + c.n_kv_heads, c.head_dim, QKV, c.rope_theta);
    for (int i = 0; i < n; ++i) {
      const T* row = qkv.data() + size_t(i) * QKV;
      std::copy(row + Q, row + Q + KV, cache.k[l].begin() + size_t(start + i) * KV);
      std::copy(row + Q + KV, row + Q + 2 * KV, cache.v[l].begin() + size_t(start + i) * KV);
    }
    cpu::attention_cached(att.data(), qkv.data(), QKV, cache.k[l].data(), cache.v[l].data(), n, start, H,
                          c.n_kv_heads, c.head_dim, scale);
    cpu::matmul_forward(y.data(), att.data(), p(L.o_w), p(L.o_b), n, Q, C);
    cpu::residual_forward(x.data(), x.data(), y.data(), int64_t(n) * C);
    norm_forward(h.data(), mean.data(), rstd.data(), x.data(), L.norm2_w, L.norm2_b, n);
    cpu::matmul_forward(up.data(), h.data(), p(L.up_w), p(L.up_b), n, C, up_width);
    if (c.family == Family::gpt2)
      cpu::gelu_forward(act.data(), up.data(), int64_t(n) * F);
    else
      cpu::swiglu_forward(act.data(), up.data(), n, F);
    cpu::matmul_forward(y.data(), act.data(), p(L.down_w), p(L.down_b), n, F, C);
    cpu::residual_forward(x.data(), x.data(), y.data(), int64_t(n) * C);
  }
  cache.length = start + n;
  // Only the last position's logits are needed to pick the next token.
  const T* last = x.data() + size_t(n - 1) * C;
  norm_forward(h.data(), mean.data(), rstd.data(), last, layout_.normf_w, layout_.normf_b, 1);
  std::vector<T> logits(V);
  cpu::matmul_forward(logits.data(), h.data(), p(layout_.lm_head), static_cast<const T*>(nullptr), 1, C, V);
  return logits;
}

template class CpuModel<float>;
template class CpuModel<double>;

}  // namespace ift
