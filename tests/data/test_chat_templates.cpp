// Parity with transformers' apply_chat_template on real templates (tests/fixtures/chat_templates,
// made by tools/golden/make_chat_templates.py): rendered bytes, token ids, the assistant mask, and
// the training text of every assistant turn; and `ift prepare` with `template: auto` on a model
// directory gives the same ids, one packed sample each.
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/packed_file.h"
#include "data/prepare.h"
#include "data/template.h"
#include "engine/base/error.h"
#include "tests/support.h"
#include "tokenizer/tokenizer.h"

using namespace ift;
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

const json& fixtures() {
  static const json j = [] {
    std::ifstream in(test::fixture("chat_templates/chat_templates.json"));
    REQUIRE(in);
    return json::parse(in);
  }();
  return j;
}

// gpt2/tokenizer.json with the fixture's added tokens appended (ids 50257, ...), as the script
// adds them: special, not normalized, no strip.
void write_gpt2_with_added(const fs::path& file) {
  std::ifstream in(test::fixture("tokenizers/gpt2/tokenizer.json"));
  REQUIRE(in);
  json tok = json::parse(in);
  int id = 50257;
  for (const auto& content : fixtures()["added_tokens"]) {
    tok["added_tokens"].push_back({{"id", id++},
                                   {"content", content},
                                   {"single_word", false},
                                   {"lstrip", false},
                                   {"rstrip", false},
                                   {"normalized", false},
                                   {"special", true}});
  }
  std::ofstream(file) << tok.dump();
}

// A model directory for template `name`: its tokenizer and a tokenizer_config.json holding the
// chat template, as a Hugging Face model directory has them.
fs::path model_dir(const std::string& name) {
  const json& t = fixtures()["templates"][name];
  const fs::path dir = test::temp_dir("chat-" + name);
  if (t["tokenizer"] == "gpt2") {
    write_gpt2_with_added(dir / "tokenizer.json");
  } else {
    fs::copy_file(test::fixture("tokenizers/llama2/tokenizer.model"), dir / "tokenizer.model");
  }
  std::ifstream src(test::fixture("chat_templates/" + name + ".jinja"), std::ios::binary);
  std::string jinja((std::istreambuf_iterator<char>(src)), std::istreambuf_iterator<char>());
  json config{{"chat_template", jinja}, {"bos_token", t["bos_token"]}, {"eos_token", t["eos_token"]}};
  if (t.contains("legacy")) config["legacy"] = t["legacy"];
  std::ofstream(dir / "tokenizer_config.json") << config.dump(2);
  return dir;
}

Conversation conversation(const json& messages, const std::string& where) {
  Conversation c;
  c.where = where;
  for (const auto& m : messages) {
    const std::string role = m["role"], content = m["content"];
    if (role == "system") c.system = content;
    else c.turns.push_back({role == "user" ? Role::user : Role::assistant, content, ""});
  }
  return c;
}

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

}  // namespace

