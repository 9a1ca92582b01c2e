// Data parallelism of one model: the gradient reduction the trainer's hook calls, the optimizer
// step, and the whole-tensor state checkpoints hold, over a communicator (engine/dist/comm.h).
//
// zero = 0: every rank holds the whole optimizer. The gradients are all-reduced in buckets (a sum
// in rank order), so every rank computes the same norm and the same AdamW step, bitwise.
// zero = 1 (ZeRO stage 1): the AdamW moments and the fp32 master weights are sliced across the
// ranks, each trainable group's gradients cut by slice_of(group size). The gradients are
// reduce-scattered (the same ordered sums as the all-reduce), the global norm is the rank-ordered
// sum of the slices' squares, each rank updates its slice, and the parameters are all-gathered.
// Without clipping the update equals zero = 0's bitwise; with clipping, the clip factor can differ
// in its last bit (the norm's sum runs in another order).
//
// The state this class hands out and takes (optimizer_state, params_to_host, start) is whole
// tensors on every rank (the moments of the trainable parameters packed, as Optimizer::state gives
// them; the weights over the flat layout), so a checkpoint does not depend on the world size or on
// ZeRO. Under ZeRO those calls are collective: every rank makes them.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/base/error.h"
#include "engine/dist/comm.h"
#include "engine/model.h"
#include "engine/optimizer.h"
#include "engine/optimizer.inl"  // optimizer_detail::append_decay (the members stay extern templates)

namespace ift::dist {

// One rank's memory plan under data parallelism: `whole` (Model<B>::plan) with the master weights
// and the AdamW moments cut to the largest rank's slice of each trainable group when zero = 1.
inline MemoryBytes plan_per_rank(MemoryBytes whole, const std::vector<GroupLayout>& groups, int world, int zero) {
  if (zero == 0 || world == 1) return whole;
  int64_t all = 0, mine = 0;
  for (const GroupLayout& g : groups) {
    if (!g.trainable) continue;
    size_t most = 0;
    for (int r = 0; r < world; ++r) most = std::max(most, slice_of(g.size, r, world).size());
    all += int64_t(g.size), mine += int64_t(most);
  }
  for (MemoryPart p : {MemoryPart::master, MemoryPart::optimizer})
    if (all > 0) whole[p] = whole[p] / all * mine;  // both parts are whole multiples of the elements
  return whole;
}

// Bytes one rank sends per optimizer step (the rank-ordered MPI reductions; NCCL's ring moves the
// same amount): gradients reduce-scattered and summed, then all-gathered as gradients (zero 0) or
// as parameters of act_bytes (zero 1), each (world - 1) / world of the trainable elements.
inline int64_t bytes_per_step(const std::vector<GroupLayout>& groups, int world, int zero, int act_bytes) {
  int64_t n = 0;
  for (const GroupLayout& g : groups) n += g.trainable ? int64_t(g.size) : 0;
  return n * (world - 1) / world * (4 + (zero ? act_bytes : 4));
}

template <class B>
class DataParallel {
 public:
  using act_t = typename B::act_t;
  static constexpr bool kHasMaster = Optimizer<B>::kHasMaster;

  // zero = 0: enables the model's optimizer now. zero = 1: the slices are made by start().
  DataParallel(Communicator& comm, Model<B>& model, int zero, const AdamWConfig& adamw)
      : comm_(comm), model_(model), zero_(zero), adamw_(adamw) {
    IFT_CHECK(zero == 0 || zero == 1, "distributed.zero must be 0 or 1, got ", zero);
    static_assert(std::is_same_v<typename B::grad_t, float>, "data parallelism reduces fp32 gradients");
    if (!zero_) model_.enable_optimizer(adamw);
  }

  Communicator& comm() { return comm_; }
  bool zero() const { return zero_ == 1; }

