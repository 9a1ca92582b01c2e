#include "engine/optimizer.h"

#include <cmath>

#include "engine/cpu/ops.h"
#include "engine/error.h"

namespace ift {

AdamW::AdamW(const ParamLayout& layout, AdamWConfig config) : config_(config) {
  size_t covered = 0;
  for (const ParamView& v : layout.views) {
    const bool embedding = v.offset == layout.wte || v.offset == layout.wpe || v.offset == layout.lm_head;
    ranges_.push_back({v.offset, static_cast<size_t>(v.numel()), v.decay && (config.decay_embeddings || !embedding)});
    covered += static_cast<size_t>(v.numel());
  }
  IFT_ASSERT(covered == layout.total);  // the views tile the flat buffer
  m_.assign(layout.total, 0.0f);
  v_.assign(layout.total, 0.0f);
}

template <class T>
double AdamW::grad_norm(std::span<const T> grads) {
  return std::sqrt(cpu::sum_of_squares(grads.data(), static_cast<int64_t>(grads.size())));
}

template <class T>
double AdamW::step(std::span<T> params, std::span<const T> grads, float lr) {
  IFT_CHECK(params.size() == m_.size() && grads.size() == m_.size(), "AdamW: buffers of ", params.size(), " and ",
            grads.size(), " values for ", m_.size(), " parameters");
  const double norm = grad_norm(grads);
  if (!std::isfinite(norm)) return norm;
  ++t_;
  cpu::AdamWStep s;
  s.lr = lr, s.beta1 = config_.beta1, s.beta2 = config_.beta2, s.eps = config_.eps, s.t = t_;
  s.grad_scale = config_.max_grad_norm > 0 && norm > config_.max_grad_norm
                     ? static_cast<float>(config_.max_grad_norm / (norm + 1e-6))
                     : 1.0f;
  for (const Range& r : ranges_) {
    s.weight_decay = r.decay ? config_.weight_decay : 0.0f;
    cpu::adamw_update(params.data() + r.offset, grads.data() + r.offset, m_.data() + r.offset, v_.data() + r.offset,
                      static_cast<int64_t>(r.size), s);
  }
  return norm;
}

template double AdamW::grad_norm<float>(std::span<const float>);
template double AdamW::grad_norm<double>(std::span<const double>);
template double AdamW::step<float>(std::span<float>, std::span<const float>, float);
template double AdamW::step<double>(std::span<double>, std::span<const double>, float);

}  // namespace ift
