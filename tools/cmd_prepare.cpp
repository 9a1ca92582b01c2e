// `ift prepare`: instruction data -> tokens with a chat template and loss mask -> packed rows in
// DIR/train.pack, with DIR/report.json saying what was kept, dropped (and why) and how well the
// rows are filled. See docs/data.md.
#include <cstdio>
#include <string>

#include "data/prepare.h"
#include "engine/base/error.h"
#include "engine/train/progress.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

int prepare(Args args) {
  cli::Parser p("ift prepare", "Tokenize instruction data with a chat template and pack it into training rows.");
  p.repeated("--data", "FILE", "input file: JSON array or JSONL (repeat for several files)");
  p.option("--format", "NAME", "auto", "record format: auto, alpaca, sharegpt, messages");
  p.option("--template", "NAME|FILE", "auto",
           "chat template: auto (the tokenizer directory's chat_template, else alpaca), alpaca, chatml, llama2,\n"
           "plain, a FILE.jinja (rendered and tokenised as transformers' apply_chat_template), or a FILE.yaml");
  p.option("--tokenizer", "PATH", "tokenizer .model, tokenizer.json, vocab.json, or a directory", cli::required);
  p.option("--seq-len", "N", "tokens per packed row", cli::required);
  p.option("--out", "DIR", "output directory (train.pack, report.json)", cli::required);
  p.option("--mask", "MODE", "outputs", "trained tokens: outputs (assistant turns + EOS), all, last (last turn)");
  p.option("--train-on-eos", "MODE", "all",
           "end of turn in the loss: all (every trained turn), last (the final turn only), none");
  p.option("--pack", "MODE", "bfd", "packing: bfd (best-fit decreasing), greedy (dataset order), none");
  p.option("--on-long", "POLICY", "drop", "samples longer than --seq-len: drop, truncate, error");
  p.option("--on-bad", "POLICY", "error", "malformed records: error (stop at FILE:LINE), skip (count)");
  p.option("--seed", "S", "0", "seed of the row order written by bfd, of the mixture's subsets and of the split");
  p.repeated("--weight", "W", "mixture weight of the --data file in the same position (one per file): 0.5 keeps\n"
             "a seeded half of its records, 2 each twice; default 1 each");
  p.option("--val-split", "F", "0", "fraction of each file's records held out into DIR/eval.pack (before weights)");
  if (!p.parse(args)) return 0;

  PrepareOptions o;
  for (const auto& f : p.all("--data")) o.data.emplace_back(f);
  IFT_CHECK(!o.data.empty(), "--data FILE is required");
  o.format = parse_format(p.str("--format"));
  o.tmpl = find_template(p.str("--template"));
  o.mask = parse_mask_mode(p.str("--mask"));
  o.train_on_eos = parse_eos_mode(p.str("--train-on-eos"));
  o.pack = parse_pack_mode(p.str("--pack"));
  o.on_long = parse_on_long(p.str("--on-long"));
  o.on_bad = parse_on_bad(p.str("--on-bad"));
  const int64_t seq_len = p.integer("--seq-len");
  IFT_CHECK(seq_len > 0 && seq_len <= (1 << 24), "--seq-len must be in [1, 16777216], got ", seq_len);
  o.seq_len = static_cast<int32_t>(seq_len);
  o.seed = static_cast<uint64_t>(p.integer("--seed"));
  for (const auto& w : p.all("--weight")) {
    try {
      o.weights.push_back(std::stod(w));
    } catch (const std::exception&) {
      fail("--weight '", w, "' is not a number");
    }
  }
  IFT_CHECK(o.weights.empty() || o.weights.size() == o.data.size(), "--weight: ", o.weights.size(), " weights for ",
            o.data.size(), " --data files (give one per file, in the same order)");
  o.val_fraction = p.real("--val-split");
  IFT_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "--val-split must be in [0, 1), got ", o.val_fraction);

  const auto tokenizer = load_tokenizer(p.str("--tokenizer"));
  PrepareReport r;
  {
    Progress bar("prepare", "tok");
    r = prepare_dataset(o, *tokenizer, p.str("--out"),
                        [&](int64_t done, int64_t total, int64_t tokens) { bar.update(done, total, tokens); });
  }
  std::fprintf(stderr, "read %lld samples, kept %lld", static_cast<long long>(r.samples_read),
               static_cast<long long>(r.samples_kept));
  for (const auto& [reason, n] : r.dropped) std::fprintf(stderr, ", dropped %lld %s", static_cast<long long>(n), reason.c_str());
  if (r.truncated) std::fprintf(stderr, ", truncated %lld", static_cast<long long>(r.truncated));
  if (r.validation_samples)
    std::fprintf(stderr, ", held out %lld for validation (eval.pack)", static_cast<long long>(r.validation_samples));
  std::fprintf(stderr, "\n%lld tokens (%lld trained) in %lld rows of %d: packing efficiency %.2f%%\n",
               static_cast<long long>(r.tokens), static_cast<long long>(r.trained_tokens),
               static_cast<long long>(r.rows), o.seq_len, 100.0 * r.packing_efficiency);
  std::fprintf(stderr, "wrote %s/train.pack and %s/report.json\n", p.str("--out").c_str(), p.str("--out").c_str());
  return 0;
}

}  // namespace ift::cmd
