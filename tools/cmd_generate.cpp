// `ift generate` and `ift chat`: a model directory (or a run's newest checkpoint) answering prompts
// rendered with a chat template, streamed token by token.
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>

#include "data/template.h"
#include "engine/checkpoint.h"
#include "engine/base/error.h"
#include "engine/generate.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace {

void declare_sampling(cli::Parser& p) {
  p.option("--model", "DIR", "model directory, or a training run (its newest checkpoint)", cli::required);
  p.option("--tokenizer", "PATH", "", "tokenizer (default: the one in the model directory)");
  p.option("--template", "NAME|FILE.yaml", "alpaca", "chat template the model was trained with");
  p.option("--max-new-tokens", "N", "256", "tokens to generate at most");
  p.option("--temperature", "T", "0", "sampling temperature; 0 is greedy");
  p.option("--top-k", "K", "0", "sample among the K most likely tokens; 0: all");
  p.option("--top-p", "P", "1", "sample among the smallest set of tokens with probability P");
  p.option("--seed", "S", "0", "sampling seed");
  p.option("--backend", "cpu|emu|cuda", "cpu", "where the model runs (KV-cache decoding on that backend)");
  p.option("--precision", "fp32|bf16", "fp32", "weights and activations (bf16: emu and cuda)");
  p.option("--adapter", "DIR", "", "a PEFT LoRA adapter (or a LoRA run) run unmerged on the --model base");
}

// A model of whichever backend --backend names, behind one generate call.
using Generator = std::function<std::vector<int32_t>(std::span<const int32_t>, const SamplingOptions&,
                                                     const std::function<void(int32_t)>&)>;

Generator open_generator(const std::filesystem::path& dir, const cli::Parser& p) {
  return with_backend(parse_backend(p.str("--backend")), parse_precision(p.str("--precision")), [&]<class B>() {
    auto model = std::make_shared<Model<B>>(load_model<B>(dir, {}, p.str("--adapter")));
    return Generator([model](std::span<const int32_t> prompt, const SamplingOptions& o,
                             const std::function<void(int32_t)>& on_token) {
      return ift::generate(*model, prompt, o, on_token);
    });
  });
}

struct Session {
  Generator model;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<ChatFormatter> formatter;
  SamplingOptions sampling;
};

Session open_session(const cli::Parser& p) {
  const std::filesystem::path dir = resolve_model_dir(p.str("--model"));
  Session s{open_generator(dir, p), load_tokenizer(p.str("--tokenizer").empty() ? dir : std::filesystem::path(p.str("--tokenizer"))), nullptr, {}};
  s.formatter = std::make_unique<ChatFormatter>(find_template(p.str("--template")), *s.tok);
  s.sampling.max_new_tokens = static_cast<int>(p.integer("--max-new-tokens"));
  s.sampling.temperature = static_cast<float>(p.real("--temperature"));
  s.sampling.top_k = static_cast<int>(p.integer("--top-k"));
  s.sampling.top_p = static_cast<float>(p.real("--top-p"));
  s.sampling.seed = static_cast<uint64_t>(p.integer("--seed"));
  if (s.tok->eos_id() >= 0) s.sampling.stop_ids = {s.tok->eos_id()};
  return s;
}

// Generates the assistant's reply to `conv`, printing text as it is decided. Text is printed as
// the difference of successive decodes, so multi-token characters and sentencepiece's leading
// spaces come out right.
std::string reply(Session& s, const Conversation& conv) {
  const Sample prompt = s.formatter->render_prompt(conv);
  std::vector<int32_t> ids;
  std::string shown;
  s.model(prompt.tokens, s.sampling, [&](int32_t id) {
    if (!s.sampling.stop_ids.empty() && id == s.sampling.stop_ids[0]) return;
    ids.push_back(id);
    const std::string text = s.tok->decode(ids);
    if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
      std::fwrite(text.data() + shown.size(), 1, text.size() - shown.size(), stdout);
      std::fflush(stdout);
    }
    shown = text;
  });
  std::fputc('\n', stdout);
  return shown;
}

}  // namespace

int generate(Args args) {
  cli::Parser p("ift generate", "Answer one prompt with a model, rendered with the chat template.");
  declare_sampling(p);
  p.option("--prompt", "TEXT", "the instruction (user turn)", cli::required);
  p.option("--input", "TEXT", "", "an Alpaca-style input paired with the instruction");
  p.option("--system", "TEXT", "", "system prompt (default: the template's)");
  if (!p.parse(args)) return 0;
  Session s = open_session(p);
  Conversation conv;
  conv.system = p.str("--system");
  conv.turns.push_back({Role::user, p.str("--prompt"), p.str("--input")});
  reply(s, conv);
  return 0;
}

int chat(Args args) {
  cli::Parser p("ift chat", "Talk with a model, turn after turn (an empty line or end of input quits).");
  declare_sampling(p);
  p.option("--system", "TEXT", "", "system prompt (default: the template's)");
  if (!p.parse(args)) return 0;
  Session s = open_session(p);
  Conversation conv;
  conv.system = p.str("--system");
  for (std::string line;;) {
    std::fputs("> ", stdout);
    std::fflush(stdout);
    if (!std::getline(std::cin, line) || line.empty()) break;
    conv.turns.push_back({Role::user, line, ""});
    conv.turns.push_back({Role::assistant, reply(s, conv), ""});
  }
  return 0;
}

}  // namespace ift::cmd
