// The model configuration: one struct for both families, read from a Hugging Face config.json.
//
// GPT-2 style (model_type "gpt2"): LayerNorm with bias, GELU (tanh approximation), learned
// positions, biases everywhere, fused c_attn, tied embeddings.
// Llama style (model_type "llama", also "mistral"/"qwen2" without sliding windows): RMSNorm, RoPE in
// Hugging Face's rotate_half convention, SwiGLU, grouped-query attention, optional tying and biases.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace ift {

enum class Family { gpt2, llama };

struct ModelConfig {
  Family family = Family::llama;
  std::string model_type = "llama";  // as written in config.json
  int vocab_size = 0;
  int hidden = 0;          // d_model
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;      // == n_heads unless grouped-query attention
  int head_dim = 0;        // hidden / n_heads unless given explicitly
  int intermediate = 0;    // MLP width (4 * hidden for GPT-2 unless n_inner)
  int max_positions = 0;   // learned positions (GPT-2) or the context the model was trained for
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tie_embeddings = true;
  bool attention_bias = false;  // Llama: bias on q/k/v/o projections (always on for GPT-2)
  bool mlp_bias = false;        // Llama: bias on gate/up/down (always on for GPT-2)
  int bos_token_id = -1;
  int eos_token_id = -1;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
  bool has_biases() const { return family == Family::gpt2; }

  // Throws ift::Error naming the field on anything missing, mistyped, inconsistent or unsupported.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& where = "config.json");
  static ModelConfig load(const std::filesystem::path& config_json);
  // A config.json that Hugging Face transformers loads as the same model.
  nlohmann::json to_json() const;
  // Checks internal consistency (positive sizes, heads dividing, ...).
  void validate(const std::string& where) const;
};

}  // namespace ift
