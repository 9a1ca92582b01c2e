#include "engine/optimizer.h"

#include <algorithm>
#include <vector>

#include "engine/base/error.h"

namespace ift {

DecayRuns decay_runs(const ParamLayout& layout, const AdamWConfig& config) {
  // The views follow Hugging Face's order, not the flat buffer's (Llama lists the norms last).
  std::vector<const ParamView*> views;
  for (const ParamView& v : layout.views) views.push_back(&v);
  for (const ParamView& v : layout.adapter_views) views.push_back(&v);
  std::sort(views.begin(), views.end(), [](const ParamView* a, const ParamView* b) { return a->offset < b->offset; });
  DecayRuns runs;
  size_t covered = 0;
  for (const ParamView* v : views) {
    // Alignment gaps (zeros, never read) join the run of the tensor after them.
    IFT_CHECK(v->offset >= covered, "parameter layout: ", v->name, " starts at ", v->offset, ", inside the tensor before it");
    const bool embedding = v->offset == layout.wte || v->offset == layout.wpe || v->offset == layout.lm_head;
    const uint8_t decays = v->decay && (config.decay_embeddings || !embedding);
    covered = v->offset + static_cast<size_t>(v->numel());
    if (!runs.decays.empty() && runs.decays.back() == decays)
      runs.ends.back() = static_cast<int64_t>(covered);
    else
      runs.ends.push_back(static_cast<int64_t>(covered)), runs.decays.push_back(decays);
  }
  // The padding rows of an untied classifier, last in the buffer, join the last run.
  IFT_CHECK(covered <= layout.total && !runs.ends.empty(), "parameter layout: the views cover ", covered, " of ",
            layout.total, " values");
  runs.ends.back() = static_cast<int64_t>(layout.total);
  return runs;
}

AdamWArgs adamw_args(const AdamWConfig& config, float lr, float grad_scale, int64_t t, const DecayRuns& runs) {
  IFT_ASSERT(runs.ends.size() == runs.decays.size());
  AdamWArgs a;
  a.lr = lr, a.beta1 = config.beta1, a.beta2 = config.beta2, a.eps = config.eps;
  a.weight_decay = config.weight_decay, a.grad_scale = grad_scale, a.t = t;
  a.n = runs.ends.empty() ? 0 : runs.ends.back();
  a.runs = static_cast<int>(runs.ends.size());
  a.run_ends = runs.ends.data(), a.run_decays = runs.decays.data();
  return a;
}

}  // namespace ift

namespace ift {

std::vector<GroupLayout> group_layout(const ParamLayout& layout, const std::vector<ParamGroupSpec>& specs) {
  // Each storage tensor's group: the first spec selecting one of its views. All its views must agree.
  const size_t none = static_cast<size_t>(-1);
  const size_t defaults = specs.size();  // index of the implicit "default" group
  std::vector<size_t> group_of(layout.storage.size(), none);
  std::vector<std::string> first_view(layout.storage.size());
  auto storage_index = [&](size_t offset) {
    return static_cast<size_t>(&layout.storage_of(offset) - layout.storage.data());
  };
  std::vector<const ParamView*> all;
  for (const ParamView& v : layout.views) all.push_back(&v);
  for (const ParamView& v : layout.adapter_views) all.push_back(&v);  // LoRA (engine/lora.h)
  for (const ParamView* view : all) {
    const ParamView& v = *view;
    size_t g = defaults;
    for (size_t i = 0; i < specs.size(); ++i)
      if (specs[i].selects && specs[i].selects(v)) {
        g = i;
        break;
      }
    const size_t s = storage_index(v.offset);
    if (group_of[s] == none) {
      group_of[s] = g, first_view[s] = v.name;
    } else {
      const auto name = [&](size_t i) { return i == defaults ? std::string("default") : specs[i].name; };
      IFT_CHECK(group_of[s] == g, "parameter groups: ", v.name, " (group '", name(g), "') and ", first_view[s],
                " (group '", name(group_of[s]), "') are one fused tensor here and must be in the same group");
    }
  }
  if (layout.wpe != kNoParam) {
    const size_t te = storage_index(layout.wte), pe = storage_index(layout.wpe);
    IFT_CHECK(group_of[te] == group_of[pe], "parameter groups: the position embeddings (", first_view[pe],
              ") must be in the group of the token embeddings (", first_view[te], ")");
  }
  std::vector<GroupLayout> groups(specs.size() + 1);
  for (size_t i = 0; i < specs.size(); ++i) {
    groups[i].name = specs[i].name, groups[i].trainable = specs[i].trainable;
    groups[i].lr_scale = specs[i].lr_scale, groups[i].adamw = specs[i].adamw;
  }
  groups[defaults].name = "default";
  for (size_t s = 0; s < layout.storage.size(); ++s) {
    IFT_CHECK(group_of[s] != none, "parameter layout: storage tensor at ", layout.storage[s].offset, " has no view");
    GroupLayout& g = groups[group_of[s]];
    const StorageTensor& t = layout.storage[s];
    if (!g.runs.empty() && g.runs.back().end <= t.offset &&
        (s == 0 || group_of[s - 1] == group_of[s])) {  // adjacent in the layout: one run, gap included
      g.size += t.offset + t.numel - g.runs.back().end;
      g.runs.back().end = t.offset + t.numel;
    } else {
      g.runs.push_back({t.offset, t.offset + t.numel, g.size});
      g.size += t.numel;
    }
  }
  // Groups that hold nothing are dropped (the default one when the specs select everything).
  std::erase_if(groups, [](const GroupLayout& g) { return g.runs.empty(); });
  return groups;
}

}  // namespace ift

namespace ift {

PackedRanges PackedRanges::trainable(const std::vector<GroupLayout>& groups) {
  PackedRanges p;
  for (const GroupLayout& g : groups)
    if (g.trainable)
      for (const GroupLayout::Run& r : g.runs) p.ranges.push_back({r.begin, r.end});
  std::sort(p.ranges.begin(), p.ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  std::vector<Range> merged;
  for (const Range& r : p.ranges) {
    if (!merged.empty() && merged.back().end == r.begin)
      merged.back().end = r.end;
    else
      merged.push_back(r);
  }
  p.ranges = std::move(merged);
  return p;
}

size_t PackedRanges::size() const {
  size_t n = 0;
  for (const Range& r : ranges) n += r.end - r.begin;
  return n;
}

size_t PackedRanges::at(size_t begin, size_t end) const {
  size_t packed = 0;
  for (const Range& r : ranges) {
    if (r.begin <= begin && end <= r.end) return packed + (begin - r.begin);
    packed += r.end - r.begin;
  }
  fail("optimizer state: it holds no moments for parameters [", begin, ", ", end,
       ") of the flat layout (it was saved with other trainable parameter groups)");
}

bool PackedRanges::operator==(const PackedRanges& o) const {
  if (ranges.size() != o.ranges.size()) return false;
  for (size_t i = 0; i < ranges.size(); ++i)
    if (ranges[i].begin != o.ranges[i].begin || ranges[i].end != o.ranges[i].end) return false;
  return true;
}

}  // namespace ift
