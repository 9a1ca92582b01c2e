// A tiny tokenizer for the data tests: one token per byte (ids 0..255) plus a few special tokens,
// so expected token sequences can be written by hand and decode() is exact.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace ift::test {

class ByteTokenizer : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256, kEos = 257, kImStart = 258, kImEnd = 259, kPad = 260;

  // eos = -1 makes a tokenizer without EOS; bos = -1 one without BOS.
  explicit ByteTokenizer(int32_t eos = kEos, int32_t bos = kBos) : eos_(eos), bos_(bos) {}

  std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const override {
    return encode_with_offsets(text, parse_special).ids;
  }
  Encoding encode_with_offsets(std::string_view text, bool parse_special = false) const override {
    Encoding e;
    std::vector<int32_t>& ids = e.ids;
    for (size_t i = 0; i < text.size();) {
      bool special = false;
      if (parse_special) {
        for (int32_t id = kBos; id <= kPad; ++id) {
          const std::string& p = pieces()[id - kBos];
          if (text.substr(i, p.size()) == p) {
            ids.push_back(id);
            e.offsets.emplace_back(i, i + p.size());
            i += p.size();
            special = true;
            break;
          }
        }
      }
      if (!special) {
        e.offsets.emplace_back(i, i + 1);
        ids.push_back(static_cast<unsigned char>(text[i++]));
      }
    }
    return e;
  }
  std::string decode(std::span<const int32_t> ids) const override {
    std::string s;
    for (int32_t id : ids) s += id_to_piece(id);
    return s;
  }
  int32_t vocab_size() const override { return 261; }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return kPad; }
  int32_t unk_id() const override { return -1; }
  std::optional<int32_t> special_id(std::string_view piece) const override {
    for (int32_t id = kBos; id <= kPad; ++id)
      if (pieces()[id - kBos] == piece) return id;
    return std::nullopt;
  }
  std::string id_to_piece(int32_t id) const override {
    if (id >= 0 && id < 256) return std::string(1, static_cast<char>(id));
    if (id >= kBos && id <= kPad) return pieces()[id - kBos];
    return "<?>";
  }
  std::vector<std::filesystem::path> files() const override { return {}; }

 private:
  static const std::vector<std::string>& pieces() {
    static const std::vector<std::string> p = {"<s>", "</s>", "<|im_start|>", "<|im_end|>", "<pad>"};
    return p;
  }
  int32_t eos_, bos_;
};

// The text of the trained tokens of a sample, each maximal trained run followed by '|'.
inline std::string trained_text(const Tokenizer& tok, const std::vector<int32_t>& tokens,
                                const std::vector<uint8_t>& trained) {
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!trained[i]) continue;
    out += tok.id_to_piece(tokens[i]);
    if (i + 1 == tokens.size() || !trained[i + 1]) out += '|';
  }
  return out;
}

}  // namespace ift::test
