#include "data/prepare.h"

#include <chrono>
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

PrepareReport prepare_dataset(const PrepareOptions& o, const Tokenizer& tokenizer, const std::filesystem::path& out_dir,
                              const PrepareProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  IFT_CHECK(o.seq_len > 0, "--seq-len must be positive, got ", o.seq_len);
  IFT_CHECK(!o.data.empty(), "no input files (--data FILE)");
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
  // packed file's content); the text of a file is never held in memory as a whole.
  std::vector<Sample> samples;
  for (const auto& f : o.data) {
    ReadStats stats;
    Sample s;
    for_each_conversation(
        f, o.format, o.on_bad, stats,
        [&](Conversation&& c) {
          if (!render_sample(c, formatter, o, report, s)) return;
          report.tokens += static_cast<int64_t>(s.tokens.size());
          samples.push_back(std::move(s));
        },
        [&](int64_t file_bytes_read) {
          if (progress) progress(bytes_done + file_bytes_read, bytes_total, report.tokens);
        });
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

  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_text_atomically(out_dir / "report.json", report.json(o, meta.tokenizer_id) + "\n");
  return report;
}

}  // namespace ift
