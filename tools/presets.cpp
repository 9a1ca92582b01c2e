#include "tools/presets.h"

#include <filesystem>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "engine/lora.h"

namespace ift {

ModelConfig model_config_or_preset(const std::string& name) {
  if (std::filesystem::is_directory(name)) return ModelConfig::load(std::filesystem::path(name) / "config.json");
  // As Hugging Face config.json fields.
  nlohmann::json j;
  if (name == "gpt2-124m")
    j = {{"model_type", "gpt2"}, {"vocab_size", 50257}, {"n_embd", 768}, {"n_layer", 12}, {"n_head", 12},
         {"n_positions", 1024}};
  else if (name == "gpt2-small-6l")
    j = {{"model_type", "gpt2"}, {"vocab_size", 50257}, {"n_embd", 384}, {"n_layer", 6}, {"n_head", 6},
         {"n_positions", 1024}};
  else if (name == "llama-demo")  // the README demo's model (configs/demo.yaml)
    j = {{"model_type", "llama"}, {"vocab_size", 1024}, {"hidden_size", 128}, {"num_hidden_layers", 4},
         {"num_attention_heads", 4}, {"intermediate_size", 352}, {"max_position_embeddings", 1024},
         {"tie_word_embeddings", true}};
  else if (name == "tinyllama-1.1b")  // TinyLlama-1.1B's shapes (GQA 32/4)
    j = {{"model_type", "llama"}, {"vocab_size", 32000}, {"hidden_size", 2048}, {"num_hidden_layers", 22},
         {"num_attention_heads", 32}, {"num_key_value_heads", 4}, {"intermediate_size", 5632},
         {"max_position_embeddings", 2048}};
  else if (name == "llama2-7b")
    j = {{"model_type", "llama"}, {"vocab_size", 32000}, {"hidden_size", 4096}, {"num_hidden_layers", 32},
         {"num_attention_heads", 32}, {"intermediate_size", 11008}, {"max_position_embeddings", 4096}};
  else if (name == "llama3-8b")  // Llama-3-8B's shapes (GQA 32/8, the 128k vocabulary)
    j = {{"model_type", "llama"}, {"vocab_size", 128256}, {"hidden_size", 4096}, {"num_hidden_layers", 32},
         {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"intermediate_size", 14336},
         {"max_position_embeddings", 8192}, {"rope_theta", 500000.0}};
  else if (name == "llama-128k")  // a small Llama with Llama-3's vocabulary: the logits dominate its memory
    j = {{"model_type", "llama"}, {"vocab_size", 128256}, {"hidden_size", 256}, {"num_hidden_layers", 2},
         {"num_attention_heads", 4}, {"intermediate_size", 704}, {"max_position_embeddings", 8192}};
  else
    fail("unknown architecture '", name,
         "' (gpt2-124m, gpt2-small-6l, llama-demo, tinyllama-1.1b, llama2-7b, llama3-8b, llama-128k, or a model "
         "directory)");
  return ModelConfig::from_json(j);
}

void add_model_option_flags(cli::Parser& p) {
  p.flag("--recompute", "recompute the norms and the MLP activation in the backward pass");
  p.flag("--fused-ce", "fused linear cross-entropy: no (N, V) logits (default: on above a 32k vocabulary)");
  p.flag("--no-fused-ce", "materialise the (N, V) logits (the unfused classifier and loss)");
  p.option("--fused-ce-chunk", "ROWS", "0", "rows per chunk of the fused cross-entropy; 0: automatic");
  p.option("--attention", "PATH", "ift", "whose attention kernels: ift, or cudnn (cuDNN's fused attention; backend cuda, bf16)");
}

ModelOptions model_options(const cli::Parser& p) {
  IFT_CHECK(!(p.on("--fused-ce") && p.on("--no-fused-ce")), "--fused-ce and --no-fused-ce exclude each other");
  ModelOptions o;
  o.recompute = p.on("--recompute");
  if (p.on("--fused-ce")) o.fused_ce = true;
  if (p.on("--no-fused-ce")) o.fused_ce = false;
  const int64_t chunk = p.integer("--fused-ce-chunk");
  IFT_CHECK(chunk >= 0 && chunk < (int64_t(1) << 31), "--fused-ce-chunk must be a row count >= 0, got ", chunk);
  o.fused_ce_chunk = static_cast<int>(chunk);
  o.attention = parse_attention_path(p.str("--attention"));
  return o;
}

void add_lora_option_flags(cli::Parser& p) {
  p.option("--lora-r", "R", "0", "LoRA of rank R (alpha 2R) on a frozen base instead of a full fine-tune; 0: full");
  p.option("--lora-targets", "a,b,..", "", "LoRA targets (Hugging Face module names); default: every projection");
  p.flag("--nf4", "with --lora-r: the frozen base's projections stored in NF4 (QLoRA, lora.quantize: nf4)");
}

LoraConfig lora_options(const cli::Parser& p, const ModelConfig& config) {
  LoraConfig lora;
  lora.r = static_cast<int>(p.integer("--lora-r"));
  lora.alpha = 2.0 * lora.r;
  if (lora.enabled()) {
    std::stringstream ss(p.str("--lora-targets"));
    for (std::string t; std::getline(ss, t, ',');) lora.targets.push_back(t);
    if (lora.targets.empty()) lora.targets = lora_target_names(config);
    if (p.on("--nf4")) lora.quantize = "nf4";
    lora.check(config, "--lora");
  }
  IFT_CHECK(!p.on("--nf4") || lora.enabled(), "--nf4 needs --lora-r (an NF4 base is frozen under adapters)");
  return lora;
}

RandomBatch random_batch(int vocab_size, int B, int T, uint32_t seed) {
  std::mt19937 rng(seed);
  const int N = B * T;
  RandomBatch b;
  b.tokens.resize(N), b.targets.resize(N), b.positions.resize(N);
  for (int i = 0; i < N; ++i) b.tokens[i] = static_cast<int32_t>(rng() % vocab_size), b.positions[i] = i % T;
  for (int i = 0; i < N; ++i) b.targets[i] = (i + 1) % T ? b.tokens[i + 1] : -1;
  for (int r = 0; r <= B; ++r) b.cu_seqlens.push_back(r * T);
  return b;
}

}  // namespace ift
