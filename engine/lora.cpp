#include "engine/lora.h"
#include "engine/lora_files.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "engine/base/error.h"
#include "engine/base/io.h"
#include "engine/params.h"
#include "engine/safetensors.h"
#include "engine/weights.h"

namespace ift {

namespace fs = std::filesystem;

namespace {

// One adaptable Hugging Face module of a layer: its name, where ift computes it, its shape.
struct Module {
  std::string path;  // under the layer, e.g. "self_attn.q_proj"
  LoraSlot slot;
  int in, out, col;
};

std::string layer_prefix(const ModelConfig& c, int l) {
  return (c.names == TensorNames::gpt2 ? "transformer.h." : "model.layers.") + std::to_string(l) + ".";
}

std::vector<Module> layer_modules(const ModelConfig& c) {
  const int C = c.hidden, F = c.intermediate, Q = c.q_dim(), KV = c.kv_dim();
  switch (c.names) {
    case TensorNames::gpt2:  // Conv1D modules, c_attn fused as in transformers
      return {{"attn.c_attn", LoraSlot::qkv, C, 3 * C, 0},
              {"attn.c_proj", LoraSlot::o, C, C, 0},
              {"mlp.c_fc", LoraSlot::up, C, F, 0},
              {"mlp.c_proj", LoraSlot::down, F, C, 0}};
    case TensorNames::phi3:
      return {{"self_attn.qkv_proj", LoraSlot::qkv, C, Q + 2 * KV, 0},
              {"self_attn.o_proj", LoraSlot::o, Q, C, 0},
              {"mlp.gate_up_proj", LoraSlot::up, C, 2 * F, 0},
              {"mlp.down_proj", LoraSlot::down, F, C, 0}};
    case TensorNames::llama:
      break;
  }
  return {{"self_attn.q_proj", LoraSlot::qkv, C, Q, 0},
          {"self_attn.k_proj", LoraSlot::qkv, C, KV, Q},
          {"self_attn.v_proj", LoraSlot::qkv, C, KV, Q + KV},
          {"self_attn.o_proj", LoraSlot::o, Q, C, 0},
          {"mlp.gate_proj", LoraSlot::up, C, F, 0},
          {"mlp.up_proj", LoraSlot::up, C, F, F},
          {"mlp.down_proj", LoraSlot::down, F, C, 0}};
}

std::string last_component(const std::string& path) { return path.substr(path.rfind('.') + 1); }

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// The base weight's (out, in) block of an adapter, in the flat buffer (stored (out', in) as nn.Linear).
size_t slot_weight(const ParamLayout& p, const LoraAdapter& a) {
  const LayerParams& L = p.layers[a.layer];
  switch (a.slot) {
    case LoraSlot::qkv: return L.qkv_w;
    case LoraSlot::o: return L.o_w;
    case LoraSlot::up: return L.up_w;
    case LoraSlot::down: return L.down_w;
  }
  return kNoParam;
}

}  // namespace

double LoraConfig::scale() const { return rslora ? alpha / std::sqrt(double(r)) : alpha / double(r); }

std::vector<std::string> lora_target_names(const ModelConfig& model) {
  std::vector<std::string> names;
  for (const Module& m : layer_modules(model)) {
    const std::string n = last_component(m.path);
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  }
  return names;
}

void LoraConfig::check(const ModelConfig& model, const std::string& where) const {
  IFT_CHECK(r >= 0, where, ".r: must be a positive rank (0 disables LoRA), got ", r);
  if (!enabled()) return;
  IFT_CHECK(alpha > 0 && std::isfinite(alpha), where, ".alpha: must be positive, got ", alpha);
  IFT_CHECK(dropout >= 0 && dropout < 1, where, ".dropout: must be in [0, 1), got ", dropout);
  IFT_CHECK(quantize == "none" || quantize == "nf4", where, ".quantize: '", quantize, "' is not one of none, nf4");
  const std::vector<std::string> valid = lora_target_names(model);
  IFT_CHECK(!targets.empty(), where, ".targets: empty; the ", model.model_type, " modules are ", joined(valid));
  for (const std::string& t : targets)
    IFT_CHECK(std::find(valid.begin(), valid.end(), t) != valid.end(), where, ".targets: '", t,
              "' is not a LoRA target of ", model.model_type, "; the valid names are ", joined(valid));
}

void add_lora_adapters(ParamLayout& p, const ModelConfig& c, const LoraConfig& lora) {
  lora.check(c, "lora");
  p.lora_r = lora.r;
  p.lora_scale = lora.scale();
  auto alloc = [&](int64_t n) {
    const size_t at = (p.total + kAlignElements - 1) / kAlignElements * kAlignElements;
    p.total = at + static_cast<size_t>(n);
    p.storage.push_back({at, static_cast<size_t>(n)});
    return at;
  };
  const std::vector<Module> modules = layer_modules(c);
  for (int l = 0; l < c.n_layers; ++l)
    for (const Module& m : modules) {
      if (std::find(lora.targets.begin(), lora.targets.end(), last_component(m.path)) == lora.targets.end()) continue;
      LoraAdapter a;
      a.module = layer_prefix(c, l) + m.path;
      a.layer = l, a.slot = m.slot, a.in = m.in, a.out = m.out, a.col = m.col;
      a.a = alloc(int64_t(lora.r) * m.in);
      a.b = alloc(int64_t(m.out) * lora.r);
      const std::string name = "base_model.model." + a.module;
      p.adapter_views.push_back({name + ".lora_A.weight", {lora.r, m.in}, a.a, false, true});
      p.adapter_views.push_back({name + ".lora_B.weight", {m.out, lora.r}, a.b, false, true});
      p.adapters.push_back(std::move(a));
    }
}

void init_lora(const ParamLayout& layout, std::span<float> flat, uint64_t seed) {
  IFT_CHECK(flat.size() == layout.total, "init_lora: ", flat.size(), " values for ", layout.total);
  std::mt19937_64 rng(seed ^ 0x4c6f5241ull);  // "LoRA": not the stream init_random draws the base from
  for (const LoraAdapter& a : layout.adapters) {
    // torch.nn.init.kaiming_uniform_(A, a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain sqrt(3 / fan_in).
    const double bound = 1.0 / std::sqrt(double(a.in));
    std::uniform_real_distribution<double> u(-bound, bound);
    for (int64_t i = 0; i < int64_t(layout.lora_r) * a.in; ++i) flat[a.a + i] = static_cast<float>(u(rng));
    std::fill(flat.begin() + a.b, flat.begin() + a.b + size_t(a.out) * layout.lora_r, 0.0f);
  }
}

// ---- PEFT files -------------------------------------------------------------------------------

nlohmann::json peft_adapter_config(const LoraConfig& lora, const ModelConfig& model, const std::string& base_path) {
  std::vector<std::string> targets = lora.targets;
  std::sort(targets.begin(), targets.end());
  // The keys and defaults PEFT 0.12's LoraConfig.save_pretrained writes.
  return {{"alpha_pattern", nlohmann::json::object()},
          {"auto_mapping", nullptr},
          {"base_model_name_or_path", base_path},
          {"bias", "none"},
          {"fan_in_fan_out", model.names == TensorNames::gpt2},  // GPT-2's Conv1D stores (in, out)
          {"inference_mode", true},
          {"init_lora_weights", true},
          {"layer_replication", nullptr},
          {"layers_pattern", nullptr},
          {"layers_to_transform", nullptr},
          {"loftq_config", nlohmann::json::object()},
          {"lora_alpha", lora.alpha},
          {"lora_dropout", lora.dropout},
          {"megatron_config", nullptr},
          {"megatron_core", "megatron.core"},
          {"modules_to_save", nullptr},
          {"peft_type", "LORA"},
          {"r", lora.r},
          {"rank_pattern", nlohmann::json::object()},
          {"revision", nullptr},
          {"target_modules", targets},
          {"task_type", "CAUSAL_LM"},
          {"use_dora", false},
          {"use_rslora", lora.rslora}};
}

LoraConfig read_peft_adapter_config(const fs::path& file, const ModelConfig& model) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(file));
  } catch (const nlohmann::json::exception& e) {
    fail(file.string(), ": not valid JSON (", e.what(), ")");
  }
  const std::string where = file.string();
  IFT_CHECK(j.is_object() && j.value("peft_type", "") == "LORA", where, ": peft_type is not LORA");
  IFT_CHECK(j.value("bias", "none") == "none", where, ": bias '", j.value("bias", ""),
            "' (trained biases) is not supported, only \"none\"");
  IFT_CHECK(!j.value("use_dora", false), where, ": use_dora (DoRA) is not supported");
  for (const char* k : {"rank_pattern", "alpha_pattern"})
    IFT_CHECK(!j.contains(k) || j[k].is_null() || j[k].empty(), where, ": ", k, " (per-module ranks) is not supported");
  IFT_CHECK(!j.contains("modules_to_save") || j["modules_to_save"].is_null(), where,
            ": modules_to_save (fully trained modules beside the adapters) is not supported");
  LoraConfig c;
  try {
    c.r = j.at("r").get<int>();
    c.alpha = j.at("lora_alpha").get<double>();
    c.dropout = 0;  // inference: PEFT's dropout is off outside training
    c.rslora = j.value("use_rslora", false);
    const auto& t = j.at("target_modules");
    IFT_CHECK(t.is_array(), where, ": target_modules must be a list of module names (a regex is not supported)");
    c.targets = t.get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": ", e.what());
  }
  c.check(model, where);
  return c;
}

