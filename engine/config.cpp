#include "engine/config.h"

#include <cmath>
#include <fstream>

#include "engine/base/error.h"

namespace ift {

namespace {

using nlohmann::json;

// Typed field access that names the file and field in every error.
struct Fields {
  const json& j;
  const std::string& where;

  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }

  int integer(const char* key) const {
    IFT_CHECK(has(key), where, ": field '", key, "' is missing");
    IFT_CHECK(j[key].is_number_integer(), where, ": field '", key, "' must be an integer, got ", j[key].dump());
    return j[key].get<int>();
  }
  int integer(const char* key, int fallback) const { return has(key) ? integer(key) : fallback; }

  double real(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    IFT_CHECK(j[key].is_number(), where, ": field '", key, "' must be a number, got ", j[key].dump());
    return j[key].get<double>();
  }

  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    IFT_CHECK(j[key].is_boolean(), where, ": field '", key, "' must be true or false, got ", j[key].dump());
    return j[key].get<bool>();
  }

  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    IFT_CHECK(j[key].is_string(), where, ": field '", key, "' must be a string, got ", j[key].dump());
    return j[key].get<std::string>();
  }

  // Token ids may be an integer or a list (Llama 3 lists several EOS ids; the first is used).
  int token_id(const char* key) const {
    if (!has(key)) return -1;
    const json& v = j[key];
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int>();
    IFT_CHECK(v.is_number_integer(), where, ": field '", key, "' must be a token id, got ", v.dump());
    return v.get<int>();
  }
};

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& where) {
  IFT_CHECK(j.is_object(), where, ": expected a JSON object");
  Fields f{j, where};
  ModelConfig c;
  c.model_type = f.string("model_type", "");
  IFT_CHECK(!c.model_type.empty(), where, ": field 'model_type' is missing (expected \"gpt2\" or \"llama\")");
  c.bos_token_id = f.token_id("bos_token_id");
  c.eos_token_id = f.token_id("eos_token_id");

  if (c.model_type == "gpt2") {
    c.family = Family::gpt2;
    c.vocab_size = f.integer("vocab_size");
    c.hidden = f.integer("n_embd");
    c.n_layers = f.integer("n_layer");
    c.n_heads = f.integer("n_head");
    c.n_kv_heads = c.n_heads;
    c.head_dim = c.n_heads > 0 ? c.hidden / c.n_heads : 0;
    c.intermediate = f.integer("n_inner", 4 * c.hidden);
    c.max_positions = f.integer("n_positions");
    c.norm_eps = static_cast<float>(f.real("layer_norm_epsilon", 1e-5));
    c.tie_embeddings = f.boolean("tie_word_embeddings", true);
    const std::string act = f.string("activation_function", "gelu_new");
    IFT_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh", where, ": activation_function '", act,
              "' is not supported (GPT-2 models use gelu_new, the tanh approximation)");
    IFT_CHECK(c.tie_embeddings, where, ": GPT-2 models with untied embeddings are not supported");
    IFT_CHECK(!f.boolean("scale_attn_by_inverse_layer_idx", false) && !f.boolean("reorder_and_upcast_attn", false),
              where, ": scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported");
    IFT_CHECK(f.boolean("scale_attn_weights", true), where, ": scale_attn_weights=false is not supported");
    c.norm = NormKind::layernorm, c.mlp = MlpKind::gelu, c.positions = PositionKind::learned;
    c.names = TensorNames::gpt2;
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
  } else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2" ||
             c.model_type == "phi3" || c.model_type == "gemma") {
    const bool gemma = c.model_type == "gemma";
    c.family = Family::llama;
    c.vocab_size = f.integer("vocab_size");
    c.hidden = f.integer("hidden_size");
    c.n_layers = f.integer("num_hidden_layers");
    c.n_heads = f.integer("num_attention_heads");
    c.n_kv_heads = f.integer("num_key_value_heads", c.n_heads);
    c.head_dim = f.integer("head_dim", c.n_heads > 0 ? c.hidden / c.n_heads : 0);
    c.intermediate = f.integer("intermediate_size");
    c.max_positions = f.integer("max_position_embeddings", 2048);
    c.norm_eps = static_cast<float>(f.real("rms_norm_eps", 1e-6));
    c.tie_embeddings = f.boolean("tie_word_embeddings", gemma);
    c.norm = NormKind::rmsnorm, c.mlp = MlpKind::swiglu, c.positions = PositionKind::rope;
    c.names = c.model_type == "phi3" ? TensorNames::phi3 : TensorNames::llama;
    // Biases as each family's modeling code creates them: Llama's attention_bias covers q, k, v and
    // o; Qwen2 always has q/k/v biases and never an o_proj bias; Mistral and Phi-3 have none.
    if (c.model_type == "llama" || gemma) {  // Gemma's attention_bias covers q, k, v and o, as Llama's
      c.qkv_bias = c.o_bias = f.boolean("attention_bias", false);
      IFT_CHECK(!gemma || !f.boolean("mlp_bias", false), where, ": field 'mlp_bias' is not a field of gemma models");
      c.mlp_bias = f.boolean("mlp_bias", false);
    } else {
      c.qkv_bias = c.model_type == "qwen2";
      for (const char* key : {"attention_bias", "mlp_bias"})
        IFT_CHECK(!f.boolean(key, false), where, ": field '", key, "' is not a field of ", c.model_type,
                  " models (its projections' biases are fixed by the architecture)");
    }
    double theta = f.real("rope_theta", 10000.0);
    if (f.has("rope_parameters")) {  // transformers 5 moved rope settings into one object
      const json& rp = j["rope_parameters"];
      IFT_CHECK(rp.is_object(), where, ": field 'rope_parameters' must be an object");
      Fields rf{rp, where};
      theta = rf.real("rope_theta", theta);
      const std::string type = rf.string("rope_type", "default");
      IFT_CHECK(type == "default", where, ": rope_parameters.rope_type '", type, "' is not supported");
    }
    c.rope_theta = static_cast<float>(theta);
    IFT_CHECK(!f.has("rope_scaling"), where, ": field 'rope_scaling' is not supported (found ", j["rope_scaling"].dump(),
              ")");
    IFT_CHECK(f.real("partial_rotary_factor", 1.0) == 1.0, where,
              ": field 'partial_rotary_factor' other than 1 is not supported");
    if (gemma) {
      // Gemma's MLP reads hidden_activation and ignores the legacy hidden_act; unset, it is the tanh GELU.
      const std::string act = f.string("hidden_activation", "gelu_pytorch_tanh");
      IFT_CHECK(act == "gelu_pytorch_tanh" || act == "gelu_new", where, ": field 'hidden_activation' '", act,
                "' is not supported (Gemma models use gelu_pytorch_tanh, the tanh approximation)");
      c.mlp = MlpKind::geglu;
      c.norm_weight_offset = 1;
      c.embedding_scale = std::sqrt(static_cast<float>(c.hidden));
      for (const char* key : {"final_logit_softcapping", "attn_logit_softcapping", "query_pre_attn_scalar"})
        IFT_CHECK(!f.has(key), where, ": field '", key, "' is not supported (a Gemma 2 field; Gemma 1 is implemented)");
    } else {
      const std::string act = f.string("hidden_act", "silu");
      IFT_CHECK(act == "silu", where, ": field 'hidden_act' '", act, "' is not supported (", c.model_type,
                " models use silu)");
    }
    // A sliding window changes nothing for sequences no longer than it: kept, and checked per batch.
    const bool windowed = c.model_type == "qwen2" ? f.boolean("use_sliding_window", false) : true;
    if (windowed && f.has("sliding_window")) c.sliding_window = f.integer("sliding_window");
  } else {
    fail(where, ": model_type '", c.model_type,
         "' is not supported (expected gpt2, llama, mistral, qwen2, phi3 or gemma)");
  }
  c.validate(where);
  return c;
}

