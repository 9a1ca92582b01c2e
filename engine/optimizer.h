// AdamW's configuration and which parameters decay. The state (fp32 moments, the step count) and
// the update live with the model (Model::enable_optimizer / Model::step, engine/model.h), so that
// they are planned and allocated with the rest of its memory on whatever backend it runs: global
// grad-norm, clipping, then a fused update per run of tensors, weight decay following the Hugging
// Face tensor (matrices and embeddings decay; biases and norms do not).
#pragma once

#include "engine/backend.h"
#include "engine/params.h"

namespace ift {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decay_embeddings = true;  // whether token/position embeddings (and a tied head) decay
  float max_grad_norm = 1.0f;    // clip the global norm to this; <= 0 disables clipping
};

// The flat buffer cut into maximal runs of tensors with the same decay flag.
DecayRuns decay_runs(const ParamLayout& layout, const AdamWConfig& config);

}  // namespace ift
