// The tokenizer interface the data pipeline and the tools use.
//
// Two implementations: sentencepiece .model files (through libsentencepiece) and byte-level BPE
// (Hugging Face tokenizer.json, or GPT-2's vocab.json + merges.txt), written here. encode() never
// adds BOS/EOS and never turns text like "<|endoftext|>" into a special token: templates insert
// special tokens by id (special_id), so user text cannot forge them unless parse_special is asked.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ift {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`. With parse_special, added/special tokens written in the text are
  // recognised (used for template strings, never for user data); without it none is, special or
  // not. Any byte string encodes (see docs/tokenizers.md for what happens to invalid UTF-8).
  virtual std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const = 0;
  // The same ids as encode(text, parse_special), with the byte range [begin, end) of `text` each
  // token came from (Hugging Face's offsets, in bytes): the loss mask of a rendered chat template
  // is found from character spans through them. A space the tokenizer adds itself (a dummy prefix)
  // belongs to no byte, so a token's range may be empty; byte-fallback pieces of one character
  // share its range.
  struct Encoding {
    std::vector<int32_t> ids;
    std::vector<std::pair<uint32_t, uint32_t>> offsets;  // (len(ids)) byte ranges in text
  };
  virtual Encoding encode_with_offsets(std::string_view text, bool parse_special = false) const = 0;
  // Text of `ids`; never throws on any id sequence in range, invalid UTF-8 is replaced (U+FFFD per
  // maximal ill-formed subpart, as Python's errors="replace"). An id outside [0, vocab_size())
  // throws ift::Error.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the tokenizer has none
  virtual int32_t eos_id() const = 0;  // -1 when the tokenizer has none
  virtual int32_t pad_id() const = 0;  // -1 when the tokenizer has none
  virtual int32_t unk_id() const = 0;  // -1 when the tokenizer has none
  // Id of a special/added token or any piece written exactly as in the vocabulary ("<|im_start|>").
  virtual std::optional<int32_t> special_id(std::string_view piece) const = 0;
  virtual std::string id_to_piece(int32_t id) const = 0;
  // The files that make up this tokenizer, to copy beside a checkpoint.
  virtual std::vector<std::filesystem::path> files() const = 0;
};

// Loads a `.model`, a `tokenizer.json`, a `vocab.json` (with `merges.txt` beside it), or a directory
// holding one of them. Throws ift::Error naming the path on anything it cannot read.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

}  // namespace ift