void ModelConfig::validate(const std::string& where) const {
  IFT_CHECK(vocab_size > 0, where, ": vocab_size must be positive, got ", vocab_size);
  IFT_CHECK(hidden > 0, where, ": hidden size must be positive, got ", hidden);
  IFT_CHECK(n_layers > 0, where, ": number of layers must be positive, got ", n_layers);
  IFT_CHECK(n_heads > 0 && n_kv_heads > 0, where, ": head counts must be positive");
  IFT_CHECK(n_heads % n_kv_heads == 0, where, ": num_attention_heads (", n_heads,
            ") must be a multiple of num_key_value_heads (", n_kv_heads, ")");
  IFT_CHECK(head_dim > 0, where, ": head_dim must be positive, got ", head_dim);
  IFT_CHECK(positions == PositionKind::rope || head_dim * n_heads == hidden, where, ": n_embd (", hidden,
            ") must be divisible by n_head (", n_heads, ")");
  IFT_CHECK(positions != PositionKind::rope || head_dim % 2 == 0, where, ": head_dim must be even for RoPE, got ",
            head_dim);
  IFT_CHECK(sliding_window >= 0, where, ": sliding_window must be positive or null, got ", sliding_window);
  IFT_CHECK(intermediate > 0, where, ": MLP width must be positive, got ", intermediate);
  IFT_CHECK(max_positions > 0, where, ": the number of positions must be positive, got ", max_positions);
  IFT_CHECK(norm_eps > 0, where, ": the norm epsilon must be positive");
  IFT_CHECK(rope_theta > 0, where, ": rope_theta must be positive");
}

