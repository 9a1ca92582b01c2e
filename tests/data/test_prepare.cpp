#include "data/prepare.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/packed_file.h"
#include "engine/base/error.h"
#include "engine/base/io.h"
#include "tests/data/byte_tokenizer.h"
#include "tests/support.h"

using namespace ift;
using test::ByteTokenizer;

namespace {

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

// For every segment the loader yields over one epoch (B = 1): the decoded text of its targets.
std::multiset<std::string> trained_texts_per_sample(const PackedFile& f, const Tokenizer& tok) {
  std::multiset<std::string> out;
  Loader loader(f, 1, 0);
  for (int64_t r = 0; r < f.n_rows(); ++r) {
    const Batch b = loader.next();
    for (size_t s = 0; s + 1 < b.cu_seqlens.size(); ++s) {
      std::vector<int32_t> ids;
      for (int32_t t = b.cu_seqlens[s]; t < b.cu_seqlens[s + 1]; ++t)
        if (b.targets[t] >= 0) ids.push_back(b.targets[t]);
      if (!ids.empty()) out.insert(tok.decode(ids));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("prepare: the trained tokens of every row decode to exactly the outputs + EOS", "[prepare]") {
  const auto dir = test::temp_dir("prepare-outputs");
  std::mt19937_64 rng(5);
  std::multiset<std::string> outputs;
  {
    std::ofstream out(dir / "a.jsonl");
    for (int i = 0; i < 300; ++i) {
      std::string answer = "answer " + std::to_string(i) + std::string(rng() % 40, 'x');
      nlohmann::json r{{"instruction", "question " + std::to_string(i) + std::string(rng() % 60, 'q')},
                       {"input", i % 3 ? "" : "context " + std::to_string(i)},
                       {"output", answer}};
      out << r.dump() << "\n";
      outputs.insert(answer + "</s>");
    }
  }
  ByteTokenizer tok;
  PrepareOptions o;
  o.data = {dir / "a.jsonl"};
  o.seq_len = 2048;  // several samples per row, as in real use (at 512 most samples exceed half a row)
  const PrepareReport r = prepare_dataset(o, tok, dir / "out");
  CHECK(r.samples_read == 300);
  CHECK(r.samples_kept == 300);
  CHECK(r.dropped.empty());
  CHECK(r.packing_efficiency > 0.95);
  const PackedFile f(dir / "out" / "train.pack");
  CHECK(static_cast<int64_t>(f.header().n_trained) == r.trained_tokens);
  CHECK(trained_texts_per_sample(f, tok) == outputs);

  const auto j = read_json(dir / "out" / "report.json");
  CHECK(j["samples_read"] == 300);
  CHECK(j["samples_kept"] == 300);
  CHECK(j["tokens"] == r.tokens);
  CHECK(j["trained_tokens"] == r.trained_tokens);
  CHECK(j["rows"] == f.n_rows());
  CHECK(j["packing_efficiency"].get<double>() ==
        Approx(static_cast<double>(r.tokens) / (static_cast<double>(f.n_rows()) * o.seq_len)));
  CHECK(j["template"] == "alpaca");
}

TEST_CASE("prepare: multi-turn chatml, mask last, several files", "[prepare]") {
  const auto dir = test::temp_dir("prepare-chatml");
  std::ofstream(dir / "a.jsonl")
      << R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]})"
      << "\n";
  std::ofstream(dir / "b.json") << R"([{"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}]}])";
  ByteTokenizer tok;
  PrepareOptions o;
  o.data = {dir / "a.jsonl", dir / "b.json"};
  o.tmpl = builtin_template("chatml");
  o.seq_len = 256;
  SECTION("outputs") {
    prepare_dataset(o, tok, dir / "out");
    CHECK(trained_texts_per_sample(PackedFile(dir / "out" / "train.pack"), tok) ==
          std::multiset<std::string>{"a1<|im_end|></s>a2<|im_end|></s>", "g<|im_end|></s>"});
  }
  SECTION("last") {
    o.mask = MaskMode::last;
    prepare_dataset(o, tok, dir / "out");
    CHECK(trained_texts_per_sample(PackedFile(dir / "out" / "train.pack"), tok) ==
          std::multiset<std::string>{"a2<|im_end|></s>", "g<|im_end|></s>"});
  }
}

