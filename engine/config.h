// The model configuration: one struct for every family, read from a Hugging Face config.json.
//
// The family is data. from_json derives, once, what differs between the families (the norm, the
// MLP, the positions, the bias of each projection, the tensor names), and the model reads those
// fields; nothing below engine/config.cpp and engine/params.cpp branches on the model_type:
//
//   model_type  norm       MLP     positions  biases              tensor names
//   gpt2        LayerNorm  GELU    learned    qkv, o, MLP         transformer.h.N.attn.c_attn (Conv1D)
//   llama       RMSNorm    SwiGLU  RoPE       attention_bias: qkv, o; mlp_bias: MLP   model.layers.N.self_attn.q_proj
//   mistral     RMSNorm    SwiGLU  RoPE       none                llama's (no sliding window)
//   qwen2       RMSNorm    SwiGLU  RoPE       qkv only            llama's (no sliding window)
//   phi3        RMSNorm    SwiGLU  RoPE       none                fused self_attn.qkv_proj, mlp.gate_up_proj
//   gemma       RMSNorm    GeGLU   RoPE       none                llama's; x * (1 + w) norms, embeddings * sqrt(hidden)
//
// GELU is the tanh approximation; RoPE is Hugging Face's rotate_half convention. Fields a family
// has that ift does not implement (rope scaling, sliding windows, soft-capping, ...) are errors
// naming the field, never a silently different model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace ift {

enum class Family { gpt2, llama };                   // which tensor names and config.json fields
enum class NormKind { layernorm, rmsnorm };           // LayerNorm has a bias and subtracts the mean
// up -> GELU -> down | (gate, up) -> silu(gate) * up -> down | (gate, up) -> gelu_tanh(gate) * up -> down
enum class MlpKind { gelu, swiglu, geglu };
enum class PositionKind { learned, rope };            // wpe added to the embeddings | RoPE on q and k
enum class TensorNames { gpt2, llama, phi3 };         // Hugging Face naming and fusing of the tensors

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
  int sliding_window = 0;       // attention sees at most this many positions back; 0: unlimited
  int bos_token_id = -1;
  int eos_token_id = -1;

  // Derived from the model_type and its fields by from_json: what the model code reads.
  NormKind norm = NormKind::rmsnorm;
  MlpKind mlp = MlpKind::swiglu;
  PositionKind positions = PositionKind::rope;
  TensorNames names = TensorNames::llama;
  bool qkv_bias = false;        // bias on the q, k and v projections
  bool o_bias = false;          // bias on the attention output projection
  bool mlp_bias = false;        // bias on the MLP's projections (gate/up and down)
  float norm_weight_offset = 0; // the norms scale by (w + offset): Gemma stores w for x * (1 + w)
  float embedding_scale = 1;    // the embeddings are multiplied by it (Gemma: sqrt(hidden), in the model dtype)

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
  // Width of the MLP's first projection: F, or 2F for the gated MLP (gate rows, then up rows).
  int up_dim() const { return gated_mlp() ? 2 * intermediate : intermediate; }
  bool gated_mlp() const { return mlp != MlpKind::gelu; }
  // The vocabulary rounded up to a multiple of 128: the rows the embedding/classifier storage holds
  // and the columns of the logits, so the classifier GEMM gets cuBLASLt's fast tiles (llm.c's Vp;
  // docs/benchmarks.md measured V = 50257 at 6.68 ms against 0.86 ms for 50304). The padding rows
  // are zeros that are never looked up, trained, sampled or exported.
  int padded_vocab() const { return (vocab_size + 127) / 128 * 128; }
  bool norm_bias() const { return norm == NormKind::layernorm; }
  bool learned_positions() const { return positions == PositionKind::learned; }

  // Throws ift::Error naming the field on anything missing, mistyped, inconsistent or unsupported.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& where = "config.json");
  static ModelConfig load(const std::filesystem::path& config_json);
  // A config.json that Hugging Face transformers loads as the same model.
  nlohmann::json to_json() const;
  // Checks internal consistency (positive sizes, heads dividing, ...).
  void validate(const std::string& where) const;
};

}  // namespace ift
