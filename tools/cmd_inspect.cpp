// `ift inspect DIR`: the rows of a prepared dataset, as JSON (Hugging Face's conventions) or as
// readable text with the trained spans marked.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/packed_file.h"
#include "engine/base/error.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace {

// "A:B" (either side may be empty) -> [a, b) clipped to [0, n).
std::pair<int64_t, int64_t> parse_rows(const std::string& spec, int64_t n) {
  const size_t colon = spec.find(':');
  IFT_CHECK(colon != std::string::npos, "--rows '", spec, "': expected A:B, e.g. 0:10 or 5:");
  auto bound = [&](const std::string& s, int64_t fallback) {
    if (s.empty()) return fallback;
    try {
      size_t used = 0;
      const int64_t v = std::stoll(s, &used);
      IFT_CHECK(used == s.size() && v >= 0, "");
      return v;
    } catch (const std::exception&) {
      fail("--rows '", spec, "': '", s, "' is not a row number");
    }
  };
  const int64_t a = std::min(bound(spec.substr(0, colon), 0), n), b = std::min(bound(spec.substr(colon + 1), n), n);
  IFT_CHECK(a <= b, "--rows '", spec, "': the start is after the end");
  return {a, b};
}

}  // namespace

int inspect(Args args) {
  cli::Parser p("ift inspect", "Show the rows of a prepared dataset (ift prepare): as one JSON object per row with\n"
                               "--json (labels aligned with input_ids, -100 = no loss, as Hugging Face), or as\n"
                               "text with the trained spans marked (needs --tokenizer).");
  p.positional("DIR", "a prepared dataset directory, or its train.pack", 1, 1);
  p.option("--rows", "A:B", "0:4", "rows A (included) to B (excluded); either side may be empty");
  p.flag("--json", "one JSON object per row: row, input_ids, labels, position_ids, seq_lens");
  p.option("--tokenizer", "PATH", "", "the tokenizer the data was prepared with (for the text view)");
  if (!p.parse(args)) return 0;
  std::filesystem::path path(p.positionals()[0]);
  if (std::filesystem::is_directory(path)) path /= "train.pack";
  const PackedFile f(path);
  const auto [a, b] = parse_rows(p.str("--rows"), f.n_rows());

  if (p.on("--json")) {
    for (int64_t r = a; r < b; ++r) {
      const auto tokens = f.row_tokens(r);
      const auto trained = f.row_trained(r);
      const auto lens = f.row_sample_lengths(r);
      nlohmann::json labels = nlohmann::json::array(), positions = nlohmann::json::array();
      for (size_t i = 0; i < tokens.size(); ++i) labels.push_back(trained[i] ? tokens[i] : -100);
      for (uint32_t len : lens)
        for (uint32_t j = 0; j < len; ++j) positions.push_back(j);
      std::printf("%s\n", nlohmann::json{{"row", r},
                                         {"input_ids", std::vector<int32_t>(tokens.begin(), tokens.end())},
                                         {"labels", labels},
                                         {"position_ids", positions},
                                         {"seq_lens", std::vector<uint32_t>(lens.begin(), lens.end())}}
                              .dump()
                              .c_str());
    }
    return 0;
  }

  IFT_CHECK(p.given("--tokenizer"), "the text view needs --tokenizer (the data was prepared with ",
            f.header().tokenizer_id, "); or use --json");
  const auto tok = load_tokenizer(p.str("--tokenizer"));
  IFT_CHECK(tokenizer_hash(*tok) == f.header().tokenizer_hash, p.str("--tokenizer"),
            " is not the tokenizer the data was prepared with (", f.header().tokenizer_id, ")");
  // Trained spans in green on a terminal, between [[ and ]] otherwise.
  const bool tty = ::isatty(STDOUT_FILENO);
  const char* open = tty ? "\033[32m" : "[[";
  const char* close = tty ? "\033[0m" : "]]";
  // Text of ids, with BOS/EOS/pad shown as their pieces (decoding would drop them).
  const auto readable = [&](std::span<const int32_t> ids) {
    std::string out;
    std::vector<int32_t> run;
    for (int32_t id : ids) {
      if (id == tok->bos_id() || id == tok->eos_id() || id == tok->pad_id()) {
        out += tok->decode(run) + tok->id_to_piece(id);
        run.clear();
      } else {
        run.push_back(id);
      }
    }
    return out + tok->decode(run);
  };
  std::printf("%s: %lld rows of %d tokens; trained spans %s%s%s\n", path.c_str(), static_cast<long long>(f.n_rows()),
              f.seq_len(), open, "like this", close);
  for (int64_t r = a; r < b; ++r) {
    const auto tokens = f.row_tokens(r);
    const auto trained = f.row_trained(r);
    size_t at = 0, s = 0;
    for (uint32_t len : f.row_sample_lengths(r)) {
      size_t n_trained = 0;
      for (size_t i = at; i < at + len; ++i) n_trained += trained[i];
      std::printf("--- row %lld, sample %zu: %u tokens, %zu trained\n", static_cast<long long>(r), s++, len, n_trained);
      std::string text;
      for (size_t i = at; i < at + len;) {
        size_t j = i;
        while (j < at + len && trained[j] == trained[i]) ++j;
        text += trained[i] ? open + readable(tokens.subspan(i, j - i)) + close : readable(tokens.subspan(i, j - i));
        i = j;
      }
      std::printf("%s\n", text.c_str());
      at += len;
    }
  }
  return 0;
}

}  // namespace ift::cmd
