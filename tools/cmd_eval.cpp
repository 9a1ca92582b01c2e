// `ift eval`: a model's mean loss and perplexity over a prepared dataset (--data), or its
// instruction following scored by exact match on task examples (--tasks).
#include <cmath>
#include <cstdio>

#include "data/packed_file.h"
#include "engine/checkpoint.h"
#include "engine/base/error.h"
#include "engine/base/io.h"
#include "engine/train/progress.h"
#include "engine/train/task_eval.h"
#include "engine/train/trainer.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace {

template <class B>
int eval_loss(const cli::Parser& p, Model<B>& model, const Tokenizer& tok) {
  std::filesystem::path data(p.str("--data"));
  if (std::filesystem::is_directory(data)) data /= "train.pack";
  const PackedFile file(data);
  IFT_CHECK(file.header().tokenizer_hash == tokenizer_hash(tok), data.string(),
            ": prepared with another tokenizer (", file.header().tokenizer_id, ") than the model's");
  const EvalResult r = evaluate(model, file, static_cast<int>(p.integer("--batch")), 0);
  std::printf("%s: loss %.4f, perplexity %.3f over %lld trained tokens\n", data.c_str(), r.loss, std::exp(r.loss),
              static_cast<long long>(r.trained_tokens));
  if (p.given("--out"))
    write_text_atomically(p.str("--out"), nlohmann::json{{"loss", r.loss}, {"perplexity", std::exp(r.loss)},
                                                         {"trained_tokens", r.trained_tokens}}
                                                  .dump(2) + "\n");
  return 0;
}

template <class B>
int eval_tasks(const cli::Parser& p, const Model<B>& model, const Tokenizer& tok) {
  const std::vector<TaskExample> examples = read_task_jsonl(p.str("--tasks"));
  IFT_CHECK(!examples.empty(), p.str("--tasks"), ": no examples");
  const ChatFormatter formatter(find_template(p.str("--template")), tok);
  const int max_new = static_cast<int>(p.integer("--max-new-tokens"));
  Progress progress("eval", "ex");
  const TaskEvalReport r = score_tasks(
      examples, [&](const TaskExample& e) { return greedy_answer(model, tok, formatter, e, max_new); },
      [&](size_t i) { progress.update(int64_t(i) + 1, int64_t(examples.size()), int64_t(i) + 1); });
  progress.finish();

  const int shown = static_cast<int>(p.integer("--examples"));
  for (const TaskScore& s : r.tasks) {
    int k = 0;
    for (size_t i = 0; i < examples.size() && k < shown; ++i) {
      if (examples[i].task != s.task) continue;
      ++k;
      std::printf("[%s] %s %s%s\n  -> %s  (%s)\n", s.task.c_str(), examples[i].instruction.c_str(),
                  examples[i].input.empty() ? "" : "| ", examples[i].input.c_str(), r.answers[i].c_str(),
                  r.correct[i] ? "correct" : ("expected: " + examples[i].output).c_str());
    }
  }
  std::printf("\n%-12s %8s %8s\n", "task", "correct", "exact");
  for (const TaskScore& s : r.tasks)
    std::printf("%-12s %4lld/%-4lld %7.1f%%\n", s.task.c_str(), static_cast<long long>(s.correct),
                static_cast<long long>(s.total), 100 * s.accuracy());
  std::printf("%-12s %4lld/%-4lld %7.1f%%\n", "overall", static_cast<long long>(r.overall.correct),
              static_cast<long long>(r.overall.total), 100 * r.overall.accuracy());
  if (p.given("--out")) write_text_atomically(p.str("--out"), r.to_json(examples, 5).dump(2) + "\n");
  return 0;
}

}  // namespace

int eval(Args args) {
  cli::Parser p("ift eval", "Evaluate a model: loss and perplexity on prepared data (--data), or exact match on\n"
                            "instruction tasks (--tasks FILE.jsonl with instruction, input, output, task).");
  p.option("--model", "DIR", "model directory, or a training run (its newest checkpoint)", cli::required);
  p.option("--tokenizer", "PATH", "", "tokenizer (default: the one in the model directory)");
  p.option("--data", "DIR|FILE.pack", "", "a prepared dataset (ift prepare) to measure the loss on");
  p.option("--tasks", "FILE.jsonl", "", "task examples to answer greedily and score by exact match");
  p.option("--template", "NAME|FILE.yaml", "alpaca", "chat template (--tasks)");
  p.option("--max-new-tokens", "N", "64", "answer length limit (--tasks)");
  p.option("--examples", "N", "2", "examples shown per task (--tasks)");
  p.option("--batch", "B", "4", "rows per forward pass (--data)");
  p.option("--out", "FILE.json", "", "also write the results as JSON");
  p.option("--backend", "cpu|emu|cuda", "cpu", "where the model runs (decoding included)");
  p.option("--precision", "fp32|bf16", "fp32", "weights and activations (bf16: emu and cuda)");
  p.option("--adapter", "DIR", "", "a PEFT LoRA adapter (or a LoRA run) run unmerged on the --model base");
  if (!p.parse(args)) return 0;
  IFT_CHECK(p.given("--data") != p.given("--tasks"), "give exactly one of --data and --tasks");
  const std::filesystem::path dir = resolve_model_dir(p.str("--model"));
  const auto tok = load_tokenizer(p.str("--tokenizer").empty() ? dir : std::filesystem::path(p.str("--tokenizer")));
  return with_backend(parse_backend(p.str("--backend")), parse_precision(p.str("--precision")), [&]<class B>() {
    Model<B> model = load_model<B>(dir, {}, p.str("--adapter"));
    return p.given("--data") ? eval_loss(p, model, *tok) : eval_tasks(p, model, *tok);
  });
}

}  // namespace ift::cmd