void write_peft_adapter(const fs::path& dir, const ParamLayout& layout, std::span<const float> flat,
                        const LoraConfig& lora, const ModelConfig& model, const std::string& base_path) {
  IFT_CHECK(flat.size() == layout.total && !layout.adapters.empty(), "write_peft_adapter: not a LoRA layout");
  fs::create_directories(dir);
  write_text_atomically(dir / "adapter_config.json", peft_adapter_config(lora, model, base_path).dump(2) + "\n");
  std::vector<TensorToWrite> tensors;
  for (const ParamView& v : layout.adapter_views)
    tensors.push_back({v.name, v.shape, flat.subspan(v.offset, size_t(v.numel()))});
  write_safetensors(dir / "adapter_model.safetensors", tensors, DType::F32, {{"format", "pt"}});
}

void read_peft_adapter(const fs::path& dir, const ParamLayout& layout, std::span<float> flat) {
  IFT_CHECK(flat.size() == layout.total, "read_peft_adapter: ", flat.size(), " values for ", layout.total);
  const fs::path file = dir / "adapter_model.safetensors";
  const SafetensorsReader r(file);
  std::set<std::string> used;
  for (const ParamView& v : layout.adapter_views) {
    const TensorInfo* t = r.find(v.name);
    IFT_CHECK(t, file.string(), ": tensor '", v.name, "' is missing (the adapter was made for another base or targets)");
    IFT_CHECK(t->shape == v.shape, file.string(), ": tensor '", v.name, "' has shape ", shape_str(t->shape),
              ", this base and r need ", shape_str(v.shape));
    r.read_f32(v.name, flat.subspan(v.offset, size_t(v.numel())));
    used.insert(v.name);
  }
  for (const TensorInfo& t : r.tensors())
    IFT_CHECK(used.count(t.name), file.string(), ": tensor '", t.name,
              "' is not an adapter of this base (another model, more layers or other targets?)");
}

