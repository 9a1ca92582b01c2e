// LoRA: low-rank adapters on a frozen base, in Hugging Face PEFT's conventions.
//
// An adapted projection y = x W^T + b becomes y = x W^T + b + s (x A^T) B^T, with A (r, in) and
// B (out, r) trainable and W frozen; s = alpha / r (alpha / sqrt(r) with rslora). The targets are
// PEFT's: Hugging Face module names, matched as the last component of the module path (GPT-2's
// `c_proj` adapts both attn.c_proj and mlp.c_proj). A target inside one of ift's fused buffers
// (q/k/v of qkv, gate/up) adapts only its slice of the output; a fused Hugging Face module (GPT-2's
// c_attn, Phi-3's qkv_proj and gate_up_proj) is adapted whole, as PEFT does.
//
// The adapters live in the flat parameter buffer after the base (ParamLayout::adapters, one storage
// tensor per A and per B, named as PEFT's adapter_model.safetensors names them:
// base_model.model.<module>.lora_A.weight / .lora_B.weight), so the optimizer's parameter groups
// carry them: lora_groups() makes the base one frozen group (no gradients, no optimizer state) and
// the adapters the trainable one. engine/lora_path.h runs them; this file is the plain data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>


#include "engine/config.h"

namespace ift {

// The `lora:` block of a training config (docs/training.md). r == 0: no LoRA (a full fine-tune).
struct LoraConfig {
  int r = 0;                          // rank; 0 disables LoRA
  double alpha = 16;                  // scale numerator
  double dropout = 0;                 // on the adapter's input, in training passes (engine/lora_path.h)
  std::vector<std::string> targets;   // Hugging Face module names (lora_target_names lists them)
  bool rslora = false;                // scale alpha / sqrt(r) instead of alpha / r
  std::string quantize = "none";      // "none" | "nf4": the base's projections stored 4-bit (QLoRA; ParamLayout::nf4)

  bool enabled() const { return r > 0; }
  double scale() const;
  // Throws naming `where` (e.g. "config.yaml: lora") and the field: r < 0, no targets, an unknown
  // target (the error lists the family's names), a dropout outside [0, 1), an unknown quantize.
  void check(const ModelConfig& model, const std::string& where) const;
};

// The module names a family's LoRA targets may use, in model order.
std::vector<std::string> lora_target_names(const ModelConfig& model);

// Which projection of a layer an adapter adds to (the transformer's four GEMMs).
enum class LoraSlot { qkv, o, up, down };
inline constexpr int kLoraSlots = 4;

struct LoraAdapter {
  std::string module;  // Hugging Face module path, e.g. "model.layers.0.self_attn.q_proj"
  int layer = 0;
  LoraSlot slot = LoraSlot::qkv;
  int in = 0, out = 0;  // in_features, out_features of the adapted module
  int col = 0;          // its first output column in the slot's GEMM output (k_proj: q_dim)
  size_t a = 0, b = 0;  // flat offsets of A (r, in) and B (out, r)
};

// Appends the adapters of `lora` (already checked) to `layout`: storage after the base, their views
// in adapter_views (PEFT's names and order), and layout.adapters. Called by ParamLayout::build.
struct ParamLayout;
void add_lora_adapters(ParamLayout& layout, const ModelConfig& model, const LoraConfig& lora);

// PEFT's initial adapter values into `flat` (the layout's buffer): A Kaiming-uniform with PEFT's
// a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)), B zero. Deterministic for a seed; the base untouched.
void init_lora(const ParamLayout& layout, std::span<float> flat, uint64_t seed);

}  // namespace ift
