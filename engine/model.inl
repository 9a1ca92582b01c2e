// The members of Model<B> (engine/model.h), with those of its pieces. Included by the translation
// unit that instantiates the model for a backend: engine/model.cpp (cpu), engine/emu_backend.cpp,
// engine/cuda/backend.cpp.
#pragma once

#include <random>

#include "engine/base/error.h"
#include "engine/model.h"
#include "engine/optimizer.inl"
#include "engine/transformer.inl"

namespace ift {

// A LoRA model without explicit groups: the base frozen (no gradients, master or moments), the
// adapters (named .lora_A/.lora_B.weight, engine/lora.h) the trainable group "lora".
inline std::vector<ParamGroupSpec> model_groups(const ModelOptions& options, std::vector<ParamGroupSpec> groups) {
  if (!groups.empty() || !options.lora.enabled()) return groups;
  const auto adapter = [](const ParamView& v) {
    return v.name.ends_with(".lora_A.weight") || v.name.ends_with(".lora_B.weight");
  };
  groups.push_back({"lora", adapter, true, 1.0f, std::nullopt});
  groups.push_back({"base", [adapter](const ParamView& v) { return !adapter(v); }, false, 1.0f, std::nullopt});
  return groups;
}

// An NF4 projection has no act_t values for AdamW to update: it must be in a frozen group.
template <class B>
Model<B>::Model(const ModelConfig& config, ModelOptions options, std::vector<ParamGroupSpec> groups)
    : net_(config, options), opt_(net_, model_groups(options, std::move(groups))) {
  for (const ParamView& v : layout().views)
    IFT_CHECK(!layout().quantized(v.offset) || !opt_.grad_map().at(v.offset), "parameter groups: ", v.name,
              " is stored in NF4 (lora.quantize: nf4) and must be in a frozen group");
}

template <class B>
Buffer<B, typename B::grad_t>& Model<B>::grads() {
  auto& gs = opt_.groups();
  IFT_CHECK(gs.size() == 1 && gs[0].layout.trainable && gs[0].layout.size == layout().total,
            "Model::grads: the model has parameter groups; read each group's gradients");
  return gs[0].grads;
}

template <class B>
MemoryBytes Model<B>::plan(const ModelConfig& config, int N, ModelOptions options, bool optimizer,
                           const std::vector<ParamGroupSpec>& groups) {
  MemoryBytes m = Transformer<B>::plan(config, N, options);
  const MemoryBytes o = Optimizer<B>::plan(
      group_layout(ParamLayout::build(config, options.lora), model_groups(options, groups)), optimizer);
  for (int i = 0; i < kMemoryParts; ++i) m.bytes[i] += o.bytes[i];
  return m;
}

template <class B>
void Model<B>::init_random(uint64_t seed, double std) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const double residual_std = std / std::sqrt(2.0 * config().n_layers);
  std::vector<float> w(layout().total, 0.0f);
  for (const ParamView& v : layout().views) {
    float* t = w.data() + v.offset;
    const bool residual_out = v.name.ends_with("c_proj.weight") || v.name.ends_with("o_proj.weight") ||
                              v.name.ends_with("down_proj.weight");
    if (v.decay) {
      const double s = residual_out ? residual_std : std;
      for (int64_t i = 0; i < v.numel(); ++i) t[i] = static_cast<float>(s * normal(rng));
    } else if (v.name.ends_with(".weight")) {  // the only undecayed weights are the norms': a scale of 1
      std::fill(t, t + v.numel(), 1.0f - config().norm_weight_offset);
    }
  }
  if (!layout().adapters.empty()) init_lora(layout(), w, seed);
  load_params(w);
}

template <class B>
void Model<B>::load_params(std::span<const float> values) {
  net_.load_params(values);
  opt_.load_master(values);
}

template <class B>
std::vector<float> Model<B>::params_to_host() const {
  std::vector<float> out = net_.params_to_host();
  opt_.master_to_host(out);
  return out;
}

}  // namespace ift
