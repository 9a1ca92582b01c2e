// Byte-level BPE against Hugging Face tokenizers: GPT-2 from tokenizer.json and from vocab.json +
// merges.txt, a Llama-3-style Split regex, add_prefix_space, special tokens, invalid UTF-8.
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "tests/support.h"
#include "tests/tokenizer/encodings.h"
#include "tokenizer/bpe.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace ift {
namespace {

using test::fixture;
using Ids = std::vector<int32_t>;

const Tokenizer& gpt2() {
  static const auto tok = load_tokenizer(fixture("tokenizers/gpt2/tokenizer.json"));
  return *tok;
}

void check_reference(const Tokenizer& tok, const std::string& case_name, bool parse_special) {
  for (const auto& c : test::reference_encodings(case_name)) {
    INFO(case_name << ": \"" << test::show(c.text) << "\"");
    CHECK(tok.encode(c.text, parse_special) == c.ids);
    CHECK(tok.decode(c.ids) == c.text);
  }
}

TEST_CASE("gpt2 tokenizer.json: known encodings", "[bpe]") {
  CHECK(gpt2().encode("Hello world") == Ids{15496, 995});
  CHECK(gpt2().encode("Hello, my dog is cute") == Ids{15496, 11, 616, 3290, 318, 13779});
  CHECK(gpt2().vocab_size() == 50257);
  CHECK(gpt2().special_id("<|endoftext|>") == 50256);
  CHECK(gpt2().bos_id() == 50256);
  CHECK(gpt2().eos_id() == 50256);
  CHECK(gpt2().pad_id() == -1);
  CHECK(gpt2().unk_id() == -1);
  CHECK(gpt2().id_to_piece(995) == "Ġworld");
  CHECK(gpt2().special_id("Ġworld") == 995);
  CHECK(!gpt2().special_id("<|im_start|>").has_value());
}

TEST_CASE("gpt2 tokenizer.json equals Hugging Face tokenizers", "[bpe]") {
  check_reference(gpt2(), "gpt2", false);
  check_reference(gpt2(), "gpt2_special", true);
}

TEST_CASE("gpt2 vocab.json + merges.txt equals tokenizer.json", "[bpe]") {
  const auto tok = load_tokenizer(fixture("tokenizers/gpt2/vocab.json"));
  check_reference(*tok, "gpt2", false);
  check_reference(*tok, "gpt2_special", true);
  CHECK(tok->vocab_size() == 50257);
  CHECK(tok->eos_id() == 50256);
  CHECK(tok->files().size() == 2);
}

TEST_CASE("special tokens in user text stay text unless asked for", "[bpe]") {
  const std::string text = "Hi<|endoftext|>";
  const Ids plain = gpt2().encode(text);
  CHECK(std::find(plain.begin(), plain.end(), 50256) == plain.end());
  CHECK(gpt2().decode(plain) == text);
  CHECK(gpt2().encode(text, true) == Ids{17250, 50256});
  CHECK(gpt2().decode(Ids{17250, 50256}) == text);
}

TEST_CASE("merges written as [a, b] pairs load the same", "[bpe]") {
  std::ifstream in(fixture("tokenizers/gpt2/tokenizer.json"));
  auto j = nlohmann::json::parse(in);
  for (auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    m = nlohmann::json::array({s.substr(0, sp), s.substr(sp + 1)});
  }
  const auto dir = test::temp_dir("bpe-pairs");
  std::ofstream(dir / "tokenizer.json") << j.dump();
  const auto tok = load_tokenizer(dir);
  check_reference(*tok, "gpt2", false);
  std::filesystem::remove_all(dir);
}

TEST_CASE("add_prefix_space equals Hugging Face tokenizers", "[bpe]") {
  std::ifstream in(fixture("tokenizers/gpt2/tokenizer.json"));
  auto j = nlohmann::json::parse(in);
  j["pre_tokenizer"]["add_prefix_space"] = true;
  const auto dir = test::temp_dir("bpe-prefix");
  std::ofstream(dir / "tokenizer.json") << j.dump();
  const auto tok = load_tokenizer(dir / "tokenizer.json");
  for (const auto& c : test::reference_encodings("gpt2_prefix_space")) {
    INFO("\"" << test::show(c.text) << "\"");
    CHECK(tok->encode(c.text) == c.ids);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("Split regex pre-tokenizer with ignore_merges (Llama 3 layout)", "[bpe]") {
  const auto tok = load_tokenizer(fixture("tokenizers/tiny_split"));
  check_reference(*tok, "tiny_split", false);
  CHECK(tok->special_id("<|end_of_text|>").has_value());
}

TEST_CASE("tokenizer_config.json beside tokenizer.json names the special tokens", "[bpe]") {
  const auto dir = test::temp_dir("bpe-config");
  std::filesystem::copy_file(fixture("tokenizers/tiny_split/tokenizer.json"), dir / "tokenizer.json");
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"}, "pad_token": null})";
  const auto tok = load_tokenizer(dir);
  CHECK(tok->bos_id() == *tok->special_id("<|begin_of_text|>"));
  CHECK(tok->eos_id() == *tok->special_id("<|end_of_text|>"));
  CHECK(tok->pad_id() == -1);
  CHECK(tok->files().size() == 2);
  std::filesystem::remove_all(dir);
}

TEST_CASE("invalid UTF-8 encodes as raw bytes and decodes with U+FFFD", "[bpe]") {
  const std::vector<std::string> inputs = {
      "\xff",           "abc\xff\xfe def",    "caf\xc3",         "\xc3\x28 ok",     "\xed\xa0\x80 surrogate",
      "\xf4\x90\x80\x80", "\xe2\x82 truncated", std::string("nul\0byte", 8), "over\xc0\xaflong", "\x80\x80\x80"};
  for (const std::string& s : inputs) {
    INFO("\"" << test::show(s) << "\"");
    const Ids ids = gpt2().encode(s);
    for (int32_t id : ids) {
      REQUIRE(id >= 0);
      REQUIRE(id < 50256);
    }
    const std::string text = gpt2().decode(ids);
    CHECK((text.find("\xEF\xBF\xBD") != std::string::npos || s.find('\0') != std::string::npos));
  }
  // Valid text around the invalid byte encodes as it would alone.
  const Ids around = gpt2().encode("Hello world\xff");
  CHECK(Ids(around.begin(), around.begin() + 2) == Ids{15496, 995});
  CHECK(gpt2().decode(gpt2().encode(std::string("nul\0byte", 8))) == std::string("nul\0byte", 8));
}

TEST_CASE("random bytes never crash encode, and decode of any in-range ids never crashes", "[bpe]") {
  std::mt19937 rng(1234);
  for (int round = 0; round < 200; ++round) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);
    const Ids ids = gpt2().encode(s, round % 2 == 0);
    CHECK(gpt2().decode(ids).empty() == s.empty());
    Ids garbage(rng() % 32);
    for (int32_t& id : garbage) id = static_cast<int32_t>(rng() % gpt2().vocab_size());
    CHECK_NOTHROW(gpt2().decode(garbage));
  }
  CHECK_THROWS_AS(gpt2().decode(Ids{50257}), Error);
  CHECK_THROWS_AS(gpt2().decode(Ids{-1}), Error);
}

TEST_CASE("very long words and whitespace runs round-trip", "[bpe]") {
  // Words over 32 bytes take the heap merge path; the reference cases above hold several (100 a's,
  // 80 '=', 50 digits), so here only size matters: no regex stack limit, no quadratic blow-up.
  const std::string spaces(1 << 20, ' ');
  const Ids ids = gpt2().encode(spaces + "x");
  CHECK(gpt2().decode(ids) == spaces + "x");
  const std::string digits(5000, '7');
  CHECK(gpt2().decode(gpt2().encode(digits)) == digits);
}

TEST_CASE("encode is safe from many threads", "[bpe]") {
  const auto cases = test::reference_encodings("gpt2");
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (const auto& c : cases) failures[t] += gpt2().encode(c.text) != c.ids;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == std::vector<int>(4, 0));
}

