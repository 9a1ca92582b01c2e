#include "data/prepare.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/packed_file.h"
#include "engine/base/error.h"
#include "engine/base/io.h"

namespace ift {

OnLong parse_on_long(std::string_view name) {
  if (name == "drop") return OnLong::drop;
  if (name == "truncate") return OnLong::truncate;
  if (name == "error") return OnLong::error;
  fail("unknown --on-long policy '", name, "' (expected drop, truncate or error)");
}

const char* on_long_name(OnLong m) {
  switch (m) {
    case OnLong::drop: return "drop";
    case OnLong::truncate: return "truncate";
    case OnLong::error: return "error";
  }
  return "?";
}

OnBad parse_on_bad(std::string_view name) {
  if (name == "error") return OnBad::error;
  if (name == "skip") return OnBad::skip;
  fail("unknown --on-bad policy '", name, "' (expected error or skip)");
}

std::string PrepareReport::json(const PrepareOptions& o, const std::string& tokenizer) const {
  nlohmann::ordered_json j;
  std::vector<std::string> files;
  for (const auto& f : o.data) files.push_back(f.string());
  j["files"] = files;
  j["format"] = format_name(o.format);
  j["template"] = template_name.empty() ? o.tmpl.name : template_name;
  j["mask"] = mask_mode_name(o.mask);
  j["train_on_eos"] = eos_mode_name(o.train_on_eos);
  j["pack"] = pack_mode_name(o.pack);
  j["seq_len"] = o.seq_len;
  j["on_long"] = on_long_name(o.on_long);
  j["on_bad"] = o.on_bad == OnBad::error ? "error" : "skip";
  j["seed"] = o.seed;
  if (!o.weights.empty()) j["weights"] = o.weights;
  j["val_fraction"] = o.val_fraction;
  j["validation_samples"] = validation_samples;
  j["tokenizer"] = tokenizer;
  j["samples_read"] = samples_read;
  j["samples_kept"] = samples_kept;
  j["dropped"] = dropped;
  j["bad_input_by_reason"] = bad_input_by_reason;
  j["truncated"] = truncated;
  j["tokens"] = tokens;
  j["trained_tokens"] = trained_tokens;
  j["rows"] = rows;
  j["row_tokens"] = row_tokens;
  j["packing_efficiency"] = packing_efficiency;
  j["seconds"] = seconds;
  j["tokens_per_second"] = seconds > 0 ? tokens / seconds : 0.0;
  return j.dump(2);
}

bool render_sample(const Conversation& c, const ChatFormatter& formatter, const PrepareOptions& o,
                   PrepareReport& report, Sample& out) {
  Sample s = formatter.render(c, o.mask, o.train_on_eos);
  const auto n = static_cast<int64_t>(s.tokens.size());
  if (n > o.seq_len) {
    if (o.on_long == OnLong::error)
      fail(c.where, ": sample has ", n, " tokens, more than --seq-len ", o.seq_len,
           " (--on-long drop|truncate to go on without it)");
    if (o.on_long == OnLong::drop) {
      ++report.dropped["too_long"];
      return false;
    }
    s.tokens.resize(o.seq_len);
    s.trained.resize(o.seq_len);
    ++report.truncated;
  }
  bool any_trained = false;
  for (uint8_t t : s.trained) any_trained |= t != 0;
  if (!any_trained) {  // e.g. truncation cut the whole output away: nothing to learn
    ++report.dropped["no_trained_tokens"];
    return false;
  }
  s.tokens.shrink_to_fit();  // kept until the file is written: no slack per sample
  s.trained.shrink_to_fit();
  out = std::move(s);
  return true;
}

std::vector<Sample> render_samples(std::span<const Conversation> conversations, const ChatFormatter& formatter,
                                   const PrepareOptions& o, PrepareReport& report) {
  std::vector<Sample> out;
  out.reserve(conversations.size());
  Sample s;
  for (const Conversation& c : conversations)
    if (render_sample(c, formatter, o, report, s)) out.push_back(std::move(s));
  return out;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> mixture_indices(int64_t n, double weight, double val_fraction,
                                                                      uint64_t seed, int file_index) {
  IFT_CHECK(weight >= 0 && std::isfinite(weight), "mixture weight ", weight, " of file ", file_index, " must be >= 0");
  IFT_CHECK(val_fraction >= 0 && val_fraction < 1, "validation fraction ", val_fraction, " must be in [0, 1)");
  // Two seeded orders per file, apart from the rows' order (epoch 0): epoch 1 picks the held-out
  // records, epoch 2 the fractional copies.
  const uint64_t file_seed = seed ^ (0x9e3779b97f4a7c15ull * uint64_t(file_index + 1));
  std::vector<uint8_t> held(size_t(n), 0);
  std::vector<int64_t> validation;
  const auto n_val = static_cast<int64_t>(std::llround(val_fraction * double(n)));
  if (n_val > 0) {
    const std::vector<int64_t> order = epoch_order(n, file_seed, 1);
    for (int64_t i = 0; i < n_val; ++i) held[order[i]] = 1;
    for (int64_t i = 0; i < n; ++i)
      if (held[i]) validation.push_back(i);
  }
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < n; ++i)
    if (!held[i]) kept.push_back(i);
  const double whole = std::floor(weight);
  std::vector<int64_t> training;
  for (int64_t copy = 0; copy < static_cast<int64_t>(whole); ++copy) training.insert(training.end(), kept.begin(), kept.end());
  const auto extra = static_cast<int64_t>(std::llround((weight - whole) * double(kept.size())));
  if (extra > 0) {
    std::vector<int64_t> order = epoch_order(static_cast<int64_t>(kept.size()), file_seed, 2);
    order.resize(size_t(extra));
    std::sort(order.begin(), order.end());
    for (int64_t k : order) training.push_back(kept[k]);
  }
  return {std::move(training), std::move(validation)};
}

PrepareReport prepare_dataset(const PrepareOptions& o, const Tokenizer& tokenizer, const std::filesystem::path& out_dir,
                              const PrepareProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  IFT_CHECK(o.seq_len > 0, "--seq-len must be positive, got ", o.seq_len);
  IFT_CHECK(!o.data.empty(), "no input files (--data FILE)");
  IFT_CHECK(o.weights.empty() || o.weights.size() == o.data.size(), o.weights.size(), " mixture weights for ",
            o.data.size(), " files: give one weight per file");
  const ChatFormatter formatter(o.tmpl, tokenizer);  // checks EOS and special tokens before any reading

  int64_t bytes_total = 0, bytes_done = 0;
  for (const auto& f : o.data) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(f, ec);
    IFT_CHECK(!ec, f.string(), ": cannot read (", ec.message(), ")");
    bytes_total += static_cast<int64_t>(size);
  }