TEST_CASE("prepare: long samples dropped, truncated or an error, always counted", "[prepare]") {
  const auto dir = test::temp_dir("prepare-long");
  {
    std::ofstream out(dir / "a.jsonl");
    out << R"({"instruction": "short", "output": "ok"})" << "\n";
    out << R"({"instruction": ")" << std::string(200, 'i') << R"(", "output": "long prompt"})" << "\n";
    out << R"({"instruction": "x", "output": ")" << std::string(300, 'o') << R"("})" << "\n";
  }
  ByteTokenizer tok;
  PrepareOptions o;
  o.data = {dir / "a.jsonl"};
  o.tmpl = builtin_template("plain");
  o.seq_len = 128;
  SECTION("drop (default)") {
    const auto r = prepare_dataset(o, tok, dir / "out");
    CHECK(r.samples_kept == 1);
    CHECK(r.dropped.at("too_long") == 2);
    CHECK(read_json(dir / "out" / "report.json")["dropped"]["too_long"] == 2);
  }
  SECTION("truncate: kept when trained tokens remain") {
    o.on_long = OnLong::truncate;
    const auto r = prepare_dataset(o, tok, dir / "out");
    CHECK(r.truncated == 2);
    CHECK(r.dropped.at("no_trained_tokens") == 1);  // the 200-byte prompt left no output
    CHECK(r.samples_kept == 2);
    const PackedFile f(dir / "out" / "train.pack");
    for (int64_t row = 0; row < f.n_rows(); ++row)
      for (uint32_t len : f.row_sample_lengths(row)) CHECK(len <= 128);
  }
  SECTION("error names FILE:LINE") {
    o.on_long = OnLong::error;
    CHECK_THROWS_WITH(prepare_dataset(o, tok, dir / "out"),
                      Catch::Matchers::Contains("a.jsonl:2: sample has") &&
                          Catch::Matchers::Contains("more than --seq-len 128"));
    CHECK(!std::filesystem::exists(dir / "out" / "train.pack"));
  }
}

TEST_CASE("prepare: bad input stops at FILE:LINE, or is skipped and reported", "[prepare]") {
  const auto dir = test::temp_dir("prepare-bad");
  std::ofstream(dir / "a.jsonl") << "{\"instruction\": \"i\", \"output\": \"o\"}\n{\"instruction\": \"i\"}\n{oops\n";
  ByteTokenizer tok;
  PrepareOptions o;
  o.data = {dir / "a.jsonl"};
  o.seq_len = 512;
  CHECK_THROWS_WITH(prepare_dataset(o, tok, dir / "out"), Catch::Matchers::Contains("a.jsonl:2: field 'output' is missing"));
  o.on_bad = OnBad::skip;
  const auto r = prepare_dataset(o, tok, dir / "out");
  CHECK(r.samples_read == 3);
  CHECK(r.samples_kept == 1);
  CHECK(r.dropped.at("bad_input") == 2);
  const auto j = read_json(dir / "out" / "report.json");
  CHECK(j["bad_input_by_reason"]["missing_field"] == 1);
  CHECK(j["bad_input_by_reason"]["invalid_json"] == 1);
  // A tokenizer without EOS fails before reading anything.
  ByteTokenizer no_eos(-1);
  CHECK_THROWS_WITH(prepare_dataset(o, no_eos, dir / "out2"), Catch::Matchers::Contains("has no EOS token"));
  CHECK(parse_on_long("truncate") == OnLong::truncate);
  CHECK_THROWS_AS(parse_on_bad("ignore"), Error);
}