  // Called once the weights are set (initialised, loaded or resumed), with the checkpoint's
  // optimizer state when resuming. Under ZeRO this takes this rank's slices of the master weights
  // (from the optimizer's whole copy, which is then released) and of the moments.
  void start(const OptimizerState* state) {
    if (!zero_) {
      if (state) model_.set_optimizer_state(*state);
      return;
    }
    const ParamLayout& layout = model_.layout();
    if (state)
      IFT_CHECK(state->m.size() == state->packed.size() && state->v.size() == state->packed.size(),
                "optimizer state: moments of ", state->m.size(), " and ", state->v.size(), " values for ",
                state->packed.size(), " packed parameters");
    std::vector<GroupLayout> layouts;
    for (const auto& g : model_.optimizer().groups()) layouts.push_back(g.layout);
    packed_ = PackedRanges::trainable(layouts);
    B& be = backend();
    const DecayRuns all_plain = decay_runs(layout, adamw_);
    for (auto& g : model_.optimizer().groups()) {
      if (!g.layout.trainable) continue;
      Shard s;
      s.group = &g;
      s.slice = slice_of(g.layout.size, comm_.rank(), comm_.world());
      const size_t n = s.slice.size();
      s.m = Buffer<B, float>(be, n, MemoryPart::optimizer);
      s.v = Buffer<B, float>(be, n, MemoryPart::optimizer);
      be.zero(s.m.data(), n * sizeof(float));
      be.zero(s.v.data(), n * sizeof(float));
      const DecayRuns all = g.layout.adamw ? decay_runs(layout, *g.layout.adamw) : all_plain;
      for (const GroupLayout::Run& run : g.layout.runs) {
        const size_t len = run.end - run.begin;
        std::vector<Slice> parts(comm_.world());
        for (int r = 0; r < comm_.world(); ++r) {  // the owners of this run's elements, relative to the run
          const Slice o = slice_of(g.layout.size, r, comm_.world());
          const size_t lo = std::clamp(o.begin, run.local, run.local + len), hi = std::clamp(o.end, run.local, run.local + len);
          parts[r] = {lo - run.local, hi - run.local};
        }
        s.gather_runs.push_back({run.begin, std::move(parts)});
        const size_t lo = std::max(run.local, s.slice.begin), hi = std::min(run.local + len, s.slice.end);
        if (lo >= hi) continue;
        Piece p;
        p.local = lo, p.size = hi - lo, p.flat = run.begin + (lo - run.local);
        optimizer_detail::append_decay(p.decay, all, p.flat, p.flat + p.size, 0);
        s.pieces.push_back(std::move(p));
      }
      std::vector<float> host(n);
      if constexpr (kHasMaster) {
        s.master = Buffer<B, float>(be, n, MemoryPart::master);
        be.download(host.data(), g.master.data() + s.slice.begin, n * sizeof(float));
        be.upload(s.master.data(), host.data(), n * sizeof(float));
        g.master = Buffer<B, float>();  // the whole copy is not needed any more
      }
      if (state) {
        for (const Piece& p : s.pieces) {
          const size_t at = state->packed.at(p.flat, p.flat + p.size);
          be.upload(s.m.data() + (p.local - s.slice.begin), state->m.data() + at, p.size * sizeof(float));
          be.upload(s.v.data() + (p.local - s.slice.begin), state->v.data() + at, p.size * sizeof(float));
        }
      }
      shards_.push_back(std::move(s));
    }
    t_ = state ? state->steps : 0;
  }

  // The trainer's gradient hook: the group's summed gradients, whole (zero 0) or this rank's slice
  // (zero 1). Zero 0 reduces in buckets of kBucket elements, so the MPI staging buffer is one
  // bucket, not the group; the sums are per element, so the bits do not depend on the bucket size.
  static constexpr size_t kBucket = size_t(8) << 20;  // 32 MiB of fp32
  void reduce_gradients(float* grads, size_t n) {
    if (comm_.world() == 1) return;
    if (zero_) {
      comm_.reduce_scatter_sum(grads, comm_.even_parts(n), B::kind);
      return;
    }
    for (size_t at = 0; at < n; at += kBucket) comm_.all_reduce_sum(grads + at, std::min(kBucket, n - at), B::kind);
  }

