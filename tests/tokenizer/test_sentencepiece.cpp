// Sentencepiece (.model) against the Python sentencepiece package, special tokens, training.
#include <fstream>
#include <random>

#include "engine/base/error.h"
#include "tests/support.h"
#include "tests/tokenizer/encodings.h"
#include "tokenizer/sentencepiece.h"
#include "tokenizer/tokenizer.h"

namespace ift {
namespace {

using test::fixture;
using Ids = std::vector<int32_t>;

const Tokenizer& llama2() {
  static const auto tok = load_tokenizer(fixture("tokenizers/llama2/tokenizer.model"));
  return *tok;
}

Ids with_bos(Ids ids) {
  ids.insert(ids.begin(), llama2().bos_id());
  return ids;
}

TEST_CASE("llama2 sentencepiece: known encodings and ids", "[sentencepiece]") {
  CHECK(with_bos(llama2().encode("Hello world")) == Ids{1, 15043, 3186});
  CHECK(with_bos(llama2().encode("Hello, my dog is cute")) == Ids{1, 15043, 29892, 590, 11203, 338, 274, 1082});
  CHECK(with_bos(llama2().encode("The year 2024")) == Ids{1, 450, 1629, 29871, 29906, 29900, 29906, 29946});
  CHECK(llama2().vocab_size() == 32000);
  CHECK(llama2().unk_id() == 0);
  CHECK(llama2().bos_id() == 1);
  CHECK(llama2().eos_id() == 2);
  CHECK(llama2().pad_id() == -1);
  CHECK(llama2().special_id("</s>") == 2);
  CHECK(llama2().special_id("<unk>") == 0);
  CHECK(llama2().special_id("▁Hello") == 15043);
  CHECK(!llama2().special_id("<|endoftext|>").has_value());
  CHECK(llama2().id_to_piece(15043) == "▁Hello");
}

TEST_CASE("llama2 sentencepiece equals the sentencepiece package", "[sentencepiece]") {
  for (const auto& c : test::reference_encodings("llama2")) {
    INFO("\"" << test::show(c.text) << "\"");
    CHECK(llama2().encode(c.text) == c.ids);
    // Sentencepiece drops the dummy-prefix space it added; a leading space of the text itself
    // is merged with it, which is the reference's own (lossy) behaviour too.
    if (!c.text.starts_with(' ')) {
      CHECK(llama2().decode(c.ids) == c.text);
    }
  }
}

TEST_CASE("sentencepiece control pieces are parsed only when asked", "[sentencepiece]") {
  const Ids plain = llama2().encode("a</s>b");
  CHECK(std::find(plain.begin(), plain.end(), 2) == plain.end());
  const Ids parsed = llama2().encode("<s>a</s>b", true);
  REQUIRE(parsed.size() >= 4);
  CHECK(parsed.front() == 1);
  // Each segment is encoded on its own: "a" then "b", both with the dummy prefix.
  Ids expected = {1};
  for (int32_t id : llama2().encode("a")) expected.push_back(id);
  expected.push_back(2);
  for (int32_t id : llama2().encode("b")) expected.push_back(id);
  CHECK(parsed == expected);
}

TEST_CASE("sentencepiece: invalid UTF-8 and garbage ids do not crash", "[sentencepiece]") {
  std::mt19937 rng(99);
  for (int round = 0; round < 200; ++round) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);
    Ids ids;
    CHECK_NOTHROW(ids = llama2().encode(s));
    for (int32_t id : ids) CHECK((id >= 0 && id < 32000));
    Ids garbage(rng() % 32);
    for (int32_t& id : garbage) id = static_cast<int32_t>(rng() % 32000);
    CHECK_NOTHROW(llama2().decode(garbage));
  }
  // Byte pieces that do not form UTF-8 decode to U+FFFD.
  const int32_t byte_ff = *llama2().special_id("<0xFF>");
  CHECK(llama2().decode(Ids{byte_ff}) == "\xEF\xBF\xBD");
  CHECK_THROWS_AS(llama2().decode(Ids{32000}), Error);
}

