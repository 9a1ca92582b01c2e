// The whole data preparation, as `ift prepare` runs it: read every file, render each conversation
// with the template and mask, deal with long samples, pack, write DIR/train.pack and
// DIR/report.json (and DIR/eval.pack with a validation split). Every sample that does not make it into the file is counted by reason.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/pack.h"
#include "data/reader.h"
#include "data/template.h"

namespace ift {

enum class OnLong {
  drop,      // leave the sample out (counted)
  truncate,  // keep its first seq_len tokens (counted; dropped if no trained token is left)
  error,     // throw "FILE:LINE: sample has N tokens, more than seq_len"
};
OnLong parse_on_long(std::string_view name);
const char* on_long_name(OnLong m);
OnBad parse_on_bad(std::string_view name);

struct PrepareOptions {
  std::vector<std::filesystem::path> data;
  Format format = Format::auto_detect;
  Template tmpl = builtin_template("alpaca");
  MaskMode mask = MaskMode::outputs;
  EosMode train_on_eos = EosMode::all;
  PackMode pack = PackMode::bfd;
  OnLong on_long = OnLong::drop;
  OnBad on_bad = OnBad::error;
  int32_t seq_len = 2048;
  uint64_t seed = 0;  // the bfd rows' order (not longest-first), the mixture's subsets, the split
  // A mixture: weights[i] (>= 0) for data[i]; empty = 1 each. Weight w keeps floor(w) copies of every
  // record of the file plus a seeded subset of round(frac(w) * records) more (0.5: half the
  // records, 2: each twice, 0: none).
  std::vector<double> weights;
  // Held out before the weights apply, per file: a seeded round(val_fraction * records) of its
  // records go to DIR/eval.pack (once each) instead of train.pack.
  double val_fraction = 0;
};

struct PrepareReport {
  int64_t samples_read = 0;   // records in the input files
  int64_t samples_kept = 0;   // samples in the packed file
  int64_t validation_samples = 0;  // samples in eval.pack (val_fraction > 0)
  std::map<std::string, int64_t> dropped;             // reason -> count: bad_input, too_long, no_trained_tokens
  std::map<std::string, int64_t> bad_input_by_reason; // invalid_json, missing_field, empty_output, ...
  int64_t truncated = 0;      // samples cut to seq_len and kept
  int64_t tokens = 0;         // real tokens in the rows
  int64_t trained_tokens = 0; // tokens that are targets
  int64_t rows = 0;
  int64_t row_tokens = 0;     // rows * seq_len
  double packing_efficiency = 0;  // tokens / row_tokens
  double seconds = 0;         // reading + tokenizing + packing + writing
  std::string template_name;  // the template used: "auto" resolved (the model's chat_template, or its fallback)
  std::string json(const PrepareOptions& o, const std::string& tokenizer) const;
};

// Progress: input bytes done, input bytes in all, tokens so far.
using PrepareProgress = std::function<void(int64_t bytes_done, int64_t bytes_total, int64_t tokens)>;

// The records of one file a mixture and a validation split keep, as indices into `n` records:
// (training, validation). Training holds floor(w) copies of every non-held-out record plus a seeded
// subset of round(frac(w) * kept) more, in record order; validation round(val_fraction * n) records.
// Deterministic in (seed, file_index).
std::pair<std::vector<int64_t>, std::vector<int64_t>> mixture_indices(int64_t n, double weight, double val_fraction,
                                                                      uint64_t seed, int file_index);

// Renders one conversation into `out`, applying the long-sample policy; false (and counted into
// `report`) when the sample is left out.
bool render_sample(const Conversation& c, const ChatFormatter& formatter, const PrepareOptions& options,
                   PrepareReport& report, Sample& out);
// Renders conversations to samples, applying the long-sample policy; counts into `report`.
std::vector<Sample> render_samples(std::span<const Conversation> conversations, const ChatFormatter& formatter,
                                   const PrepareOptions& options, PrepareReport& report);

// Runs everything and writes out_dir/train.pack and out_dir/report.json (out_dir is created).
PrepareReport prepare_dataset(const PrepareOptions& options, const Tokenizer& tokenizer,
                              const std::filesystem::path& out_dir, const PrepareProgress& progress = {});

}  // namespace ift