  // The optimizer step; returns the global gradient norm before clipping (the same on every rank).
  // A non-finite norm leaves everything untouched.
  double step(float lr) {
    if (!zero_) return model_.step(lr);
    B& be = backend();
    double local = 0;
    for (const Shard& s : shards_) local += be.sum_of_squares(s.group->grads.data() + s.slice.begin, s.slice.size());
    const double norm = std::sqrt(comm_.sum(local));
    if (!std::isfinite(norm)) return norm;
    ++t_;
    const float clip = adamw_.max_grad_norm > 0 && norm > adamw_.max_grad_norm
                           ? static_cast<float>(adamw_.max_grad_norm / (norm + 1e-6))
                           : 1.0f;  // as Optimizer::step
    Transformer<B>& net = model_.net();  // param_at: an NF4 base's buffer lacks the projections
    for (Shard& s : shards_) {
      const GroupLayout& gl = s.group->layout;
      const AdamWConfig& c = gl.adamw ? *gl.adamw : adamw_;
      for (const Piece& p : s.pieces) {
        const size_t at = p.local - s.slice.begin;
        float* master = nullptr;
        if constexpr (kHasMaster) master = s.master.data() + at;
        const AdamWArgs args = adamw_args(c, lr * gl.lr_scale, clip, t_, p.decay);
        IFT_ASSERT(size_t(args.n) == p.size);
        be.adamw(master, net.param_at(p.flat), s.group->grads.data() + p.local, s.m.data() + at, s.v.data() + at, args);
      }
    }
    for (const Shard& s : shards_)
      for (const GatherRun& r : s.gather_runs) comm_.all_gather(net.param_at(r.flat), r.parts, sizeof(act_t), B::kind);
    return norm;
  }

  // The whole AdamW state (collective under ZeRO).
  OptimizerState optimizer_state() {
    if (!zero_) return model_.optimizer_state();
    OptimizerState st;
    st.packed = packed_;
    st.m = whole([](Shard& s) { return s.m.data(); });
    st.v = whole([](Shard& s) { return s.v.data(); });
    st.steps = t_;
    return st;
  }

  // The fp32 weights over the flat layout: the master weights where there are (collective under ZeRO).
  std::vector<float> params_to_host() {
    if (!zero_ || !kHasMaster) return zero_ ? model_.net().params_to_host() : model_.params_to_host();
    std::vector<float> out = model_.net().params_to_host();
    if constexpr (kHasMaster) {
      const std::vector<float> master = whole([](Shard& s) { return s.master.data(); });
      for (const Shard& s : shards_)
        for (const GroupLayout::Run& r : s.group->layout.runs) {
          const size_t at = packed_.at(r.begin, r.end);
          std::copy(master.begin() + at, master.begin() + at + (r.end - r.begin), out.begin() + r.begin);
        }
    }
    return out;
  }

 private:
  struct Piece {           // a run of the group inside this rank's slice
    size_t local = 0;      // where it starts in the group's buffers
    size_t size = 0;
    size_t flat = 0;       // where it starts in the flat layout
    DecayRuns decay;
  };
  struct GatherRun {       // one run of the group, and which rank owns which part of it
    size_t flat = 0;
    std::vector<Slice> parts;
  };
  struct Shard {
    typename Optimizer<B>::Group* group = nullptr;
    Slice slice;                         // of the group's buffers
    Buffer<B, float> master, m, v;       // (slice.size())
    std::vector<Piece> pieces;
    std::vector<GatherRun> gather_runs;
  };

  B& backend() { return model_.net().backend(); }

  // A sliced fp32 buffer made whole on every rank, over the trainable elements packed (packed_; a
  // frozen base is not gathered): each rank fills its pieces into zeros and the ranks sum (x + 0 = x
  // exactly).
  template <class Get>
  std::vector<float> whole(Get get) {
    std::vector<float> packed(packed_.size(), 0.0f);
    for (Shard& s : shards_)
      for (const Piece& p : s.pieces)
        backend().download(packed.data() + packed_.at(p.flat, p.flat + p.size), get(s) + (p.local - s.slice.begin),
                           p.size * sizeof(float));
    comm_.all_reduce_sum(packed.data(), packed.size(), BackendKind::cpu);
    return packed;
  }

  Communicator& comm_;
  Model<B>& model_;
  int zero_ = 0;
  AdamWConfig adamw_;
  std::vector<Shard> shards_;
  PackedRanges packed_;  // the trainable elements, the order of whole()'s buffers
  int64_t t_ = 0;
};

}  // namespace ift::dist
