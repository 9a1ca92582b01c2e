// Checkpoints: each one a directory that is a valid Hugging Face model directory (config.json,
// model.safetensors, the tokenizer's files) plus the training state (optimizer.safetensors with
// the AdamW moments, trainer_state.json, config.yaml). A checkpoint is written under a temporary
// name and renamed into place, so a kill at any moment leaves the previous checkpoint intact.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "engine/lora_files.h"
#include "engine/model.h"
#include "engine/weights.h"
#include "engine/optimizer.h"
#include "engine/params.h"

namespace ift {

struct CheckpointContents {
  const ModelConfig* config = nullptr;
  const ParamLayout* layout = nullptr;
  std::span<const float> params;                      // (layout->total)
  const OptimizerState* optimizer = nullptr;          // null: weights only
  nlohmann::json trainer_state;                       // step, loader position, counters
  std::vector<std::filesystem::path> tokenizer_files; // copied beside the weights
  std::string config_yaml;                            // the resolved training config
  // LoRA runs (engine/lora.h): the checkpoint is a PEFT adapter directory (adapter_config.json,
  // adapter_model.safetensors) instead of a model (the moments are the adapters', as the optimizer
  // holds them); no base copy.
  const LoraConfig* lora = nullptr;
  std::string base_path;                              // the frozen base, for adapter_config.json
};

// Writes `dir` atomically (dir's parent gets a ".tmp-" sibling first). An existing `dir` is replaced.
// On a write failure (ENOSPC, EIO, ...) the ".tmp-" directory is removed and ift::Error names the
// checkpoint and the file that failed; every other checkpoint under dir's parent is left as it was.
void write_checkpoint(const std::filesystem::path& dir, const CheckpointContents& contents);

// "step-00000042" for step 42: names sort in step order.
std::string checkpoint_name(int64_t step);
// The finished checkpoints under `root`, oldest first (temporary directories are ignored).
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& root);
// The file in every checkpoint that records the sha256 of each other file in it.
inline constexpr const char* kChecksumsFile = "checksums.json";
// Recomputes the sha256 of every file checksums.json lists; an error names the first file that is
// missing or differs (bit rot, a partial copy, a mixed-up directory), or a missing checksums.json.
void verify_checkpoint(const std::filesystem::path& dir);

// Deletes all but the newest `keep` checkpoints, and leftovers of interrupted writes.
void prune_checkpoints(const std::filesystem::path& root, int keep);

// Resolves a model directory or a run: DIR itself when it holds model.safetensors (or, a LoRA
// checkpoint, adapter_model.safetensors), else the newest checkpoint under DIR/checkpoints. Throws
// naming DIR when there is neither.
std::filesystem::path resolve_model_dir(const std::filesystem::path& dir);
// Whether `dir` is a LoRA checkpoint / PEFT adapter directory (adapter_model.safetensors).
bool is_adapter_dir(const std::filesystem::path& dir);
// The base model directory a PEFT adapter names (adapter_config.json's base_model_name_or_path).
std::filesystem::path adapter_base(const std::filesystem::path& adapter_dir);

// config.json + model.safetensors of resolve_model_dir(dir), as a model on backend B. With an
// adapter (a PEFT directory, or a LoRA run), the base runs with it unmerged; a LoRA run or
// checkpoint given as `dir` itself is its base plus that adapter.
template <class B = CpuBackend<float>>
Model<B> load_model(const std::filesystem::path& dir, ModelOptions options = {}, std::filesystem::path adapter = {}) {
  std::filesystem::path d = resolve_model_dir(dir);
  if (std::filesystem::exists(d / kChecksumsFile)) verify_checkpoint(d);  // written by ift: check it
  if (adapter.empty() && is_adapter_dir(d)) adapter = d, d = resolve_model_dir(adapter_base(d));
  if (!adapter.empty()) {
    adapter = is_adapter_dir(adapter) ? adapter : resolve_model_dir(adapter);
    BaseWithAdapter m = load_base_with_adapter(d, adapter);
    options.lora = m.lora;
    Model<B> model(m.config, options);
    model.load_params(m.flat);
    return model;
  }
  Model<B> model(ModelConfig::load(d / "config.json"), options);
  model.load_params(read_weights(d / "model.safetensors", model.layout()));
  return model;
}

// The AdamW moments of a checkpoint (the trainable parameters' only, packed, with the flat ranges
// they cover: a LoRA checkpoint's are the adapters') and its step count.
OptimizerState load_optimizer_state(const std::filesystem::path& dir);
nlohmann::json load_trainer_state(const std::filesystem::path& dir);

}  // namespace ift
