#include "data/template.h"

#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "engine/base/error.h"

namespace ift {

std::string tokenizer_description(const Tokenizer& t) {
  std::string files;
  for (const auto& f : t.files()) files += (files.empty() ? "" : ", ") + f.string();
  return "tokenizer " + (files.empty() ? std::string("(in memory)") : files) + " (vocab " +
         std::to_string(t.vocab_size()) + ")";
}

Template builtin_template(std::string_view name) {
  Template t;
  t.name = std::string(name);
  if (name == "alpaca") {
    // Stanford Alpaca's PROMPT_DICT, word for word; the output follows "### Response:" directly.
    t.bos = "{bos}";
    t.default_system =
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
    t.default_system_with_input =
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.";
    t.system_suffix = "\n\n";
    t.user_prefix = "### Instruction:\n";
    t.input_prefix = "\n\n### Input:\n";
    t.user_suffix = "\n\n### Response:";
    t.assistant_suffix = "{eos}";
    t.turn_separator = "\n\n";
  } else if (name == "chatml") {
    t.system_prefix = "<|im_start|>system\n";
    t.system_suffix = "<|im_end|>\n";
    t.user_prefix = "<|im_start|>user\n";
    t.user_suffix = "<|im_end|>\n<|im_start|>assistant\n";
    t.assistant_suffix = "<|im_end|>{eos}";
    t.turn_separator = "\n";
    t.special_tokens = {"<|im_start|>", "<|im_end|>"};
  } else if (name == "llama2") {
    // Meta's chat format: every exchange is "<s>[INST] user [/INST] answer </s>", the system prompt
    // wrapped in <<SYS>> inside the first [INST].
    t.user_prefix = "{bos}[INST] ";
    t.system_in_first_user = true;
    t.system_prefix = "<<SYS>>\n";
    t.system_suffix = "\n<</SYS>>\n\n";
    t.user_suffix = " [/INST]";
    t.assistant_prefix = " ";
    t.assistant_suffix = " {eos}";
  } else if (name == "plain") {
    t.bos = "{bos}";
    t.system_suffix = "\n\n";
    t.user_suffix = "\n";
    t.assistant_suffix = "{eos}";
  } else {
    fail("unknown template '", name, "' (built-in: alpaca, chatml, llama2, plain; or a .yaml file)");
  }
  return t;
}

std::vector<std::string> builtin_template_names() { return {"alpaca", "chatml", "llama2", "plain"}; }

Template template_from_yaml(std::string_view yaml_text, const std::string& name) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    fail(name, ": not valid YAML (", e.what(), ")");
  }
  IFT_CHECK(root.IsMap(), name, ": a template must be a YAML mapping of field: value");
  Template t;
  t.name = name;
  const std::pair<const char*, std::string*> fields[] = {
      {"name", &t.name},
      {"bos", &t.bos},
      {"default_system", &t.default_system},
      {"default_system_with_input", &t.default_system_with_input},
      {"system_prefix", &t.system_prefix},
      {"system_suffix", &t.system_suffix},
      {"user_prefix", &t.user_prefix},
      {"user_suffix", &t.user_suffix},
      {"input_prefix", &t.input_prefix},
      {"assistant_prefix", &t.assistant_prefix},
      {"assistant_suffix", &t.assistant_suffix},
      {"turn_separator", &t.turn_separator},
  };
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    try {
      bool known = false;
      for (const auto& [field, dst] : fields) {
        if (key != field) continue;
        IFT_CHECK(v.IsScalar(), name, ": '", key, "' must be a string");
        *dst = v.as<std::string>();
        known = true;
      }
      if (key == "system_in_first_user") {
        t.system_in_first_user = v.as<bool>();
        known = true;
      } else if (key == "special_tokens") {
        IFT_CHECK(v.IsSequence(), name, ": 'special_tokens' must be a list of strings");
        for (const auto& s : v) t.special_tokens.push_back(s.as<std::string>());
        known = true;
      }
      IFT_CHECK(known, name, ": unknown template field '", key, "'");
    } catch (const YAML::Exception& e) {
      fail(name, ": field '", key, "' has the wrong type (", e.what(), ")");
    }
  }
  IFT_CHECK(!t.assistant_suffix.empty(), name,
            ": 'assistant_suffix' is empty: the model would never learn to end its turn (use \"{eos}\")");
  return t;
}

