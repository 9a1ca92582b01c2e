#include "engine/optimizer.h"

#include <algorithm>
#include <vector>

#include "engine/base/error.h"

namespace ift {

DecayRuns decay_runs(const ParamLayout& layout, const AdamWConfig& config) {
  // The views follow Hugging Face's order, not the flat buffer's (Llama lists the norms last).
  std::vector<const ParamView*> views;
  for (const ParamView& v : layout.views) views.push_back(&v);
  std::sort(views.begin(), views.end(), [](const ParamView* a, const ParamView* b) { return a->offset < b->offset; });
  DecayRuns runs;
  size_t covered = 0;
  for (const ParamView* v : views) {
    IFT_CHECK(v->offset == covered, "parameter layout: ", v->name, " starts at ", v->offset, ", not at ", covered);
    const bool embedding = v->offset == layout.wte || v->offset == layout.wpe || v->offset == layout.lm_head;
    const uint8_t decays = v->decay && (config.decay_embeddings || !embedding);
    covered += static_cast<size_t>(v->numel());
    if (!runs.decays.empty() && runs.decays.back() == decays)
      runs.ends.back() = static_cast<int64_t>(covered);
    else
      runs.ends.push_back(static_cast<int64_t>(covered)), runs.decays.push_back(decays);
  }
  IFT_CHECK(covered == layout.total, "parameter layout: the views cover ", covered, " of ", layout.total, " values");
  return runs;
}

}  // namespace ift
