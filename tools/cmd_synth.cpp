// `ift synth`: the synthetic instruction tasks of the demo (data/synthetic.h), written as
// Alpaca-style JSONL: train.jsonl (training phrasings), eval_tasks.jsonl (held-out phrasings only,
// for `ift eval --tasks`), and corpus.txt (the training examples as rendered text, for
// `ift tokenizer train`).
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "data/synthetic.h"
#include "data/template.h"
#include "engine/base/error.h"
#include "engine/base/io.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace {

// "reverse=2,uppercase=2" -> {("reverse", 2), ("uppercase", 2)}; make_synthetic checks the names.
std::vector<std::pair<std::string, int>> parse_mix(const std::string& text) {
  std::vector<std::pair<std::string, int>> mix;
  for (size_t at = 0; at < text.size();) {
    const size_t end = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, end - at);
    const size_t eq = item.find('=');
    IFT_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < item.size() && item.size() - eq <= 7 &&
                  item.find_first_not_of("0123456789", eq + 1) == std::string::npos,
              "ift synth --mix: expected TASK=WEIGHT (a whole number below 10^6), got '", item, "'");
    mix.emplace_back(item.substr(0, eq), std::stoi(item.substr(eq + 1)));
    at = end + 1;
  }
  return mix;
}

}  // namespace

int synth(Args args) {
  cli::Parser p("ift synth", "Write the synthetic instruction tasks (reverse, uppercase, sort, add, count, extract).\n"
                             "A quarter of each task's instruction phrasings is held out of train.jsonl and used\n"
                             "only in eval_tasks.jsonl.");
  p.option("--out", "DIR", "output directory", cli::required);
  p.option("--train", "N", "20000", "training examples");
  p.option("--eval", "N", "300", "evaluation examples (held-out phrasings)");
  p.option("--seed", "S", "0", "generator seed");
  p.option("--template", "NAME|FILE.yaml", "alpaca", "template corpus.txt is rendered with");
  p.option("--tasks", "A,B,...", "", "the task families (default: the six above; also: max, the largest number)");
  p.option("--mix", "TASK=W,...", "", "relative share of tasks in train.jsonl (unnamed tasks: 1; eval stays even)");
  if (!p.parse(args)) return 0;
  SynthOptions o;
  o.train = p.integer("--train");
  o.eval = p.integer("--eval");
  o.seed = static_cast<uint64_t>(p.integer("--seed"));
  for (std::string rest = p.str("--tasks"); !rest.empty();) {
    const size_t comma = rest.find(',');
    if (comma > 0) o.tasks.push_back(rest.substr(0, comma));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
  }
  o.mix = parse_mix(p.str("--mix"));
  const SynthSet s = make_synthetic(o);
  const std::filesystem::path out(p.str("--out"));
  std::filesystem::create_directories(out);
  write_task_jsonl(out / "train.jsonl", s.train);
  write_task_jsonl(out / "eval_tasks.jsonl", s.eval);
  write_text_atomically(out / "corpus.txt", tokenizer_corpus(s.train, find_template(p.str("--template"))));
  int held = 0, all = 0;
  const std::vector<std::string> tasks = o.tasks.empty() ? synthetic_task_names() : o.tasks;
  for (const std::string& t : tasks)
    for (const Phrasing& ph : synthetic_phrasings(t)) held += ph.held_out, ++all;
  std::printf("wrote %s: %zu training and %zu evaluation examples over %zu tasks; %d of %d phrasings held out\n",
              out.c_str(), s.train.size(), s.eval.size(), tasks.size(), held, all);
  return 0;
}

}  // namespace ift::cmd
