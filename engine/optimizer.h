// AdamW over the flat parameter buffer: global grad-norm, clipping, then a fused update per
// Hugging Face tensor so weight decay follows the tensor (matrices and embeddings decay; biases
// and norms do not). Moments are fp32 whatever the parameter type.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/params.h"

namespace ift {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decay_embeddings = true;  // whether token/position embeddings (and a tied head) decay
  float max_grad_norm = 1.0f;    // clip the global norm to this; <= 0 disables clipping
};

class AdamW {
 public:
  AdamW(const ParamLayout& layout, AdamWConfig config);

  // Global L2 norm of grads (all parameters).
  template <class T>
  static double grad_norm(std::span<const T> grads);

  // One step at learning rate lr; returns the gradient norm before clipping. A non-finite norm
  // leaves parameters and moments untouched (the caller counts the skipped step).
  template <class T>
  double step(std::span<T> params, std::span<const T> grads, float lr);

  int64_t steps() const { return t_; }
  std::vector<float>& m() { return m_; }  // (total) first moments, for checkpoints
  std::vector<float>& v() { return v_; }  // (total) second moments
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  struct Range {
    size_t offset, size;
    bool decay;
  };
  AdamWConfig config_;
  std::vector<Range> ranges_;  // the views of the layout, each with its decay flag
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

}  // namespace ift
