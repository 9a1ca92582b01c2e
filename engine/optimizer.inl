// The members of Optimizer<B> (engine/optimizer.h). Included, through engine/model.inl, by the
// translation unit that instantiates the model for a backend.
#pragma once

#include <cmath>

#include "engine/base/error.h"
#include "engine/optimizer.h"

namespace ift {

namespace optimizer_detail {

// The decay runs of [begin, end) of the flat layout, re-based to start at `local`, appended to out.
inline void append_decay(DecayRuns& out, const DecayRuns& all, size_t begin, size_t end, size_t local) {
  size_t run_begin = 0;
  for (size_t i = 0; i < all.ends.size(); ++i) {
    const size_t run_end = static_cast<size_t>(all.ends[i]);
    const size_t lo = std::max(run_begin, begin), hi = std::min(run_end, end);
    if (lo < hi) {
      const int64_t e = static_cast<int64_t>(local + hi - begin);
      if (!out.decays.empty() && out.decays.back() == all.decays[i] && out.ends.back() == int64_t(local + lo - begin))
        out.ends.back() = e;
      else
        out.ends.push_back(e), out.decays.push_back(all.decays[i]);
    }
    run_begin = run_end;
  }
}

}  // namespace optimizer_detail

template <class B>
Optimizer<B>::Optimizer(const Transformer<B>& net, std::vector<ParamGroupSpec> specs)
    : backend_(&net.backend()), layout_(net.layout()) {
  for (GroupLayout& gl : group_layout(layout_, specs)) {
    Group g;
    g.layout = std::move(gl);
    if (g.layout.trainable) {
      g.grads = Buffer<B, grad_t>(*backend_, g.layout.size, MemoryPart::grads);
      if constexpr (kHasMaster) {
        g.master = Buffer<B, float>(*backend_, g.layout.size, MemoryPart::master);
        backend_->zero(g.master.data(), g.layout.size * sizeof(float));
      }
    }
    groups_.push_back(std::move(g));
  }
  for (Group& g : groups_)
    if (g.layout.trainable)
      for (const GroupLayout::Run& r : g.layout.runs) grad_map_.runs.push_back({r.begin, r.end, g.grads.data() + r.local});
  std::sort(grad_map_.runs.begin(), grad_map_.runs.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  zero_grads();
}

template <class B>
MemoryBytes Optimizer<B>::plan(const std::vector<GroupLayout>& groups, bool moments) {
  MemoryBytes m;
  for (const GroupLayout& g : groups) {
    if (!g.trainable) continue;
    const int64_t n = static_cast<int64_t>(g.size);
    m[MemoryPart::grads] += n * int64_t(sizeof(grad_t));
    m[MemoryPart::master] += kHasMaster ? n * 4 : 0;
    m[MemoryPart::optimizer] += moments ? 2 * n * 4 : 0;
  }
  return m;
}

template <class B>
void Optimizer<B>::zero_grads() {
  for (Group& g : groups_)
    if (g.layout.trainable) backend_->zero(g.grads.data(), g.layout.size * sizeof(grad_t));
}

template <class B>
void Optimizer<B>::load_master(std::span<const float> values) {
  IFT_CHECK(values.size() == layout_.total, "load_master: ", values.size(), " values for ", layout_.total, " parameters");
  if constexpr (kHasMaster)
    for (Group& g : groups_)
      if (g.layout.trainable)
        for (const GroupLayout::Run& r : g.layout.runs)
          backend_->upload(g.master.data() + r.local, values.data() + r.begin, (r.end - r.begin) * sizeof(float));
}

template <class B>
void Optimizer<B>::master_to_host(std::span<float> flat) const {
  IFT_CHECK(flat.size() == layout_.total, "master_to_host: ", flat.size(), " values for ", layout_.total, " parameters");
  if constexpr (kHasMaster)
    for (const Group& g : groups_)
      if (g.layout.trainable)
        for (const GroupLayout::Run& r : g.layout.runs)
          backend_->download(flat.data() + r.begin, g.master.data() + r.local, (r.end - r.begin) * sizeof(float));
}

template <class B>
std::vector<float> Optimizer<B>::grads_to_host() const {
  std::vector<float> out(layout_.total, 0.0f);
  for (const Group& g : groups_) {
    if (!g.layout.trainable) continue;
    for (const GroupLayout::Run& r : g.layout.runs) {
      if constexpr (std::is_same_v<grad_t, float>) {
        backend_->download(out.data() + r.begin, g.grads.data() + r.local, (r.end - r.begin) * sizeof(float));
      } else {  // double, on the cpu
        for (size_t i = 0; i < r.end - r.begin; ++i) out[r.begin + i] = static_cast<float>(g.grads[r.local + i]);
      }
    }
  }
  return out;
}

template <class B>
void Optimizer<B>::enable(const AdamWConfig& config) {
  adamw_ = config;
  for (Group& g : groups_) {
    if (!g.layout.trainable) continue;
    g.decay.clear();
    const DecayRuns all = decay_runs(layout_, g.layout.adamw ? *g.layout.adamw : adamw_);
    for (const GroupLayout::Run& r : g.layout.runs) optimizer_detail::append_decay(g.decay.emplace_back(), all, r.begin, r.end, 0);
    if (g.m.size() == g.layout.size) continue;
    g.m = Buffer<B, float>(*backend_, g.layout.size, MemoryPart::optimizer);
    g.v = Buffer<B, float>(*backend_, g.layout.size, MemoryPart::optimizer);
    backend_->zero(g.m.data(), g.layout.size * sizeof(float));
    backend_->zero(g.v.data(), g.layout.size * sizeof(float));
  }
  if (!enabled_) t_ = 0;
  enabled_ = true;
}

template <class B>
double Optimizer<B>::grad_norm() const {
  double sum = 0;
  for (const Group& g : groups_)
    if (g.layout.trainable) sum += backend_->sum_of_squares(g.grads.data(), g.layout.size);
  return std::sqrt(sum);
}

template <class B>
double Optimizer<B>::step(Transformer<B>& net, float lr) {
  IFT_CHECK(enabled_, "Optimizer::step: enable() was not called");
  const double norm = grad_norm();
  if (!std::isfinite(norm)) return norm;
  ++t_;
  const float clip = adamw_.max_grad_norm > 0 && norm > adamw_.max_grad_norm
                         ? static_cast<float>(adamw_.max_grad_norm / (norm + 1e-6))
                         : 1.0f;
  for (Group& g : groups_) {
    if (!g.layout.trainable) continue;
    const AdamWConfig& c = g.layout.adamw ? *g.layout.adamw : adamw_;
    for (size_t i = 0; i < g.layout.runs.size(); ++i) {
      const GroupLayout::Run& r = g.layout.runs[i];
      float* master = nullptr;
      if constexpr (kHasMaster) master = g.master.data() + r.local;
      const AdamWArgs args = adamw_args(c, lr * g.layout.lr_scale, clip, t_, g.decay[i]);
      IFT_ASSERT(size_t(args.n) == r.end - r.begin);
      backend_->adamw(master, net.param_at(r.begin), g.grads.data() + r.local, g.m.data() + r.local,
                      g.v.data() + r.local, args);
    }
  }
  return norm;
}

template <class B>
OptimizerState Optimizer<B>::state() const {
  IFT_CHECK(enabled_, "optimizer state: enable() was not called");
  OptimizerState s;
  std::vector<GroupLayout> layouts;
  for (const Group& g : groups_) layouts.push_back(g.layout);
  s.packed = PackedRanges::trainable(layouts);
  s.m.assign(s.packed.size(), 0.0f), s.v.assign(s.packed.size(), 0.0f), s.steps = t_;
  for (const Group& g : groups_) {
    if (!g.layout.trainable) continue;
    for (const GroupLayout::Run& r : g.layout.runs) {
      const size_t at = s.packed.at(r.begin, r.end);
      backend_->download(s.m.data() + at, g.m.data() + r.local, (r.end - r.begin) * sizeof(float));
      backend_->download(s.v.data() + at, g.v.data() + r.local, (r.end - r.begin) * sizeof(float));
    }
  }
  return s;
}

template <class B>
void Optimizer<B>::set_state(const OptimizerState& s) {
  IFT_CHECK(enabled_, "set optimizer state: enable() was not called");
  IFT_CHECK(s.m.size() == s.packed.size() && s.v.size() == s.packed.size(), "optimizer state: moments of ",
            s.m.size(), " and ", s.v.size(), " values for ", s.packed.size(), " packed parameters");
  for (Group& g : groups_) {
    if (!g.layout.trainable) continue;
    for (const GroupLayout::Run& r : g.layout.runs) {
      const size_t at = s.packed.at(r.begin, r.end);
      backend_->upload(g.m.data() + r.local, s.m.data() + at, (r.end - r.begin) * sizeof(float));
      backend_->upload(g.v.data() + r.local, s.v.data() + at, (r.end - r.begin) * sizeof(float));
    }
  }
  t_ = s.steps;
}

}  // namespace ift