TEST_CASE("prepare: pack none pads one sample per row - progress is reported", "[prepare]") {
  const auto dir = test::temp_dir("prepare-none");
  std::ofstream(dir / "a.jsonl") << "{\"instruction\": \"i\", \"output\": \"o\"}\n{\"instruction\": \"j\", \"output\": \"p\"}\n";
  ByteTokenizer tok;
  PrepareOptions o;
  o.data = {dir / "a.jsonl"};
  o.seq_len = 512;
  o.pack = PackMode::none;
  int64_t last_done = -1, last_total = 0;
  const auto r = prepare_dataset(o, tok, dir / "out", [&](int64_t done, int64_t total, int64_t) {
    last_done = done;
    last_total = total;
  });
  CHECK(r.rows == 2);
  CHECK(last_done == last_total);
  CHECK(last_total == static_cast<int64_t>(std::filesystem::file_size(dir / "a.jsonl")));
}

// End to end with the real Llama 2 sentencepiece tokenizer, through the `ift prepare` command.
TEST_CASE("ift prepare with the llama2 tokenizer: trained tokens are the outputs + </s>", "[prepare][e2e]") {
  const auto tok_path = test::fixture("tokenizers/llama2/tokenizer.model");
  const auto dir = test::temp_dir("prepare-e2e");
  std::ofstream(dir / "a.json")
      << R"([{"instruction": "Name a color.", "input": "", "output": "Blue is a color."},
            {"instruction": "Add.", "input": "2 and 3", "output": "The sum is 5."}])";
  const std::string cmd = std::string(IFT_BINARY) + " prepare --data " + (dir / "a.json").string() +
                          " --tokenizer " + tok_path.string() + " --seq-len 256 --out " + (dir / "out").string() +
                          " 2> " + (dir / "log.txt").string();
  REQUIRE(std::system(cmd.c_str()) == 0);
  const auto tok = load_tokenizer(tok_path);
  const PackedFile f(dir / "out" / "train.pack");
  CHECK(f.header().vocab_size == tok->vocab_size());
  CHECK(f.header().tokenizer_hash == tokenizer_hash(*tok));
  // Each sample starts with <s> and its trained tokens decode to the output (sentencepiece drops the
  // dummy-prefix space when decoding) followed by EOS.
  std::multiset<std::string> trained;
  Loader loader(f, 1, 0);
  for (int64_t r = 0; r < f.n_rows(); ++r) {
    const Batch b = loader.next();
    for (size_t s = 0; s + 1 < b.cu_seqlens.size(); ++s) {
      std::vector<int32_t> ids;
      for (int32_t t = b.cu_seqlens[s]; t < b.cu_seqlens[s + 1]; ++t)
        if (b.targets[t] >= 0) ids.push_back(b.targets[t]);
      if (ids.empty()) continue;
      CHECK(b.tokens[b.cu_seqlens[s]] == tok->bos_id());
      CHECK(ids.back() == tok->eos_id());
      ids.pop_back();
      trained.insert(tok->decode(ids));
    }
  }
  CHECK(trained == std::multiset<std::string>{"Blue is a color.", "The sum is 5."});
  const auto j = read_json(dir / "out" / "report.json");
  CHECK(j["samples_kept"] == 2);
  std::ifstream log(dir / "log.txt");
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  CHECK_THAT(text, Catch::Matchers::Contains("packing efficiency"));

  // `ift inspect --json`: the row with Hugging Face's labels (aligned, -100 = no loss), positions
  // restarting per sample, and the sample lengths; the text view marks exactly the trained spans.
  const std::string inspect = std::string(IFT_BINARY) + " inspect " + (dir / "out").string();
  REQUIRE(std::system((inspect + " --json --rows 0: > " + (dir / "rows.jsonl").string()).c_str()) == 0);
  std::ifstream rows(dir / "rows.jsonl");
  std::string line;
  REQUIRE(std::getline(rows, line));
  const auto row = nlohmann::json::parse(line);
  CHECK(row["row"] == 0);
  const auto ids = row["input_ids"].get<std::vector<int32_t>>();
  const auto labels = row["labels"].get<std::vector<int32_t>>();
  const auto positions = row["position_ids"].get<std::vector<int32_t>>();
  CHECK(row["seq_lens"].get<std::vector<int32_t>>().size() == 2);
  REQUIRE(ids.size() == labels.size());
  REQUIRE(ids.size() == positions.size());
  CHECK(positions[0] == 0);
  CHECK(positions[row["seq_lens"][0].get<size_t>()] == 0);  // the second sample restarts
  std::vector<int32_t> trained_ids;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (labels[i] == -100) continue;
    CHECK(labels[i] == ids[i]);
    trained_ids.push_back(labels[i]);
  }
  CHECK(static_cast<uint64_t>(trained_ids.size()) == f.header().n_trained);
  CHECK_FALSE(std::getline(rows, line));  // one row in all
  REQUIRE(std::system((inspect + " --tokenizer " + tok_path.string() + " > " + (dir / "rows.txt").string()).c_str()) == 0);
  std::ifstream view(dir / "rows.txt");
  const std::string shown((std::istreambuf_iterator<char>(view)), {});
  CHECK_THAT(shown, Catch::Matchers::Contains("[[Blue is a color.</s>]]") || Catch::Matchers::Contains("[[The sum is 5.</s>]]"));
  CHECK(std::system((inspect + " --rows 3:1 2> /dev/null").c_str()) != 0);
}

