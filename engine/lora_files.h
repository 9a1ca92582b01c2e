// LoRA's files: PEFT adapter directories (adapter_config.json + adapter_model.safetensors, the names
// and keys PEFT 0.12 writes and loads), a base with an adapter on it, and merging (engine/lora.h has
// the adapters themselves).
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "engine/lora.h"
#include "engine/params.h"

namespace ift {

// adapter_config.json as PEFT 0.12 writes it for this config and base.
nlohmann::json peft_adapter_config(const LoraConfig& lora, const ModelConfig& model, const std::string& base_path);
// The LoRA block of a PEFT adapter_config.json, checked against `model` (error naming the file and
// key: not LoRA, fan-in/out or bias settings ift does not run, unknown targets).
LoraConfig read_peft_adapter_config(const std::filesystem::path& file, const ModelConfig& model);
// Writes adapter_config.json and adapter_model.safetensors (fp32) of the adapters in `flat`.
void write_peft_adapter(const std::filesystem::path& dir, const ParamLayout& layout, std::span<const float> flat,
                        const LoraConfig& lora, const ModelConfig& model, const std::string& base_path);
// Reads adapter_model.safetensors of `dir` into the adapters of `flat`. A missing, extra or
// mis-shaped tensor is an error naming it and the file.
void read_peft_adapter(const std::filesystem::path& dir, const ParamLayout& layout, std::span<float> flat);

// A base model directory (config.json, model.safetensors) with a PEFT adapter directory on it: the
// LoRA config from adapter_config.json, the layout with the adapters, and the fp32 values of both.
struct BaseWithAdapter {
  ModelConfig config;
  LoraConfig lora;
  ParamLayout layout;
  std::vector<float> flat;  // (layout.total)
};
BaseWithAdapter load_base_with_adapter(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir);

// The base with the adapters folded in: W += s B A on every adapted slice (accumulated in double,
// rounded once), the adapters' own entries zeroed. Same layout as `flat`; write it with the base
// views (TensorSet::add_params) for a merged Hugging Face model.
std::vector<float> merge_lora(const ParamLayout& layout, std::span<const float> flat);

}  // namespace ift