TEST_CASE("chat templates: token ids, masks and trained text equal apply_chat_template's", "[template][jinja]") {
  const std::vector<std::string> required = {"llama3", "qwen2.5", "mistral", "gemma", "phi3", "zephyr", "chatml",
                                             "llama2", "chatml_generation"};
  for (const auto& name : required) REQUIRE(fixtures()["templates"].contains(name));
  for (const auto& [name, t] : fixtures()["templates"].items()) {
    const fs::path dir = model_dir(name);
    const auto tok = load_tokenizer(dir);
    const ChatFormatter f(find_template("auto"), *tok);
    INFO("template " << name << " (" << t["source"].get<std::string>() << ")");
    CHECK_THAT(f.tmpl().name, Catch::Contains("chat_template of"));
    int checked = 0;
    for (const auto& conv : t["conversations"]) {
      const std::string cname = conv["name"];
      INFO("conversation " << cname);
      const Conversation c = conversation(conv["messages"], name + "/" + cname);
      if (conv.contains("error")) {  // raise_exception in the template, passed on with the record
        CHECK_THROWS_WITH(f.render(c, MaskMode::outputs),
                          Catch::Contains(name + "/" + cname) && Catch::Contains(conv["error"].get<std::string>()));
        ++checked;
        continue;
      }
      const std::vector<int32_t> expected = ids_of(conv["ids"]);
      if (conv["add_generation_prompt"].get<bool>()) {
        const Sample s = f.render_prompt(c);
        CHECK(s.tokens == expected);
        CHECK(f.render_text(c, MaskMode::outputs).text == conv["text"].get<std::string>());
        ++checked;
        continue;
      }
      const ChatFormatter::Rendering r = f.render_text(c, MaskMode::outputs);
      CHECK(r.text == conv["text"].get<std::string>());
      const Sample s = f.render(c, MaskMode::outputs);
      if (conv.contains("known_difference")) {
        // Documented (tokenizer/sentencepiece.h): the same text, segmented otherwise.
        WARN(name << "/" << cname << ": " << conv["known_difference"].get<std::string>());
        CHECK(s.tokens == ids_of(conv["sentencepiece_ids"]));
        CHECK(tok->decode(s.tokens) == tok->decode(expected));
      } else {
        CHECK(s.tokens == expected);
      }
      // Every assistant turn is trained on its text plus the template's end of turn, nothing else.
      std::vector<std::string> spans;
      for (const auto& [b, e] : r.spans) spans.push_back(r.text.substr(b, e - b));
      CHECK(spans == conv["trained_text"].get<std::vector<std::string>>());
      if (conv.contains("assistant_masks")) {
        std::vector<uint8_t> mask = conv["assistant_masks"].get<std::vector<uint8_t>>();
        CHECK(s.trained == mask);
      }
      // The last trained token is the end of the conversation's last turn: the end-of-turn token
      // itself wherever the template ends turns with one.
      size_t last = 0;
      for (size_t i = 0; i < s.trained.size(); ++i)
        if (s.trained[i]) last = i;
      const std::string eot = conv["trained_text"].back().get<std::string>();
      for (const char* special : {"<|eot_id|>", "<|im_end|>", "</s>", "<end_of_turn>", "<|endoftext|>"}) {
        if (eot.ends_with(special)) CHECK(tok->id_to_piece(s.tokens[last]) == special);
      }
      // train_on_eos none: each span stops where the turn's text ends; last: only the final turn
      // keeps its end of turn.
      const auto r_none = f.render_text(c, MaskMode::outputs, EosMode::none);
      const auto r_eos_last = f.render_text(c, MaskMode::outputs, EosMode::last);
      REQUIRE(r_none.spans.size() == r.spans.size());
      REQUIRE(r_eos_last.spans.size() == r.spans.size());
      size_t turn = 0;
      for (size_t i = 0; i < r.spans.size(); ++i) {
        while (c.turns[turn].role != Role::assistant) ++turn;
        const std::string content = jinja::py_strip(c.turns[turn++].text);
        CHECK(r_none.spans[i].first == r.spans[i].first);
        CHECK(r_none.spans[i].second < r.spans[i].second);
        CHECK(r.text.substr(0, r_none.spans[i].second).ends_with(content));
        CHECK(r_eos_last.spans[i] == (i + 1 == r.spans.size() ? r.spans[i] : r_none.spans[i]));
      }
      const Sample no_eos = f.render(c, MaskMode::outputs, EosMode::none);
      CHECK(no_eos.tokens == s.tokens);
      CHECK(std::count(no_eos.trained.begin(), no_eos.trained.end(), 1) <
            std::count(s.trained.begin(), s.trained.end(), 1));
      // mask last: only the final turn; mask all: every token after the first.
      const Sample only_last = f.render(c, MaskMode::last);
      const ChatFormatter::Rendering r_last = f.render_text(c, MaskMode::last);
      REQUIRE(r_last.spans.size() == 1);
      CHECK(r_last.spans[0] == r.spans.back());
      int64_t n_last = 0, n_all = 0;
      for (uint8_t x : only_last.trained) n_last += x;
      for (uint8_t x : s.trained) n_all += x;
      CHECK(n_last > 0);
      CHECK((r.spans.size() == 1 ? n_last == n_all : n_last < n_all));
      const Sample all = f.render(c, MaskMode::all);
      CHECK(all.tokens == s.tokens);
      CHECK(std::count(all.trained.begin(), all.trained.end(), 1) == static_cast<long>(all.tokens.size()) - 1);
      ++checked;
    }
    CHECK(checked >= 4);
  }
}