// A full disk while the packed file is written: the seam of engine/base/io.h fails a write of
// train.pack with ENOSPC (then EIO). Nothing is left under the final name (nor a temporary), and a
// train.pack of an earlier run stays as it was.
TEST_CASE("prepare: a full disk leaves no partial train.pack and keeps the previous one", "[prepare]") {
  const auto dir = test::temp_dir("prepare-enospc");
  {
    std::ofstream out(dir / "a.jsonl");
    for (int i = 0; i < 2000; ++i)
      out << nlohmann::json{{"instruction", "question " + std::to_string(i)}, {"output", std::string(200 + i % 97, 'a')}}
                 .dump()
          << "\n";
  }
  ByteTokenizer tok;
  PrepareOptions o;
  o.data = {dir / "a.jsonl"};
  o.seq_len = 1024;
  for (const int err : {ENOSPC, EIO}) {
    INFO("errno " << err);
    const auto out = dir / ("out" + std::to_string(err));
    for (const int64_t nth : {1, 2}) {  // the first write (header and index), a later one (the tokens)
      inject_write_failure(nth, err, "train.pack");
      CHECK_THROWS_WITH(prepare_dataset(o, tok, out),
                        Catch::Matchers::Contains("train.pack") && Catch::Matchers::Contains(std::strerror(err)));
      CHECK_FALSE(write_failure_pending());
      CHECK_FALSE(std::filesystem::exists(out / "train.pack"));
      CHECK_FALSE(std::filesystem::exists(out / "report.json"));
      CHECK(std::filesystem::is_empty(out));  // no temporary left either
    }
    const PrepareReport first = prepare_dataset(o, tok, out);
    const auto bytes = std::filesystem::file_size(out / "train.pack");
    o.seed = 7;  // a different file, whose writing fails
    inject_write_failure(2, err, "train.pack");
    CHECK_THROWS_WITH(prepare_dataset(o, tok, out), Catch::Matchers::Contains("train.pack"));
    o.seed = 0;
    CHECK(std::filesystem::file_size(out / "train.pack") == bytes);
    const PackedFile f(out / "train.pack");  // verifies the checksum: the earlier file, whole
    CHECK(f.n_rows() == first.rows);
    CHECK(std::distance(std::filesystem::directory_iterator(out), {}) == 2);  // train.pack, report.json
  }
}