Template load_template_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  IFT_CHECK(in, path.string(), ": cannot open template");
  std::ostringstream buf;
  buf << in.rdbuf();
  return template_from_yaml(buf.str(), path.string());
}

Template find_template(const std::string& name_or_path) {
  if (name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml")) return load_template_file(name_or_path);
  return builtin_template(name_or_path);
}

MaskMode parse_mask_mode(std::string_view name) {
  if (name == "outputs") return MaskMode::outputs;
  if (name == "all") return MaskMode::all;
  if (name == "last") return MaskMode::last;
  fail("unknown mask mode '", name, "' (expected outputs, all or last)");
}

const char* mask_mode_name(MaskMode m) {
  switch (m) {
    case MaskMode::outputs: return "outputs";
    case MaskMode::all: return "all";
    case MaskMode::last: return "last";
  }
  return "?";
}

// ---- ChatFormatter ---------------------------------------------------------------------------

namespace {
constexpr int32_t kNoToken = -2;  // "{bos}" on a tokenizer without a separate BOS: emits nothing
}

std::vector<ChatFormatter::Piece> ChatFormatter::compile(const std::string& s) const {
  std::vector<std::string> names = tmpl_.special_tokens;
  names.push_back("{bos}");
  names.push_back("{eos}");
  std::vector<Piece> out;
  size_t pos = 0;
  while (pos < s.size()) {
    // The earliest special name at or after pos (longest on a tie).
    size_t best = std::string::npos, best_len = 0;
    std::string best_name;
    for (const auto& n : names) {
      if (n.empty()) continue;
      const size_t p = s.find(n, pos);
      if (p != std::string::npos && (p < best || (p == best && n.size() > best_len))) {
        best = p;
        best_len = n.size();
        best_name = n;
      }
    }
    if (best == std::string::npos) best = s.size();
    if (best > pos) out.push_back({s.substr(pos, best - pos), -1});
    if (best == s.size()) break;
    int32_t id;
    if (best_name == "{eos}") {
      id = tok_.eos_id();
      IFT_CHECK(id >= 0, "template '", tmpl_.name, "' ends outputs with {eos}, but ", tokenizer_description(tok_),
                " has no EOS token");
    } else if (best_name == "{bos}") {
      id = tok_.bos_id() >= 0 && tok_.bos_id() != tok_.eos_id() ? tok_.bos_id() : kNoToken;
    } else {
      const auto sid = tok_.special_id(best_name);
      IFT_CHECK(sid.has_value(), "template '", tmpl_.name, "' needs the special token ", best_name, ", which ",
                tokenizer_description(tok_), " does not have");
      id = *sid;
    }
    out.push_back({best_name, id});
    pos = best + best_len;
  }
  return out;
}

ChatFormatter::ChatFormatter(const Template& tmpl, const Tokenizer& tokenizer) : tmpl_(tmpl), tok_(tokenizer) {
  // Every output ends with EOS (or the template's own end of turn): check it up front, not per sample.
  IFT_CHECK(tok_.eos_id() >= 0 || tmpl_.assistant_suffix.find("{eos}") == std::string::npos,
            "template '", tmpl_.name, "' ends every output with EOS, but ", tokenizer_description(tok_),
            " has no EOS token");
  bos_ = compile(tmpl_.bos);
  system_prefix_ = compile(tmpl_.system_prefix);
  system_suffix_ = compile(tmpl_.system_suffix);
  user_prefix_ = compile(tmpl_.user_prefix);
  user_suffix_ = compile(tmpl_.user_suffix);
  input_prefix_ = compile(tmpl_.input_prefix);
  assistant_prefix_ = compile(tmpl_.assistant_prefix);
  assistant_suffix_ = compile(tmpl_.assistant_suffix);
  turn_separator_ = compile(tmpl_.turn_separator);
}

namespace {

// Accumulates pieces; joins neighbouring text with the same tag and encodes it in one call.
class SampleBuilder {
 public:
  explicit SampleBuilder(const Tokenizer& tok) : tok_(tok) {}

  void text(std::string_view t, bool trained) {
    if (t.empty()) return;
    if (!run_.empty() && trained != run_trained_) flush();
    run_ += t;
    run_trained_ = trained;
  }
  void token(int32_t id, bool trained) {
    flush();
    if (id == kNoToken) return;
    // An EOS right after an EOS (chatml's <|im_end|> when it is the EOS) would teach nothing new.
    if (id == tok_.eos_id() && !sample_.tokens.empty() && sample_.tokens.back() == id) return;
    push(id, trained);
  }
  Sample finish() {
    flush();
    if (!sample_.trained.empty()) sample_.trained[0] = 0;  // the first token has nothing to be predicted from
    return std::move(sample_);
  }

 private:
  void flush() {
    if (run_.empty()) return;
    for (int32_t id : tok_.encode(run_, /*parse_special=*/false)) push(id, run_trained_);
    run_.clear();
  }
  void push(int32_t id, bool trained) {
    sample_.tokens.push_back(id);
    sample_.trained.push_back(trained ? 1 : 0);
  }

  const Tokenizer& tok_;
  Sample sample_;
  std::string run_;
  bool run_trained_ = false;
};

}  // namespace

Sample ChatFormatter::render(const Conversation& c, MaskMode mask) const {
  SampleBuilder b(tok_);
  const bool all = mask == MaskMode::all;
  auto emit = [&](const std::vector<Piece>& pieces, bool trained) {
    for (const Piece& p : pieces) {
      if (p.id == -1) b.text(p.text, trained);
      else b.token(p.id, trained);
    }
  };

  std::string system = c.system;
  if (system.empty()) {
    const bool has_input = !c.turns.empty() && !c.turns[0].input.empty();
    system = has_input && !tmpl_.default_system_with_input.empty() ? tmpl_.default_system_with_input
                                                                   : tmpl_.default_system;
  }
  auto emit_system = [&] {
    if (system.empty()) return;
    emit(system_prefix_, all);
    b.text(system, all);
    emit(system_suffix_, all);
  };

  emit(bos_, all);
  if (!tmpl_.system_in_first_user) emit_system();
  size_t last_assistant = 0;
  for (size_t i = 0; i < c.turns.size(); ++i)
    if (c.turns[i].role == Role::assistant) last_assistant = i;
  for (size_t i = 0; i < c.turns.size(); ++i) {
    const Turn& t = c.turns[i];
    if (t.role == Role::user) {
      emit(user_prefix_, all);
      if (i == 0 && tmpl_.system_in_first_user) emit_system();
      b.text(t.text, all);
      if (!t.input.empty()) {
        emit(input_prefix_, all);
        b.text(t.input, all);
      }
      emit(user_suffix_, all);
    } else {
      const bool trained = all || mask == MaskMode::outputs || i == last_assistant;
      emit(assistant_prefix_, all);
      b.text(t.text, trained);
      emit(assistant_suffix_, trained);
      if (i + 1 < c.turns.size()) emit(turn_separator_, all);
    }
  }
  // A conversation ending with the user is a prompt: the assistant's turn is opened for generation.
  if (!c.turns.empty() && c.turns.back().role == Role::user) emit(assistant_prefix_, all);
  return b.finish();
}

Sample ChatFormatter::render_prompt(const Conversation& c) const {
  IFT_CHECK(!c.turns.empty() && c.turns.back().role == Role::user, c.where.empty() ? "prompt" : c.where,
            ": a prompt must end with a user turn");
  return render(c, MaskMode::outputs);
}

}  // namespace ift
