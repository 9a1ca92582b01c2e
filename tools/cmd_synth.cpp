// `ift synth`: the synthetic instruction tasks of the demo (data/synthetic.h), written as
// Alpaca-style JSONL: train.jsonl (training phrasings), eval_tasks.jsonl (held-out phrasings only,
// for `ift eval --tasks`), and corpus.txt (the training examples as rendered text, for
// `ift tokenizer train`).
#include <cstdio>
#include <filesystem>

#include "data/synthetic.h"
#include "data/template.h"
#include "engine/base/io.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

int synth(Args args) {
  cli::Parser p("ift synth", "Write the synthetic instruction tasks (reverse, uppercase, sort, add, count, extract).\n"
                             "A quarter of each task's instruction phrasings is held out of train.jsonl and used\n"
                             "only in eval_tasks.jsonl.");
  p.option("--out", "DIR", "output directory", cli::required);
  p.option("--train", "N", "20000", "training examples");
  p.option("--eval", "N", "300", "evaluation examples (held-out phrasings)");
  p.option("--seed", "S", "0", "generator seed");
  p.option("--template", "NAME|FILE.yaml", "alpaca", "template corpus.txt is rendered with");
  if (!p.parse(args)) return 0;
  SynthOptions o;
  o.train = p.integer("--train");
  o.eval = p.integer("--eval");
  o.seed = static_cast<uint64_t>(p.integer("--seed"));
  const SynthSet s = make_synthetic(o);
  const std::filesystem::path out(p.str("--out"));
  std::filesystem::create_directories(out);
  write_task_jsonl(out / "train.jsonl", s.train);
  write_task_jsonl(out / "eval_tasks.jsonl", s.eval);
  write_text_atomically(out / "corpus.txt", tokenizer_corpus(s.train, find_template(p.str("--template"))));
  int held = 0, all = 0;
  for (const std::string& t : synthetic_task_names())
    for (const Phrasing& ph : synthetic_phrasings(t)) held += ph.held_out, ++all;
  std::printf("wrote %s: %zu training and %zu evaluation examples over %zu tasks; %d of %d phrasings held out\n",
              out.c_str(), s.train.size(), s.eval.size(), synthetic_task_names().size(), held, all);
  return 0;
}

}  // namespace ift::cmd
