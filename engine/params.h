// Where every parameter lives in the one flat buffer, and how Hugging Face names and lays it out.
//
// Internally every projection is stored as nn.Linear does, w (out, in) with y = x w^T + b, and the
// projections that read the same input are fused: qkv (q rows, then k, then v) and, for Llama, the
// MLP's gate and up (gate rows, then up). A Hugging Face tensor is then a contiguous range of the
// flat buffer (q_proj is the first rows of qkv), possibly transposed (GPT-2's Conv1D stores
// (in, out)), so loading, saving and naming gradients are one table walk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/config.h"
#include "engine/lora.h"

namespace ift {

inline constexpr size_t kNoParam = static_cast<size_t>(-1);  // offset of a tensor the model lacks
inline constexpr size_t kAlignElements = 128;                   // every storage tensor starts at a multiple

struct LayerParams {            // offsets into the flat buffer; kNoParam when absent
  size_t norm1_w, norm1_b;      // (C)
  size_t qkv_w, qkv_b;          // (qkv_dim, C), (qkv_dim)
  size_t o_w, o_b;              // (C, q_dim), (C)
  size_t norm2_w, norm2_b;      // (C)
  size_t up_w, up_b;            // (F, C) GPT-2 c_fc | (2F, C) Llama gate then up; bias likewise
  size_t down_w, down_b;        // (C, F), (C)
};

struct ParamView {                 // one tensor as Hugging Face names and stores it
  std::string name;                // e.g. "model.layers.0.self_attn.k_proj.weight"
  std::vector<int64_t> shape;      // Hugging Face shape
  size_t offset = 0;               // first element in the flat buffer
  bool transposed = false;         // stored here as the transpose of `shape` (2-D only)
  bool decay = false;              // AdamW weight decay applies: matrices and embeddings, not biases or norms
  int64_t numel() const;
};

struct StorageTensor {             // one allocation of the flat buffer; views lie inside one
  size_t offset = 0, numel = 0;
  size_t stored = 0;               // where it starts in the backend's parameter buffer; kNoParam: NF4
};

struct Nf4Slice {                  // one NF4 tensor of a quantized base: one view of a projection weight
  size_t offset = 0, n = 0;        // the flat elements [offset, offset + n) it holds
  size_t codes = 0;                // byte offset in the NF4 buffer of its packed codes ((n + 1) / 2)
  size_t absmax = 0;               // byte offset of its fp32 scales (ceil(n / 64)), 16-byte aligned
};

struct ParamLayout {
  size_t wte = kNoParam;           // (V, C) token embeddings, in storage of (padded_vocab, C)
  size_t wpe = kNoParam;           // (P, C) learned positions (GPT-2)
  std::vector<LayerParams> layers;
  size_t normf_w = kNoParam, normf_b = kNoParam;  // (C)
  size_t lm_head = kNoParam;       // (V, C) in storage of (padded_vocab, C); == wte when tied
  size_t total = 0;                // elements in the flat buffer (the parameters and the alignment gaps)
  size_t parameters = 0;           // elements of the views: the model's parameter count
  std::vector<ParamView> views;    // every tensor, in the order Hugging Face's named_parameters() lists them
  std::vector<StorageTensor> storage;  // in offset order
  // LoRA (engine/lora.h): the adapters' storage follows the base's, [base_total, total). Their views
  // (PEFT's names) are apart from `views`, which stay the base model's (what model.safetensors holds).
  size_t base_total = 0;               // elements of the base's part of the buffer
  std::vector<LoraAdapter> adapters;
  std::vector<ParamView> adapter_views;
  int lora_r = 0;
  double lora_scale = 0;
  // An NF4 base (LoraConfig::quantize "nf4", QLoRA): the four projection weights of every layer (qkv,
  // o, up, down) leave the backend's parameter buffer, which holds the other storage tensors,
  // stored_total elements, each at StorageTensor::stored (aligned as in the flat layout). The
  // projections are NF4 tensors (engine/nf4.h) in a byte buffer of nf4_bytes, one per view in offset
  // order (q, k and v apart, as bitsandbytes quantizes each nn.Linear). Without NF4: every stored ==
  // offset, stored_total == total, nf4 empty. The flat layout (offsets, views, host vectors) is the
  // same either way.
  std::vector<Nf4Slice> nf4;
  size_t nf4_bytes = 0;
  size_t stored_total = 0;

  static ParamLayout build(const ModelConfig& config, const LoraConfig& lora = {});
  const ParamView* find(const std::string& name) const;  // base and adapter views
  // The storage tensor holding flat element `offset` (an error if none does).
  const StorageTensor& storage_of(size_t offset) const;
  bool quantized(size_t offset) const { return storage_of(offset).stored == kNoParam; }
  // Where flat element `offset` lies in the backend's parameter buffer (an error for an NF4 tensor).
  size_t stored_at(size_t offset) const;
  // The NF4 slices of the storage tensor starting at `offset`, [first, last) of nf4.
  std::pair<size_t, size_t> nf4_slices(size_t offset) const;
};

}  // namespace ift
