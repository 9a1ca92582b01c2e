// The transformer on the CPU reference ops: forward, explicit backward, both families.
//
//   embed -> [norm1 -> qkv -> (RoPE) -> attention -> o -> +residual
//             -> norm2 -> up -> GELU | SwiGLU -> down -> +residual] x L -> normf -> lm_head -> CE
//
// Templated on the scalar: CpuModel<float> is the cpu backend's model, CpuModel<double> is what the
// whole-model finite-difference checks run. Parameter gradients accumulate (+=) across backward
// calls, so gradient accumulation over micro-batches is the caller zeroing `grads` once per step.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/config.h"
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

  int64_t trained_tokens() const;
};

// Keys and values of every position decoded so far, per layer, for incremental generation.
template <class T>
struct KVCache {
  int capacity = 0;                // positions it can hold
  int length = 0;                  // positions held
  std::vector<std::vector<T>> k, v;  // (layers) x (capacity, kv_dim), keys after RoPE
};

template <class T>
class CpuModel {
 public:
  explicit CpuModel(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }

  std::vector<T> params;  // (layout().total) every weight, addressed through layout()
  std::vector<T> grads;   // (layout().total) accumulated by backward()

  // Initialisation for training from scratch, as GPT-2 does: N(0, std) for matrices and
  // embeddings, residual output projections scaled by 1/sqrt(2 L), ones for norm weights, zeros for
  // biases. Deterministic for a seed.
  void init_random(uint64_t seed, double std = 0.02);

  // Runs the batch and keeps what backward needs. Returns sum over trained rows of the token loss,
  // divided by loss_norm (the trained tokens of the whole optimizer step, so micro-batches add up).
  double forward(const BatchView& batch, double loss_norm);
  // grads += d(loss of the last forward)/d(params).
  void backward();

  std::span<const T> logits() const { return logits_; }  // (N, V) of the last forward

  KVCache<T> make_cache(int capacity) const;
  // Runs `tokens` as the positions after those already in `cache`, appends their keys and values,
  // and returns the logits (V) of the last token. Touches nothing forward() keeps, so it can run
  // between training steps.
  std::vector<T> decode(std::span<const int32_t> tokens, KVCache<T>& cache) const;

 private:
  struct LayerActs {
    std::vector<T> x;            // (N, C) residual stream entering the layer
    std::vector<T> norm1;        // (N, C)
    std::vector<T> mean1, rstd1; // (N)
    std::vector<T> qkv;          // (N, qkv_dim), q and k after RoPE
    std::vector<T> att;          // (N, q_dim) attention output before o
    std::vector<T> lse;          // (N, H)
    std::vector<T> mid;          // (N, C) residual stream after attention
    std::vector<T> norm2;        // (N, C)
    std::vector<T> mean2, rstd2; // (N)
    std::vector<T> up;           // (N, F) GPT-2 | (N, 2F) Llama, before the activation
    std::vector<T> act;          // (N, F)
  };

  void norm_forward(T* out, T* mean, T* rstd, const T* x, size_t w, size_t b, int N) const;
  void norm_backward(T* dx, const T* dres, const T* dout, const T* x, size_t w, size_t b, const T* mean,
                     const T* rstd, int N);
  const T* p(size_t offset) const { return offset == kNoParam ? nullptr : params.data() + offset; }
  T* g(size_t offset) { return offset == kNoParam ? nullptr : grads.data() + offset; }

  ModelConfig config_;
  ParamLayout layout_;
  // The last batch (copied: backward runs after the caller's buffers may be gone).
  int N_ = 0;
  std::vector<int32_t> tokens_, targets_, positions_, cu_seqlens_;
  double loss_norm_ = 1;
  std::vector<LayerActs> acts_;
  std::vector<T> xf_, normf_, meanf_, rstdf_;  // (N, C) final residual, its norm; (N) stats
  std::vector<T> logits_;                      // (N, V)
};

extern template class CpuModel<float>;
extern template class CpuModel<double>;

}  // namespace ift
