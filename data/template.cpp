#include "data/template.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

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

Template load_jinja_template_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  IFT_CHECK(in, path.string(), ": cannot open template");
  std::ostringstream buf;
  buf << in.rdbuf();
  Template t;
  t.name = path.string();
  t.jinja = buf.str();
  IFT_CHECK(!t.jinja.empty(), path.string(), ": the template is empty");
  return t;
}

Template find_template(const std::string& name_or_path) {
  if (name_or_path == "auto") {
    Template t;
    t.name = "auto";
    t.auto_detect = true;
    return t;
  }
  if (name_or_path.ends_with(".jinja") || name_or_path.ends_with(".j2")) return load_jinja_template_file(name_or_path);
  if (name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml")) return load_template_file(name_or_path);
  return builtin_template(name_or_path);
}

namespace {

// A special token in tokenizer_config.json: a string, an AddedToken object {"content": ...}, or null.
std::string config_token(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return "";
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

std::optional<Template> model_chat_template(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  const fs::path config_file = dir / "tokenizer_config.json";
  nlohmann::json config = nlohmann::json::object();
  if (fs::is_regular_file(config_file)) {
    std::ifstream in(config_file);
    try {
      config = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail(config_file.string(), ": not valid JSON (", e.what(), ")");
    }
    IFT_CHECK(config.is_object(), config_file.string(), ": not a JSON object");
  }
  Template t;
  t.bos_token = config_token(config, "bos_token");
  t.eos_token = config_token(config, "eos_token");
  if (config.contains("chat_template") && !config["chat_template"].is_null()) {
    const auto& ct = config["chat_template"];
    t.name = "chat_template of " + config_file.string();
    if (ct.is_string()) {
      t.jinja = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const auto& entry : ct) {
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
            entry["template"].is_string())
          t.jinja = entry["template"].get<std::string>();
      }
      IFT_CHECK(!t.jinja.empty(), config_file.string(), ": chat_template is a list without a \"default\" entry");
      t.name += " (default)";
    } else {
      fail(config_file.string(), ": chat_template must be a string or a list of {name, template}");
    }
  } else if (fs::is_regular_file(dir / "chat_template.jinja")) {
    Template file = load_jinja_template_file(dir / "chat_template.jinja");
    t.name = file.name;
    t.jinja = std::move(file.jinja);
  } else {
    return std::nullopt;
  }
  return t;
}

Template resolve_template(const Template& t, const Tokenizer& tokenizer) {
  if (!t.auto_detect) return t;
  std::vector<std::filesystem::path> dirs;
  for (const auto& f : tokenizer.files()) {
    const auto d = std::filesystem::is_directory(f) ? f : f.parent_path();
    if (std::find(dirs.begin(), dirs.end(), d) == dirs.end()) dirs.push_back(d);
  }
  for (const auto& d : dirs) {
    if (auto found = model_chat_template(d.empty() ? "." : d)) return *found;
  }
  Template fallback = builtin_template("alpaca");
  fallback.name = "alpaca (auto: no chat_template beside " + tokenizer_description(tokenizer) + ")";
  return fallback;
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

EosMode parse_eos_mode(std::string_view name) {
  if (name == "all") return EosMode::all;
  if (name == "last") return EosMode::last;
  if (name == "none") return EosMode::none;
  fail("unknown train_on_eos mode '", name, "' (expected all, last or none)");
}

const char* eos_mode_name(EosMode m) {
  switch (m) {
    case EosMode::all: return "all";
    case EosMode::last: return "last";
    case EosMode::none: return "none";
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

ChatFormatter::ChatFormatter(const Template& tmpl, const Tokenizer& tokenizer)
    : tmpl_(resolve_template(tmpl, tokenizer)), tok_(tokenizer) {
  if (!tmpl_.jinja.empty()) {
    jinja_ = std::make_shared<const jinja::Template>(tmpl_.jinja, tmpl_.name);
    auto piece = [&](int32_t id) { return id >= 0 ? tok_.id_to_piece(id) : std::string(); };
    if (tmpl_.bos_token.empty()) tmpl_.bos_token = piece(tok_.bos_id());
    if (tmpl_.eos_token.empty()) tmpl_.eos_token = piece(tok_.eos_id());
    return;
  }
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

Sample ChatFormatter::render(const Conversation& c, MaskMode mask, EosMode eos) const {
  if (jinja_) return render_jinja(c, mask, eos);
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
      const bool eos_trained =
          all || (trained && (eos == EosMode::all || (eos == EosMode::last && i == last_assistant)));
      emit(assistant_prefix_, all);
      b.text(t.text, trained);
      emit(assistant_suffix_, eos_trained);
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
  if (jinja_) {  // no mask is needed, so a template whose mask cannot be found still prompts
    Sample s = render_jinja(c, MaskMode::all, EosMode::all);
    std::fill(s.trained.begin(), s.trained.end(), 0);
    return s;
  }
  return render(c, MaskMode::outputs);
}

}  // namespace ift

// ---- Jinja templates ------------------------------------------------------------------------

namespace ift {

namespace {

// The messages list a chat template sees; an Alpaca input joins its instruction after a blank line.
jinja::List to_messages(const Conversation& c, size_t turns) {
  auto message = [](const char* role, const std::string& content) {
    jinja::Dict m;
    m.set("role", jinja::Value(role));
    m.set("content", jinja::Value(content));
    return jinja::Value(std::move(m));
  };
  jinja::List out;
  if (!c.system.empty()) out.push_back(message("system", c.system));
  for (size_t i = 0; i < turns; ++i) {
    const Turn& t = c.turns[i];
    out.push_back(message(t.role == Role::user ? "user" : "assistant",
                          t.input.empty() ? t.text : t.text + "\n\n" + t.input));
  }
  return out;
}

}  // namespace

ChatFormatter::Rendering ChatFormatter::render_text(const Conversation& c, MaskMode mask, EosMode eos) const {
  IFT_CHECK(jinja_, "template '", tmpl_.name, "' is not a Jinja template");
  const std::string where = c.where.empty() ? std::string("conversation") : c.where;
  auto render = [&](size_t turns, bool generation_prompt) {
    jinja::Dict ctx;
    ctx.set("messages", jinja::Value(to_messages(c, turns)));
    ctx.set("add_generation_prompt", jinja::Value(generation_prompt));
    ctx.set("bos_token", jinja::Value(tmpl_.bos_token));
    ctx.set("eos_token", jinja::Value(tmpl_.eos_token));
    try {
      return jinja_->render(ctx);
    } catch (const Error& e) {
      fail(where, ": ", e.what());
    }
  };
  const bool prompt = !c.turns.empty() && c.turns.back().role == Role::user;
  jinja::Rendered full = render(c.turns.size(), prompt);
  Rendering out;
  out.text = std::move(full.text);
  const std::string& text = out.text;
  if (mask == MaskMode::all) {
    out.spans.emplace_back(0, text.size());
    return out;
  }
  std::vector<size_t> content_ends;  // per span: where the turn's text ends and its end of turn begins
  // Where the stripped text of assistant turn `k` ends inside [begin, end); npos when it is not there.
  auto content_end = [&](size_t k, size_t begin, size_t end) {
    const std::string content = jinja::py_strip(c.turns[k].text);
    const size_t at = content.empty() ? std::string::npos : text.find(content, begin);
    return at != std::string::npos && at + content.size() <= end ? at + content.size() : std::string::npos;
  };
  if (jinja_->has_generation()) {
    size_t k = 0;
    for (const auto& s : full.generation) {
      if (s.second <= s.first) continue;
      while (k < c.turns.size() && c.turns[k].role != Role::assistant) ++k;
      out.spans.push_back(s);
      content_ends.push_back(k < c.turns.size() ? content_end(k, s.first, s.second) : std::string::npos);
      ++k;
    }
    IFT_CHECK(!out.spans.empty() || prompt, where, ": template '", tmpl_.name,
              "' has {% generation %} blocks but none produced text for this conversation");
  } else {
    size_t previous_end = 0;
    std::optional<Tokenizer::Encoding> full_tokens;  // tokenised only when a rendering diverges
    for (size_t k = 0; k < c.turns.size(); ++k) {
      if (c.turns[k].role != Role::assistant) continue;
      const std::string before = render(k, true).text;
      IFT_CHECK(text.compare(0, before.size(), before) == 0, where, ": template '", tmpl_.name,
                "' does not render conversations as prefixes of each other (the prompt of assistant turn ",
                k / 2 + 1, " is not the start of the whole conversation), so its loss mask cannot be found; "
                "add {% generation %} blocks to the template, or use mask: all");
      const std::string through = render(k + 1, false).text;
      size_t end = 0;
      while (end < text.size() && end < through.size() && text[end] == through[end]) ++end;
      if (end < through.size()) {
        // The rendering through turn k goes on differently (Phi-3 ends a conversation with EOS): the
        // turn ends with the last token both renderings agree on, never inside a special token.
        if (!full_tokens) full_tokens = tok_.encode_with_offsets(text, /*parse_special=*/true);
        const Tokenizer::Encoding q = tok_.encode_with_offsets(through, /*parse_special=*/true);
        size_t n = 0;
        while (n < q.ids.size() && n < full_tokens->ids.size() && q.ids[n] == full_tokens->ids[n] &&
               q.offsets[n] == full_tokens->offsets[n])
          ++n;
        end = std::min<size_t>(end, n > 0 ? full_tokens->offsets[n - 1].second : 0);
      }
      const size_t text_end = content_end(k, before.size(), end);
      IFT_CHECK(text_end != std::string::npos, where, ": template '", tmpl_.name,
                "' does not render assistant turn ", k / 2 + 1, "'s text where the rendering of the conversation "
                "through it differs from the whole, so its loss mask cannot be found; add {% generation %} blocks "
                "to the template, or use mask: all");
      // The end-of-turn text after the content, without the whitespace that separates turns.
      size_t eot_end = end;
      while (eot_end > text_end && std::isspace(static_cast<unsigned char>(text[eot_end - 1]))) --eot_end;
      if (eot_end > text_end) end = eot_end;
      content_ends.push_back(text_end);
      IFT_CHECK(before.size() >= previous_end, where, ": template '", tmpl_.name, "' renders assistant turn ",
                k / 2 + 1, " overlapping the one before");
      out.spans.emplace_back(before.size(), end);
      previous_end = end;
    }
  }
  if (mask == MaskMode::last && !out.spans.empty()) {
    out.spans.erase(out.spans.begin(), out.spans.end() - 1);
    content_ends.erase(content_ends.begin(), content_ends.end() - 1);
  }
  for (size_t i = 0; i < out.spans.size(); ++i) {
    if (eos == EosMode::all || (eos == EosMode::last && i + 1 == out.spans.size())) continue;
    IFT_CHECK(content_ends[i] != std::string::npos, where, ": template '", tmpl_.name,
              "': cannot find assistant turn ", i + 1, "'s text in its {% generation %} block to leave its end of "
              "turn untrained (train_on_eos ", eos_mode_name(eos), ")");
    out.spans[i].second = content_ends[i];
  }
  return out;
}

Sample ChatFormatter::render_jinja(const Conversation& c, MaskMode mask, EosMode eos) const {
  const Rendering r = render_text(c, mask, eos);
  Tokenizer::Encoding enc = tok_.encode_with_offsets(r.text, /*parse_special=*/true);
  Sample s;
  s.tokens = std::move(enc.ids);
  s.trained.assign(s.tokens.size(), 0);
  // A token is trained when its bytes overlap a span (an empty range: when it lies inside one), as
  // transformers marks the tokens from char_to_token(begin) to char_to_token(end - 1).
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    const auto [b, e] = enc.offsets[i];
    for (const auto& [sb, se] : r.spans) {
      if (b == e ? (b >= sb && b < se) : (b < se && e > sb)) {
        s.trained[i] = 1;
        break;
      }
    }
  }
  if (!s.trained.empty()) s.trained[0] = 0;  // the first token has nothing to be predicted from
  return s;
}

}  // namespace ift