ModelConfig ModelConfig::load(const std::filesystem::path& config_json) {
  std::ifstream in(config_json);
  IFT_CHECK(in, config_json.string(), ": cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    fail(config_json.string(), ": not valid JSON (", e.what(), ")");
  }
  return from_json(j, config_json.string());
}

json ModelConfig::to_json() const {
  json j;
  if (family == Family::gpt2) {
    j = {{"model_type", "gpt2"},           {"architectures", {"GPT2LMHeadModel"}},
         {"vocab_size", vocab_size},       {"n_embd", hidden},
         {"n_layer", n_layers},            {"n_head", n_heads},
         {"n_inner", intermediate},        {"n_positions", max_positions},
         {"n_ctx", max_positions},         {"layer_norm_epsilon", norm_eps},
         {"activation_function", "gelu_new"}, {"tie_word_embeddings", true}};
  } else {
    // A model_type whose modeling code creates exactly these biases and tensor names.
    std::string type = "llama", arch = "LlamaForCausalLM";
    if (mlp == MlpKind::geglu)
      type = "gemma", arch = "GemmaForCausalLM";
    else if (names == TensorNames::phi3)
      type = "phi3", arch = "Phi3ForCausalLM";
    else if (qkv_bias && !o_bias && !mlp_bias)
      type = "qwen2", arch = "Qwen2ForCausalLM";
    else if (model_type == "mistral")
      type = "mistral", arch = "MistralForCausalLM";
    j = {{"model_type", type},
         {"architectures", {arch}},
         {"vocab_size", vocab_size},
         {"hidden_size", hidden},
         {"num_hidden_layers", n_layers},
         {"num_attention_heads", n_heads},
         {"num_key_value_heads", n_kv_heads},
         {"head_dim", head_dim},
         {"intermediate_size", intermediate},
         {"max_position_embeddings", max_positions},
         {"rms_norm_eps", norm_eps},
         {"rope_theta", rope_theta},
         {"hidden_act", type == "gemma" ? "gelu_pytorch_tanh" : "silu"},
         {"tie_word_embeddings", tie_embeddings}};
    if (type == "llama") j["attention_bias"] = qkv_bias, j["mlp_bias"] = mlp_bias;
    if (type == "gemma") j["attention_bias"] = qkv_bias, j["hidden_activation"] = "gelu_pytorch_tanh";
    if (type == "qwen2") j["use_sliding_window"] = sliding_window > 0;
    j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
    if (type == "phi3") j["original_max_position_embeddings"] = max_positions;
  }
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  j["torch_dtype"] = "float32";
  return j;
}

}  // namespace ift
