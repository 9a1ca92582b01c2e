// AdamW over parameter groups.
//
// The parameters are partitioned into groups. Each group is a set of storage tensors of the flat
// layout (engine/params.h) with its own gradients, fp32 master copy (when the weights are bf16),
// moments, decay runs and hyper-parameters. A frozen group has none of these: backward computes
// no dW for it (engine/transformer.h), and its weights are never written. This is what LoRA (a
// frozen base, trainable adapters), data parallelism (the gradients all-reduced between backward
// and step, group by group) and ZeRO (a group's master and moments sliced by rank) build on.
//
// One step: the global gradient norm over every trainable group, clipping by one common factor,
// then the fused AdamW kernel over each run of each group. Weight decay follows the Hugging Face
// tensor (matrices and embeddings decay; biases and norms do not).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/buffer.h"
#include "engine/params.h"
#include "engine/transformer.h"

namespace ift {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decay_embeddings = true;  // whether token/position embeddings (and a tied head) decay
  float max_grad_norm = 1.0f;    // clip the global norm to this; <= 0 disables clipping (global, not per group)
};

// Which parameters decay: a buffer cut into runs [ends[i-1], ends[i]), decays[i] 0 or 1. The host
// arrays an AdamWArgs (kernels/args.h) points to.
struct DecayRuns {
  std::vector<int64_t> ends;
  std::vector<uint8_t> decays;
};

// The flat buffer cut into maximal runs of tensors with the same decay flag.
DecayRuns decay_runs(const ParamLayout& layout, const AdamWConfig& config);

// One AdamW step's arguments over the elements of `runs` (n = their last end; the arrays are
// pointed to, not copied): config's betas, eps and weight decay, the learning rate, the clip
// factor and the 1-based step t.
AdamWArgs adamw_args(const AdamWConfig& config, float lr, float grad_scale, int64_t t, const DecayRuns& runs);

// How to form a group: the tensors (Hugging Face names) it selects. Every tensor goes to the first
// group that selects it; the ones no group selects form a trainable group named "default".
struct ParamGroupSpec {
  std::string name;
  std::function<bool(const ParamView&)> selects;
  bool trainable = true;
  float lr_scale = 1.0f;                // the group's learning rate is lr * lr_scale
  std::optional<AdamWConfig> adamw;     // this group's betas, eps, decay; else the optimizer's
};

// The partition of a layout into groups, from the specs alone (no memory): what the optimizer
// allocates and what the memory plan counts. Storage tensors are never split (q, k and v of one
// fused qkv buffer share a group), and the position embeddings go with the token embeddings.
struct GroupLayout {
  struct Run {
    size_t begin = 0, end = 0;  // [begin, end) of the flat layout
    size_t local = 0;           // where the run starts in the group's own buffers
  };
  std::string name;
  bool trainable = true;
  float lr_scale = 1.0f;
  std::optional<AdamWConfig> adamw;
  std::vector<Run> runs;        // sorted, maximal
  size_t size = 0;              // elements of the group's own buffers (sum of the runs)
};
std::vector<GroupLayout> group_layout(const ParamLayout& layout, const std::vector<ParamGroupSpec>& specs);

// Elements of the flat layout packed one after another: the trainable ones, which are all the
// optimizer state there is (a frozen group, a LoRA run's base, has none, in memory or on disk).
struct PackedRanges {
  struct Range {
    size_t begin = 0, end = 0;  // [begin, end) of the flat layout
  };
  std::vector<Range> ranges;  // sorted, disjoint, adjacent ones merged
  // The ranges of the trainable groups (their runs, merged).
  static PackedRanges trainable(const std::vector<GroupLayout>& groups);
  size_t size() const;  // elements packed
  // Where flat elements [begin, end) sit in the packed order; ift::Error naming the range when one
  // range does not hold them all (a state of other trainable groups).
  size_t at(size_t begin, size_t end) const;
  bool operator==(const PackedRanges& o) const;
};

// The AdamW state as checkpoints hold it: fp32 moments of the packed elements (the trainable ones
// of the run that saved it: its own PackedRanges::trainable), and the step count. A state whose
// ranges hold more (a checkpoint of a run with fewer frozen tensors) loads too: each trainable run
// takes its elements from it.
struct OptimizerState {
  PackedRanges packed;
  std::vector<float> m, v;  // (packed.size())
  int64_t steps = 0;
};

template <class B>
class Optimizer {
 public:
  using act_t = typename B::act_t;
  using grad_t = typename B::grad_t;
  // bf16 weights are a rounded copy of fp32 master weights, which the optimizer updates.
  static constexpr bool kHasMaster = !std::is_same_v<act_t, float> && !std::is_same_v<act_t, double>;

  struct Group {
    GroupLayout layout;
    Buffer<B, grad_t> grads;   // (size) accumulated by backward; trainable groups only
    Buffer<B, float> master;   // (size) fp32 master weights when act_t is bf16
    Buffer<B, float> m, v;     // (size) AdamW moments, after enable()
    std::vector<DecayRuns> decay;  // per run of layout.runs, from the run's first element (after enable())
  };

  // Allocates the gradients (and master copies) of the trainable groups through the transformer's
  // backend. The optimizer must not outlive the transformer.
  Optimizer(const Transformer<B>& net, std::vector<ParamGroupSpec> specs = {});
  Optimizer(Optimizer&&) noexcept = default;

  // Gradients, master weights and moments of `groups`, for a memory plan (`moments`: with AdamW).
  static MemoryBytes plan(const std::vector<GroupLayout>& groups, bool moments);

  std::vector<Group>& groups() { return groups_; }
  const std::vector<Group>& groups() const { return groups_; }
  const GradMap<grad_t>& grad_map() const { return grad_map_; }  // where backward writes: the trainable groups' gradients
  void zero_grads();

  // Sets the master weights of the trainable groups from fp32 values of the flat layout (the
  // transformer's own weights are set by Transformer::load_params).
  void load_master(std::span<const float> values);
  // Overwrites the trainable groups' elements of `flat` with their master weights (when there are).
  void master_to_host(std::span<float> flat) const;
  // The gradients as one flat fp32 vector of the layout (zeros where frozen).
  std::vector<float> grads_to_host() const;

  // enable() allocates the moments; step() takes the global gradient norm over the trainable
  // groups, clips by one factor, updates every group, and returns the norm before clipping. A
  // non-finite norm leaves parameters and moments untouched (the caller counts the skipped step).
  void enable(const AdamWConfig& config);
  double grad_norm() const;
  double step(Transformer<B>& net, float lr);
  int64_t steps() const { return t_; }
  OptimizerState state() const;
  void set_state(const OptimizerState& state);

 private:
  B* backend_ = nullptr;
  ParamLayout layout_;  // the transformer's (a copy: the model may be moved)
  std::vector<Group> groups_;
  GradMap<grad_t> grad_map_;
  AdamWConfig adamw_;
  bool enabled_ = false;
  int64_t t_ = 0;
};

}  // namespace ift