  PrepareReport report;
  report.template_name = formatter.tmpl().name;
  // Streaming: each record is rendered as soon as it is read, and only its tokens are kept (the
  // packed file's content); the text of a file is never held in memory as a whole. A mixture weight
  // or a validation split picks from a file's rendered records once the file is read (drops are
  // counted once per record read, copies are not counted again).
  const bool mixing = !o.weights.empty() || o.val_fraction > 0;
  std::vector<Sample> samples, validation;
  for (size_t file = 0; file < o.data.size(); ++file) {
    const auto& f = o.data[file];
    ReadStats stats;
    std::vector<Sample> rendered;  // mixing: every good record's sample, an empty one where it was dropped
    Sample s;
    for_each_conversation(
        f, o.format, o.on_bad, stats,
        [&](Conversation&& c) {
          const bool kept = render_sample(c, formatter, o, report, s);
          if (mixing) {
            rendered.push_back(kept ? std::move(s) : Sample{});
          } else if (kept) {
            report.tokens += static_cast<int64_t>(s.tokens.size());
            samples.push_back(std::move(s));
          }
        },
        [&](int64_t file_bytes_read) {
          if (progress) progress(bytes_done + file_bytes_read, bytes_total, report.tokens);
        });
    if (mixing) {
      const auto [train_idx, val_idx] = mixture_indices(static_cast<int64_t>(rendered.size()),
                                                        o.weights.empty() ? 1.0 : o.weights[file], o.val_fraction,
                                                        o.seed, static_cast<int>(file));
      for (int64_t i : val_idx)
        if (!rendered[i].tokens.empty()) validation.push_back(rendered[i]);
      for (int64_t i : train_idx)
        if (!rendered[i].tokens.empty()) {
          report.tokens += static_cast<int64_t>(rendered[i].tokens.size());
          samples.push_back(rendered[i]);
        }
    }
    report.samples_read += stats.records;
    if (stats.bad > 0) report.dropped["bad_input"] += stats.bad;
    for (const auto& [reason, n] : stats.bad_by_reason) report.bad_input_by_reason[reason] += n;
    bytes_done += static_cast<int64_t>(std::filesystem::file_size(f));
  }
  IFT_CHECK(!samples.empty(), "no sample left to write (", report.samples_read, " read; see the drop counts)");

  std::vector<int32_t> lengths;
  lengths.reserve(samples.size());
  for (const Sample& s : samples) {
    lengths.push_back(static_cast<int32_t>(s.tokens.size()));
    for (uint8_t t : s.trained) report.trained_tokens += t;
  }
  std::vector<std::vector<int32_t>> rows = pack_rows(lengths, o.seq_len, o.pack);
  if (o.pack == PackMode::bfd) {
    // bfd leaves the rows longest-first; write them in a seeded order instead.
    std::vector<std::vector<int32_t>> shuffled;
    shuffled.reserve(rows.size());
    for (int64_t r : epoch_order(static_cast<int64_t>(rows.size()), o.seed, 0)) shuffled.push_back(std::move(rows[r]));
    rows = std::move(shuffled);
  }

  report.samples_kept = static_cast<int64_t>(samples.size());
  report.rows = static_cast<int64_t>(rows.size());
  report.row_tokens = report.rows * o.seq_len;
  report.packing_efficiency = static_cast<double>(report.tokens) / static_cast<double>(report.row_tokens);

  PackedMeta meta;
  meta.seq_len = o.seq_len;
  meta.vocab_size = tokenizer.vocab_size();
  meta.pad_id = tokenizer.pad_id() >= 0 ? tokenizer.pad_id() : tokenizer.eos_id() >= 0 ? tokenizer.eos_id() : 0;
  meta.tokenizer_hash = tokenizer_hash(tokenizer);
  meta.tokenizer_id = tokenizer_description(tokenizer);
  std::filesystem::create_directories(out_dir);
  write_packed_file(out_dir / "train.pack", meta, rows, samples);
  if (o.val_fraction > 0) {
    IFT_CHECK(!validation.empty(), "the validation split (", o.val_fraction, ") holds no sample: too few records");
    std::vector<int32_t> val_lengths;
    for (const Sample& s : validation) val_lengths.push_back(static_cast<int32_t>(s.tokens.size()));
    write_packed_file(out_dir / "eval.pack", meta, pack_rows(val_lengths, o.seq_len, o.pack), validation);
    report.validation_samples = static_cast<int64_t>(validation.size());
  }

  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_text_atomically(out_dir / "report.json", report.json(o, meta.tokenizer_id) + "\n");
  return report;
}

}  // namespace ift
