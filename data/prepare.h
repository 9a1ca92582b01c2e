// The whole data preparation, as `ift prepare` runs it: read every file, render each conversation
// with the template and mask, deal with long samples, pack, write DIR/train.pack and
// DIR/report.json. Every sample that does not make it into the file is counted by reason.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
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
  uint64_t seed = 0;  // bfd only: the rows are written in this seeded order, not longest-first
};

struct PrepareReport {
  int64_t samples_read = 0;   // records in the input files
  int64_t samples_kept = 0;   // samples in the packed file
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