// Offsets: consecutive byte ranges that cover the text, each the bytes of its token; the space
// add_prefix_space adds belongs to no byte.
void check_offsets(const Tokenizer& tok, const std::string& text, bool parse_special, bool prefix_space) {
  INFO("\"" << test::show(text) << "\" parse_special=" << parse_special);
  const Tokenizer::Encoding e = tok.encode_with_offsets(text, parse_special);
  CHECK(e.ids == tok.encode(text, parse_special));
  REQUIRE(e.offsets.size() == e.ids.size());
  uint32_t pos = 0;
  for (size_t i = 0; i < e.ids.size(); ++i) {
    CHECK(e.offsets[i].first == pos);
    const std::string piece = text.substr(e.offsets[i].first, e.offsets[i].second - e.offsets[i].first);
    const std::string bytes = tok.decode(std::vector<int32_t>{e.ids[i]});
    if (prefix_space && bytes.size() == piece.size() + 1) CHECK(bytes == " " + piece);
    else if (utf8::is_valid(piece)) CHECK(bytes == piece);  // a partial UTF-8 sequence decodes as U+FFFD
    pos = e.offsets[i].second;
  }
  CHECK(pos == text.size());
}

TEST_CASE("encode_with_offsets: each token's byte range, special tokens and add_prefix_space", "[bpe]") {
  for (const auto& c : test::reference_encodings("gpt2_special")) {
    check_offsets(gpt2(), c.text, true, false);
    check_offsets(gpt2(), c.text, false, false);
  }
  const Tokenizer::Encoding e = gpt2().encode_with_offsets("Hi<|endoftext|>yo", true);
  CHECK(e.ids == Ids{17250, 50256, 8226});
  CHECK(e.offsets == std::vector<std::pair<uint32_t, uint32_t>>{{0, 2}, {2, 15}, {15, 17}});

  std::ifstream in(fixture("tokenizers/gpt2/tokenizer.json"));
  auto j = nlohmann::json::parse(in);
  j["pre_tokenizer"]["add_prefix_space"] = true;
  const auto dir = test::temp_dir("bpe-offsets-prefix");
  std::ofstream(dir / "tokenizer.json") << j.dump();
  const auto tok = load_tokenizer(dir / "tokenizer.json");
  for (const char* text : {"hello world", " already spaced", "a<|endoftext|>b", "<|endoftext|> c"})
    check_offsets(*tok, text, true, true);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ift
