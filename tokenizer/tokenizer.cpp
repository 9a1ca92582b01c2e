// load_tokenizer: picks the implementation from the file name (or what a directory holds).
#include "tokenizer/tokenizer.h"

#include "engine/base/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/sentencepiece.h"

namespace ift {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& path) {
  std::error_code ec;
  IFT_CHECK(fs::exists(path, ec), path.string(), ": no such file or directory");
  if (fs::is_directory(path)) {
    // The same preference as Hugging Face: the fast tokenizer file first.
    for (const char* name : {"tokenizer.json", "tokenizer.model", "vocab.json"}) {
      if (fs::is_regular_file(path / name)) return load_tokenizer(path / name);
    }
    fail(path.string(), ": directory holds no tokenizer.json, tokenizer.model or vocab.json");
  }
  const std::string name = path.filename().string();
  if (path.extension() == ".model") return load_sentencepiece(path);
  if (name == "vocab.json") {
    const fs::path merges = path.parent_path() / "merges.txt";
    IFT_CHECK(fs::is_regular_file(merges), path.string(), ": merges.txt is missing beside it (", merges.string(), ")");
    return load_bpe_vocab_merges(path, merges);
  }
  if (path.extension() == ".json") return load_bpe_tokenizer_json(path);
  fail(path.string(), ": unknown tokenizer file (expected a .model, a tokenizer.json, a vocab.json with merges.txt, "
       "or a directory holding one)");
}

}  // namespace ift
