#include "engine/params.h"

#include <algorithm>

#include "engine/base/error.h"
#include "engine/nf4.h"

namespace ift {

int64_t ParamView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

ParamLayout build_views(const ModelConfig& c) {
  ParamLayout p;
  const int64_t C = c.hidden, F = c.intermediate, V = c.vocab_size, Vp = c.padded_vocab();
  auto alloc = [&](int64_t n) {
    const size_t at = (p.total + kAlignElements - 1) / kAlignElements * kAlignElements;
    p.total = at + static_cast<size_t>(n);
    p.storage.push_back({at, static_cast<size_t>(n)});
    return at;
  };
  auto view = [&](std::string name, std::vector<int64_t> shape, size_t offset, bool transposed, bool decay) {
    p.views.push_back({std::move(name), std::move(shape), offset, transposed, decay});
  };

  if (c.names == TensorNames::gpt2) {
    // Names as GPT2LMHeadModel.save_pretrained writes them; Conv1D weights are (in, out).
    const std::string t = "transformer.";
    p.wte = alloc(Vp * C);
    view(t + "wte.weight", {V, C}, p.wte, false, true);
    p.wpe = alloc(int64_t(c.max_positions) * C);
    view(t + "wpe.weight", {c.max_positions, C}, p.wpe, false, true);
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string h = t + "h." + std::to_string(l) + ".";
      LayerParams L{};
      L.norm1_w = alloc(C), L.norm1_b = alloc(C);
      L.qkv_w = alloc(3 * C * C), L.qkv_b = alloc(3 * C);
      L.o_w = alloc(C * C), L.o_b = alloc(C);
      L.norm2_w = alloc(C), L.norm2_b = alloc(C);
      L.up_w = alloc(F * C), L.up_b = alloc(F);
      L.down_w = alloc(C * F), L.down_b = alloc(C);
      view(h + "ln_1.weight", {C}, L.norm1_w, false, false);
      view(h + "ln_1.bias", {C}, L.norm1_b, false, false);
      view(h + "attn.c_attn.weight", {C, 3 * C}, L.qkv_w, true, true);
      view(h + "attn.c_attn.bias", {3 * C}, L.qkv_b, false, false);
      view(h + "attn.c_proj.weight", {C, C}, L.o_w, true, true);
      view(h + "attn.c_proj.bias", {C}, L.o_b, false, false);
      view(h + "ln_2.weight", {C}, L.norm2_w, false, false);
      view(h + "ln_2.bias", {C}, L.norm2_b, false, false);
      view(h + "mlp.c_fc.weight", {C, F}, L.up_w, true, true);
      view(h + "mlp.c_fc.bias", {F}, L.up_b, false, false);
      view(h + "mlp.c_proj.weight", {F, C}, L.down_w, true, true);
      view(h + "mlp.c_proj.bias", {C}, L.down_b, false, false);
      p.layers.push_back(L);
    }
    p.normf_w = alloc(C), p.normf_b = alloc(C);
    view(t + "ln_f.weight", {C}, p.normf_w, false, false);
    view(t + "ln_f.bias", {C}, p.normf_b, false, false);
    p.lm_head = p.wte;
    return p;
  }

  // Llama, Mistral, Qwen2 and Phi-3 share the layer; Phi-3 names the fused buffers as one tensor each.
  const int64_t Q = c.q_dim(), KV = c.kv_dim();
  const bool fused_names = c.names == TensorNames::phi3;
  p.wte = alloc(Vp * C);
  view("model.embed_tokens.weight", {V, C}, p.wte, false, true);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string h = "model.layers." + std::to_string(l) + ".";
    LayerParams L{kNoParam, kNoParam, kNoParam, kNoParam, kNoParam, kNoParam,
                  kNoParam, kNoParam, kNoParam, kNoParam, kNoParam, kNoParam};
    L.norm1_w = alloc(C);
    L.qkv_w = alloc((Q + 2 * KV) * C);
    if (c.qkv_bias) L.qkv_b = alloc(Q + 2 * KV);
    L.o_w = alloc(C * Q);
    if (c.o_bias) L.o_b = alloc(C);
    L.norm2_w = alloc(C);
    L.up_w = alloc(2 * F * C);
    if (c.mlp_bias) L.up_b = alloc(2 * F);
    L.down_w = alloc(C * F);
    if (c.mlp_bias) L.down_b = alloc(C);
    // named_parameters() order: attention projections, MLP, then the two norms.
    const std::string a = h + "self_attn.";
    if (fused_names) {
      view(a + "qkv_proj.weight", {Q + 2 * KV, C}, L.qkv_w, false, true);
    } else {
      view(a + "q_proj.weight", {Q, C}, L.qkv_w, false, true);
      if (c.qkv_bias) view(a + "q_proj.bias", {Q}, L.qkv_b, false, false);
      view(a + "k_proj.weight", {KV, C}, L.qkv_w + Q * C, false, true);
      if (c.qkv_bias) view(a + "k_proj.bias", {KV}, L.qkv_b + Q, false, false);
      view(a + "v_proj.weight", {KV, C}, L.qkv_w + (Q + KV) * C, false, true);
      if (c.qkv_bias) view(a + "v_proj.bias", {KV}, L.qkv_b + Q + KV, false, false);
    }
    view(a + "o_proj.weight", {C, Q}, L.o_w, false, true);
    if (c.o_bias) view(a + "o_proj.bias", {C}, L.o_b, false, false);
    const std::string m = h + "mlp.";
    if (fused_names) {
      view(m + "gate_up_proj.weight", {2 * F, C}, L.up_w, false, true);
    } else {
      view(m + "gate_proj.weight", {F, C}, L.up_w, false, true);
      if (c.mlp_bias) view(m + "gate_proj.bias", {F}, L.up_b, false, false);
      view(m + "up_proj.weight", {F, C}, L.up_w + F * C, false, true);
      if (c.mlp_bias) view(m + "up_proj.bias", {F}, L.up_b + F, false, false);
    }
    view(m + "down_proj.weight", {C, F}, L.down_w, false, true);
    if (c.mlp_bias) view(m + "down_proj.bias", {C}, L.down_b, false, false);
    view(h + "input_layernorm.weight", {C}, L.norm1_w, false, false);
    view(h + "post_attention_layernorm.weight", {C}, L.norm2_w, false, false);
    p.layers.push_back(L);
  }
  p.normf_w = alloc(C);
  view("model.norm.weight", {C}, p.normf_w, false, false);
  if (c.tie_embeddings) {
    p.lm_head = p.wte;
  } else {
    p.lm_head = alloc(Vp * C);
    view("lm_head.weight", {V, C}, p.lm_head, false, true);
  }
  return p;
}

}  // namespace

