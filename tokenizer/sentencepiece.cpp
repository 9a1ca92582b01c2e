// The sentencepiece tokenizer: a thin layer over SentencePieceProcessor that adds special-token
// parsing, range checks on decode and ift's error type.
#include "tokenizer/sentencepiece.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "engine/base/error.h"
#include "tokenizer/utf8.h"

namespace ift {

namespace {

namespace fs = std::filesystem;

class Sentencepiece final : public Tokenizer {
 public:
  explicit Sentencepiece(const fs::path& file) : file_(file) {
    IFT_CHECK(fs::is_regular_file(file), file.string(), ": no such file");
    const auto status = sp_.Load(file.string());
    IFT_CHECK(status.ok(), file.string(), ": not a sentencepiece model (", status.ToString(), ")");
    for (int id = 0; id < sp_.GetPieceSize(); ++id) {
      if (sp_.IsControl(id)) control_.push_back({sp_.IdToPiece(id), id});
    }
    std::sort(control_.begin(), control_.end(),
              [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  }

  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override {
    std::vector<int32_t> out;
    if (!parse_special || control_.empty()) {
      encode_segment(text, out);
      return out;
    }
    size_t begin = 0;
    for (size_t i = 0; i < text.size();) {
      const auto hit = std::find_if(control_.begin(), control_.end(),
                                    [&](const auto& c) { return text.substr(i).starts_with(c.first); });
      if (hit == control_.end()) {
        ++i;
        continue;
      }
      encode_segment(text.substr(begin, i - begin), out);
      out.push_back(hit->second);
      i += hit->first.size();
      begin = i;
    }
    encode_segment(text.substr(begin), out);
    return out;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::vector<int> v(ids.begin(), ids.end());
    for (const int id : v) {
      IFT_CHECK(id >= 0 && id < vocab_size(), "decode: token id ", id, " is out of range [0, ", vocab_size(), ")");
    }
    std::string text;
    const auto status = sp_.Decode(v, &text);
    IFT_CHECK(status.ok(), file_.string(), ": decode failed (", status.ToString(), ")");
    return utf8::sanitize(text);
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  int32_t bos_id() const override { return sp_.bos_id(); }
  int32_t eos_id() const override { return sp_.eos_id(); }
  int32_t pad_id() const override { return sp_.pad_id(); }
  int32_t unk_id() const override { return sp_.unk_id(); }

  std::optional<int32_t> special_id(std::string_view piece) const override {
    const int id = sp_.PieceToId(absl::string_view(piece.data(), piece.size()));
    // PieceToId answers unk for a piece it does not know.
    if (id < 0 || (id == sp_.unk_id() && sp_.IdToPiece(id) != piece)) return std::nullopt;
    return id;
  }

  std::string id_to_piece(int32_t id) const override {
    IFT_CHECK(id >= 0 && id < vocab_size(), "id_to_piece: token id ", id, " is out of range [0, ", vocab_size(), ")");
    return sp_.IdToPiece(id);
  }

  std::vector<fs::path> files() const override { return {file_}; }

 private:
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    std::vector<int> ids;
    const auto status = sp_.Encode(absl::string_view(text.data(), text.size()), &ids);
    IFT_CHECK(status.ok(), file_.string(), ": encode failed (", status.ToString(), ")");
    out.insert(out.end(), ids.begin(), ids.end());
  }

  fs::path file_;
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<std::pair<std::string, int32_t>> control_;  // longest first
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const fs::path& model_file) {
  return std::make_unique<Sentencepiece>(model_file);
}

void train_sentencepiece(const SentencepieceTrainOptions& o) {
  IFT_CHECK(!o.inputs.empty(), "tokenizer training: no input files");
  IFT_CHECK(!o.out_prefix.empty(), "tokenizer training: no output prefix");
  IFT_CHECK(o.model_type == "bpe" || o.model_type == "unigram", "tokenizer training: model type '", o.model_type,
            "' is not bpe or unigram");
  IFT_CHECK(o.vocab_size > 0, "tokenizer training: vocab size must be positive, got ", o.vocab_size);
  std::string inputs;
  for (const fs::path& p : o.inputs) {
    IFT_CHECK(fs::is_regular_file(p), p.string(), ": no such file");
    // The trainer takes one comma-separated list.
    IFT_CHECK(p.string().find(',') == std::string::npos, p.string(), ": the sentencepiece trainer cannot read a path "
              "with a comma in it");
    if (!inputs.empty()) inputs += ',';
    inputs += p.string();
  }
  std::string symbols;
  for (const std::string& s : o.user_defined_symbols) {
    IFT_CHECK(!s.empty() && s.find(',') == std::string::npos, "tokenizer training: user-defined symbol '", s,
              "' is empty or holds a comma");
    if (!symbols.empty()) symbols += ',';
    symbols += s;
  }
  const fs::path dir = o.out_prefix.parent_path();
  IFT_CHECK(dir.empty() || fs::is_directory(dir), dir.string(), ": output directory does not exist");
  const int threads = o.num_threads > 0 ? o.num_threads : std::max(1u, std::thread::hardware_concurrency());
  const std::unordered_map<std::string, std::string> args = {
      {"input", inputs},
      {"model_prefix", o.out_prefix.string()},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"model_type", o.model_type},
      {"character_coverage", std::to_string(o.character_coverage)},
      {"input_sentence_size", std::to_string(o.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", std::to_string(o.max_sentence_length)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"remove_extra_whitespaces", "false"},
      {"normalization_rule_name", "identity"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", o.with_pad ? "3" : "-1"},
      {"user_defined_symbols", symbols},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", o.quiet ? "1" : "0"},
  };
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  IFT_CHECK(status.ok(), o.out_prefix.string(), ".model: training failed (", status.ToString(), ")");
}

}  // namespace ift
