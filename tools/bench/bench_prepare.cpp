// Benchmark of the data pipeline: 200k synthetic Alpaca-like records with a realistic length mix
// (short and long instructions, a third with an input, outputs from a few words to ~1000 words),
// read from JSONL in memory, rendered with the alpaca template (tokenize + mask), then packed by
// bfd and greedy. Prints tokens/s per stage (one thread) and the packing efficiency of each mode,
// against the goals: >= 1M tokens/s per core for tokenize+pack, bfd >= 99% efficiency.
//
//   ift_bench_prepare [--tokenizer PATH] [--samples N] [--seq-len T]
// Without --tokenizer it uses tests/fixtures/tokenizers/llama2/tokenizer.model when present, else
// a one-token-per-byte tokenizer (which measures the pipeline without tokenizer cost).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "data/pack.h"
#include "data/prepare.h"
#include "data/reader.h"
#include "data/template.h"
#include "tests/data/byte_tokenizer.h"

using namespace ift;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string words(std::mt19937_64& rng, int n) {
  static const char* vocab[] = {"the",    "model",   "data",    "learn",  "a",        "function", "returns",
                                "value",  "of",      "and",     "in",     "example",  "sentence", "write",
                                "python", "list",    "number",  "answer", "question", "because",  "therefore",
                                "is",     "summary", "article", "people", "time",     "world",    "42,",
                                "code:",  "x = 1;",  "Hello!",  "über",   "résumé",   "(see",     "below)."};
  std::string s;
  for (int i = 0; i < n; ++i) {
    if (i) s += (rng() % 15 == 0) ? "\n" : " ";
    s += vocab[rng() % (sizeof vocab / sizeof *vocab)];
  }
  return s;
}

int lognormal_words(std::mt19937_64& rng, double median, double sigma, int max) {
  std::lognormal_distribution<double> d(std::log(median), sigma);
  return std::max(1, std::min(max, static_cast<int>(d(rng))));
}

}  // namespace

int main(int argc, char** argv) {
  std::string tok_path;
  int n = 200000, seq_len = 2048;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokenizer")) tok_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--samples")) n = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--seq-len")) seq_len = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: %s [--tokenizer PATH] [--samples N] [--seq-len T]\n", argv[0]);
      return 2;
    }
  }
  const std::filesystem::path fixture = std::filesystem::path(IFT_SOURCE_DIR) / "tests/fixtures/tokenizers/llama2/tokenizer.model";
  if (tok_path.empty() && std::filesystem::exists(fixture)) tok_path = fixture.string();
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = tok_path.empty() ? std::make_unique<test::ByteTokenizer>() : load_tokenizer(tok_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cannot load tokenizer: %s\n", e.what());
    return 1;
  }
  std::printf("tokenizer: %s\n", tok_path.empty() ? "one token per byte (no tokenizer cost)" : tok_path.c_str());

  // Synthetic JSONL, Alpaca-like lengths: instruction median 15 words, input on a third (median 40),
  // output median 80 words with a long tail (cap 1000).
  std::mt19937_64 rng(1234);
  std::string jsonl;
  for (int i = 0; i < n; ++i) {
    nlohmann::json r;
    r["instruction"] = words(rng, lognormal_words(rng, 15, 0.6, 200));
    r["input"] = rng() % 3 == 0 ? words(rng, lognormal_words(rng, 40, 0.8, 600)) : "";
    r["output"] = words(rng, lognormal_words(rng, 80, 1.0, 1000));
    jsonl += r.dump() + "\n";
  }

  auto t0 = std::chrono::steady_clock::now();
  ReadStats stats;
  const auto convs = read_conversations_text(jsonl, "synthetic.jsonl", Format::alpaca, OnBad::error, stats);
  const double t_read = seconds_since(t0);

  PrepareOptions o;
  o.seq_len = seq_len;
  o.on_long = OnLong::truncate;
  PrepareReport report;
  const ChatFormatter fmt(builtin_template("alpaca"), *tok);
  t0 = std::chrono::steady_clock::now();
  const auto samples = render_samples(convs, fmt, o, report);
  const double t_render = seconds_since(t0);
  std::vector<int32_t> lengths;
  int64_t tokens = 0;
  for (const auto& s : samples) {
    lengths.push_back(static_cast<int32_t>(s.tokens.size()));
    tokens += lengths.back();
  }
  std::printf("%d samples, %lld tokens (mean %.0f per sample), seq_len %d, %lld truncated\n", n,
              static_cast<long long>(tokens), static_cast<double>(tokens) / n, seq_len,
              static_cast<long long>(report.truncated));
  std::printf("read JSONL      %7.3f s  %8.2f M tokens/s  (%.0f MB/s)\n", t_read, tokens / t_read / 1e6,
              jsonl.size() / t_read / 1e6);
  std::printf("tokenize+mask   %7.3f s  %8.2f M tokens/s\n", t_render, tokens / t_render / 1e6);
  for (PackMode mode : {PackMode::bfd, PackMode::greedy}) {
    t0 = std::chrono::steady_clock::now();
    const auto rows = pack_rows(lengths, seq_len, mode);
    const double t_pack = seconds_since(t0);
    const double eff = static_cast<double>(tokens) / (static_cast<double>(rows.size()) * seq_len);
    std::printf("pack %-6s     %7.3f s  %8.2f M tokens/s  %zu rows, efficiency %.2f%% (goal bfd >= 99%%)\n",
                pack_mode_name(mode), t_pack, tokens / t_pack / 1e6, rows.size(), 100 * eff);
    std::printf("  tokenize+pack %-6s %8.2f M tokens/s per core (goal >= 1)\n", pack_mode_name(mode),
                tokens / (t_render + t_pack) / 1e6);
  }
  return 0;
}
