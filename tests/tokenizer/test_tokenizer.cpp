// load_tokenizer: file kinds, directories, and errors that name the path.
#include <fstream>

#include "engine/base/error.h"
#include "tests/support.h"
#include "tokenizer/tokenizer.h"

namespace ift {
namespace {

using test::fixture;
namespace fs = std::filesystem;

TEST_CASE("load_tokenizer picks the implementation from the path", "[tokenizer]") {
  CHECK(load_tokenizer(fixture("tokenizers/gpt2"))->files() ==
        std::vector<fs::path>{fixture("tokenizers/gpt2/tokenizer.json")});
  CHECK(load_tokenizer(fixture("tokenizers/llama2"))->vocab_size() == 32000);
  CHECK(load_tokenizer(fixture("tokenizers/gpt2/vocab.json"))->vocab_size() == 50257);
}

// Loading `path` fails with a message that holds `fragment` and names `named` (by default `path`).
void check_error_names(const fs::path& path, const std::string& fragment, fs::path named = {}) {
  if (named.empty()) named = path;
  INFO(path.string());
  try {
    load_tokenizer(path);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(named.string()) && Catch::Contains(fragment));
  }
}

TEST_CASE("loader errors throw ift::Error naming the path", "[tokenizer]") {
  const auto dir = test::temp_dir("tok-errors");
  check_error_names(dir / "missing.json", "no such file");
  check_error_names(dir / "missing.model", "no such file");
  check_error_names(dir, "holds no tokenizer.json");

  std::ofstream(dir / "corrupt.json") << "{\"model\": {\"type\": \"BPE\", \"vocab\": {";
  check_error_names(dir / "corrupt.json", "not valid JSON");
  std::ofstream(dir / "wordpiece.json") << R"({"model": {"type": "WordPiece", "vocab": {}}})";
  check_error_names(dir / "wordpiece.json", "not supported");
  std::ofstream(dir / "nomerges.json") << R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                              "pre_tokenizer": {"type": "ByteLevel"}})";
  check_error_names(dir / "nomerges.json", "not a byte-level vocabulary");
  std::ofstream(dir / "corrupt.model") << "not a protobuf";
  check_error_names(dir / "corrupt.model", "not a sentencepiece model");
  std::ofstream(dir / "tokenizer.txt") << "";
  check_error_names(dir / "tokenizer.txt", "unknown tokenizer file");

  const auto lone = test::temp_dir("tok-lone-vocab");
  fs::copy_file(fixture("tokenizers/gpt2/vocab.json"), lone / "vocab.json");
  check_error_names(lone / "vocab.json", "merges.txt is missing");
  std::ofstream(lone / "merges.txt") << "#version: 0.2\nĠ t\nbad line here\n";
  check_error_names(lone / "vocab.json", "merges.txt:3", lone / "merges.txt");
  fs::remove_all(dir);
  fs::remove_all(lone);
}

}  // namespace
}  // namespace ift