TEST_CASE("chat templates: ift prepare with template auto packs exactly apply_chat_template's ids", "[template][prepare]") {
  for (const std::string name : {"llama3", "mistral", "qwen2.5"}) {
    INFO("template " << name);
    const fs::path dir = model_dir(name);
    const auto tok = load_tokenizer(dir);
    std::multiset<std::vector<int32_t>> expected;
    {
      std::ofstream out(dir / "data.jsonl");
      for (const auto& conv : fixtures()["templates"][name]["conversations"]) {
        if (conv["add_generation_prompt"].get<bool>() || conv.contains("error") || conv.contains("known_difference"))
          continue;
        out << json{{"messages", conv["messages"]}}.dump() << "\n";
        expected.insert(ids_of(conv["ids"]));
      }
    }
    PrepareOptions o;
    o.data = {dir / "data.jsonl"};
    o.tmpl = find_template("auto");
    o.seq_len = 1024;  // all samples in one row: packing must keep them apart
    const PrepareReport report = prepare_dataset(o, *tok, dir / "out");
    CHECK(report.samples_kept == static_cast<int64_t>(expected.size()));
    const PackedFile f(dir / "out" / "train.pack");
    CHECK(f.n_rows() == 1);
    // Each segment the loader cuts is one sample, positions restarting at 0, targets inside it.
    Loader loader(f, 1, 0);
    const Batch b = loader.next();
    std::multiset<std::vector<int32_t>> got;
    for (size_t s = 0; s + 1 < b.cu_seqlens.size(); ++s) {
      const int32_t begin = b.cu_seqlens[s], end = b.cu_seqlens[s + 1];
      CHECK(b.positions[begin] == 0);
      CHECK(b.targets[end - 1] == -1);  // the last token of a segment predicts nothing across it
      got.insert(std::vector<int32_t>(b.tokens.begin() + begin, b.tokens.begin() + end));
    }
    for (const auto& ids : expected) CHECK(got.count(ids) == 1);
    std::ifstream rj(dir / "out" / "report.json");
    CHECK_THAT(nlohmann::json::parse(rj)["template"].get<std::string>(), Catch::Contains("chat_template of"));
  }
}

TEST_CASE("chat templates: auto without a chat_template falls back to alpaca and says so - .jinja files load",
          "[template][jinja]") {
  const fs::path dir = test::temp_dir("chat-auto-none");
  fs::copy_file(test::fixture("tokenizers/llama2/tokenizer.model"), dir / "tokenizer.model");
  const auto tok = load_tokenizer(dir);
  const ChatFormatter f(find_template("auto"), *tok);
  CHECK_THAT(f.tmpl().name, Catch::StartsWith("alpaca (auto: no chat_template"));
  CHECK(f.tmpl().jinja.empty());

  const ChatFormatter g(find_template(test::fixture("chat_templates/chatml.jinja").string()), *tok);
  Conversation c;
  c.turns = {{Role::user, "hi", ""}, {Role::assistant, "yo", ""}};
  CHECK(g.render_text(c, MaskMode::outputs).text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n");
}

TEST_CASE("chat templates: a template whose renderings are not prefixes is an error, never a wrong mask",
          "[template][jinja]") {
  const fs::path dir = test::temp_dir("chat-nonprefix");
  fs::copy_file(test::fixture("tokenizers/llama2/tokenizer.model"), dir / "tokenizer.model");
  const auto tok = load_tokenizer(dir);
  auto write = [&](const std::string& jinja) {
    std::ofstream(dir / "t.jinja") << jinja;
    return find_template((dir / "t.jinja").string());
  };
  Conversation c;
  c.where = "data.jsonl:3";
  c.turns = {{Role::user, "q1", ""}, {Role::assistant, "a1", ""}, {Role::user, "q2", ""}, {Role::assistant, "a2", ""}};
  // Reasoning kept only on the last assistant turn (as some reasoning models' templates do): the
  // rendering through turn 1 differs from the whole conversation inside turn 1.
  const Template reasoning = write(
      "{% for m in messages %}{% if m.role == 'assistant' %}A:{% if loop.last %}<think>r</think>{% endif %}"
      "{{ m.content }}</s>{% else %}U:{{ m.content }}{% endif %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}");
  const ChatFormatter f(reasoning, *tok);
  CHECK_THROWS_WITH(f.render(c, MaskMode::outputs), Catch::Contains("data.jsonl:3") &&
                                                        Catch::Contains("assistant turn 1") &&
                                                        Catch::Contains("loss mask cannot be found"));
  // The explicit opt-in trains every token; the prompt still renders.
  CHECK(f.render(c, MaskMode::all).tokens.size() > 4);
  Conversation prompt = c;
  prompt.turns.pop_back();
  CHECK_NOTHROW(f.render_prompt(prompt));

  // A template that does not put the prompt first: the generation prompt differs from the rendering.
  const Template shifting = write(
      "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{% if add_generation_prompt %}[gen]{% endif %}");
  CHECK_THROWS_WITH(ChatFormatter(shifting, *tok).render(c, MaskMode::outputs),
                    Catch::Contains("not render conversations as prefixes"));

  // A template that never renders assistant text cannot give a mask either.
  const Template silent = write("{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}");
  CHECK_THROWS_WITH(ChatFormatter(silent, *tok).render(c, MaskMode::outputs), Catch::Contains("loss mask cannot be found"));
}