TEST_CASE("train a sentencepiece model with byte fallback", "[sentencepiece]") {
  const auto dir = test::temp_dir("spm-train");
  {
    std::ofstream out(dir / "corpus.txt");
    // The hand-written reference texts (the random ones after them hold too many characters for a
    // 400-piece vocabulary).
    auto cases = test::reference_encodings("llama2");
    cases.resize(30);
    for (int repeat = 0; repeat < 20; ++repeat) {
      for (const auto& c : cases) {
        if (c.text.find('\n') == std::string::npos && !c.text.empty()) out << c.text << "\n";
      }
    }
  }
  for (const std::string type : {"bpe", "unigram"}) {
    SentencepieceTrainOptions o;
    o.inputs = {dir / "corpus.txt"};
    o.out_prefix = dir / ("tok_" + type);
    o.vocab_size = 400;
    o.model_type = type;
    o.with_pad = true;
    o.user_defined_symbols = {"<|im_start|>"};
    o.num_threads = 1;
    o.quiet = true;
    train_sentencepiece(o);
    const auto tok = load_tokenizer(dir / ("tok_" + type + ".model"));
    CHECK(tok->vocab_size() == 400);
    CHECK(tok->unk_id() == 0);
    CHECK(tok->bos_id() == 1);
    CHECK(tok->eos_id() == 2);
    CHECK(tok->pad_id() == 3);
    // Byte fallback: text never seen in training still round-trips, with no unk.
    const std::string unseen = "Ωμέγα ∮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢";
    const Ids ids = tok->encode(unseen);
    CHECK(std::find(ids.begin(), ids.end(), 0) == ids.end());
    CHECK(tok->decode(ids) == unseen);
    CHECK(tok->encode("<|im_start|>") == Ids{*tok->special_id("▁"), *tok->special_id("<|im_start|>")});
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("training errors name the file", "[sentencepiece]") {
  SentencepieceTrainOptions o;
  o.inputs = {"/nonexistent/corpus.txt"};
  o.out_prefix = "/tmp/x";
  CHECK_THROWS_WITH(train_sentencepiece(o), Catch::Contains("/nonexistent/corpus.txt"));
}

TEST_CASE("sentencepiece offsets: ordered ranges inside the text, control pieces exact", "[sentencepiece]") {
  const std::string text = "<s>[INST] Héllo  wörld 中文 [/INST] ok</s>";
  const Tokenizer::Encoding e = llama2().encode_with_offsets(text, true);
  CHECK(e.ids == llama2().encode(text, true));
  REQUIRE(e.offsets.size() == e.ids.size());
  CHECK(e.ids.front() == llama2().bos_id());
  CHECK(e.offsets.front() == std::pair<uint32_t, uint32_t>{0, 3});
  CHECK(e.ids.back() == llama2().eos_id());
  CHECK(e.offsets.back() == std::pair<uint32_t, uint32_t>{static_cast<uint32_t>(text.size() - 4),
                                                          static_cast<uint32_t>(text.size())});
  for (size_t i = 0; i < e.offsets.size(); ++i) {
    CHECK(e.offsets[i].first <= e.offsets[i].second);
    CHECK(e.offsets[i].second <= text.size());
    if (i > 0) CHECK(e.offsets[i].first >= e.offsets[i - 1].first);
  }
}

TEST_CASE("sentencepiece with parse_special: the dummy prefix as transformers puts it", "[sentencepiece]") {
  // legacy (no tokenizer_config.json): every segment gets "▁" unless it starts with a space.
  CHECK(llama2().encode("<s>[INST]", true) == Ids{1, 518, 25580, 29962});    // "▁[" "INST" "]"
  CHECK(llama2().encode("<s> [INST]", true) == Ids{1, 518, 25580, 29962});   // the space is the "▁"
  CHECK(llama2().encode(" [INST]", false) == Ids{29871, 518, 25580, 29962}); // plain encode: the library's
  // "legacy": false beside the model: only a segment at the start of the text.
  const auto dir = test::temp_dir("sp-legacy-false");
  std::filesystem::copy_file(fixture("tokenizers/llama2/tokenizer.model"), dir / "tokenizer.model");
  std::ofstream(dir / "tokenizer_config.json") << R"({"legacy": false})";
  const auto tok = load_tokenizer(dir);
  CHECK(tok->encode("<s>[INST]", true) == Ids{1, 29961, 25580, 29962});  // "[" without "▁"
  CHECK(tok->encode("[INST]", true) == Ids{518, 25580, 29962});
  CHECK(tok->encode("[INST]", false) == Ids{518, 25580, 29962});
  CHECK(tok->files().size() == 2);  // the config travels with the model (it changes the ids)
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ift