BaseWithAdapter load_base_with_adapter(const fs::path& model_dir, const fs::path& adapter_dir) {
  BaseWithAdapter m;
  m.config = ModelConfig::load(model_dir / "config.json");
  IFT_CHECK(fs::exists(adapter_dir / "adapter_config.json"), adapter_dir.string(),
            ": no adapter_config.json here (a PEFT adapter directory is expected)");
  m.lora = read_peft_adapter_config(adapter_dir / "adapter_config.json", m.config);
  m.layout = ParamLayout::build(m.config, m.lora);
  m.flat = read_weights(model_dir / "model.safetensors", m.layout);
  read_peft_adapter(adapter_dir, m.layout, m.flat);
  return m;
}

std::vector<float> merge_lora(const ParamLayout& p, std::span<const float> flat) {
  IFT_CHECK(flat.size() == p.total, "merge_lora: ", flat.size(), " values for ", p.total);
  std::vector<float> out(flat.begin(), flat.end());
  const int r = p.lora_r;
  const double s = p.lora_scale;
  for (const LoraAdapter& a : p.adapters) {
    // W (out', in) rows [col, col + out) += s B (out, r) A (r, in), accumulated in double.
    float* w = out.data() + slot_weight(p, a) + size_t(a.col) * a.in;
    const float* A = flat.data() + a.a;
    const float* B = flat.data() + a.b;
    for (int o = 0; o < a.out; ++o)
      for (int i = 0; i < a.in; ++i) {
        double acc = 0;
        for (int k = 0; k < r; ++k) acc += double(B[size_t(o) * r + k]) * A[size_t(k) * a.in + i];
        w[size_t(o) * a.in + i] = static_cast<float>(w[size_t(o) * a.in + i] + s * acc);
      }
  }
  std::fill(out.begin() + p.base_total, out.end(), 0.0f);  // the adapters are folded in
  return out;
}

}  // namespace ift