namespace {

// Where each storage tensor lies in the backend's buffer, and the NF4 slices of a quantized base.
void place_storage(ParamLayout& p, bool nf4) {
  std::vector<size_t> projections;
  if (nf4)
    for (const LayerParams& L : p.layers) projections.insert(projections.end(), {L.qkv_w, L.o_w, L.up_w, L.down_w});
  size_t at = 0;
  for (StorageTensor& t : p.storage) {
    if (std::find(projections.begin(), projections.end(), t.offset) != projections.end()) {
      t.stored = kNoParam;
      continue;
    }
    at = (at + kAlignElements - 1) / kAlignElements * kAlignElements;
    t.stored = at;
    at += t.numel;
  }
  p.stored_total = at;
  if (!nf4) return;
  std::vector<const ParamView*> views;
  for (const ParamView& v : p.views)
    if (p.quantized(v.offset)) views.push_back(&v);
  std::sort(views.begin(), views.end(), [](const ParamView* a, const ParamView* b) { return a->offset < b->offset; });
  const auto align16 = [](size_t bytes) { return (bytes + 15) / 16 * 16; };
  size_t bytes = 0, covered = 0;
  for (const ParamView* v : views) {
    Nf4Slice s;
    s.offset = v->offset, s.n = static_cast<size_t>(v->numel());
    s.codes = bytes;
    s.absmax = align16(s.codes + (s.n + 1) / 2);
    bytes = align16(s.absmax + (s.n + kNf4Block - 1) / kNf4Block * sizeof(float));
    p.nf4.push_back(s);
    covered += s.n;
  }
  size_t quantized = 0;
  for (const StorageTensor& t : p.storage) quantized += t.stored == kNoParam ? t.numel : 0;
  IFT_CHECK(covered == quantized, "parameter layout: the views of the NF4 projections cover ", covered, " of ",
            quantized, " values");
  p.nf4_bytes = bytes;
}

}  // namespace

ParamLayout ParamLayout::build(const ModelConfig& c, const LoraConfig& lora) {
  ParamLayout p = build_views(c);
  p.base_total = p.total;
  if (lora.enabled()) add_lora_adapters(p, c, lora);
  place_storage(p, lora.enabled() && lora.quantize == "nf4");
  for (const ParamView& v : p.views) p.parameters += static_cast<size_t>(v.numel());
  for (const ParamView& v : p.adapter_views) p.parameters += static_cast<size_t>(v.numel());
  return p;
}

// An element of an alignment gap (a run of a group may start or end in one) lies before the tensor
// after the gap, as in the flat layout; past the last tensor, after it.
size_t ParamLayout::stored_at(size_t offset) const {
  if (offset == kNoParam) return kNoParam;
  auto it = std::upper_bound(storage.begin(), storage.end(), offset,
                             [](size_t o, const StorageTensor& t) { return o < t.offset; });
  const bool before_next = it != storage.end() && (it == storage.begin() || offset >= std::prev(it)->offset + std::prev(it)->numel);
  const StorageTensor& t = before_next ? *it : *std::prev(it);
  IFT_CHECK(t.stored != kNoParam, "parameter layout: element ", offset, " is in an NF4 tensor, not in the parameter buffer");
  return before_next ? t.stored - (t.offset - offset) : t.stored + (offset - t.offset);
}

std::pair<size_t, size_t> ParamLayout::nf4_slices(size_t offset) const {
  const StorageTensor& t = storage_of(offset);
  const auto first = std::lower_bound(nf4.begin(), nf4.end(), t.offset,
                                      [](const Nf4Slice& s, size_t o) { return s.offset < o; });
  auto last = first;
  while (last != nf4.end() && last->offset < t.offset + t.numel) ++last;
  return {size_t(first - nf4.begin()), size_t(last - nf4.begin())};
}

const StorageTensor& ParamLayout::storage_of(size_t offset) const {
  auto it = std::upper_bound(storage.begin(), storage.end(), offset,
                             [](size_t o, const StorageTensor& t) { return o < t.offset; });
  IFT_CHECK(it != storage.begin() && offset < std::prev(it)->offset + std::prev(it)->numel,
            "parameter layout: element ", offset, " is in no storage tensor");
  return *std::prev(it);
}

const ParamView* ParamLayout::find(const std::string& name) const {
  for (const ParamView& v : views)
    if (v.name == name) return &v;
  for (const ParamView& v : adapter_views)
    if (v.name == name) return &v;
  return nullptr;
}

}  // namespace ift
