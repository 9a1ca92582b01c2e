// The sentencepiece tokenizer: a thin layer over SentencePieceProcessor that adds special-token
// parsing, range checks on decode and ift's error type.
#include "tokenizer/sentencepiece.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <fstream>

#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "engine/base/error.h"
#include "tokenizer/utf8.h"

namespace ift {

namespace {

namespace fs = std::filesystem;

// The serialized model with normalizer_spec.add_dummy_prefix = false: a second field 3 appended
// to the NormalizerSpec (field 3 of ModelProto), since the last value of a protobuf scalar wins.
// Done on the wire because Debian's libsentencepiece-dev ships no generated proto headers.
std::string without_dummy_prefix(const std::string& model, const fs::path& file) {
  auto varint = [&](size_t& i) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      IFT_CHECK(i < model.size(), file.string(), ": truncated model proto");
      const auto b = static_cast<uint8_t>(model[i++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail(file.string(), ": bad varint in the model proto");
  };
  auto put_varint = [](std::string& out, uint64_t v) {
    while (v >= 0x80) {
      out += static_cast<char>((v & 0x7F) | 0x80);
      v >>= 7;
    }
    out += static_cast<char>(v);
  };
  std::string out;
  bool patched = false;
  for (size_t i = 0; i < model.size();) {
    const size_t field_start = i;
    const uint64_t tag = varint(i);
    const int wire = static_cast<int>(tag & 7);
    if (wire == 0) {
      varint(i);
    } else if (wire == 1 || wire == 5) {
      i += wire == 1 ? 8 : 4;
    } else if (wire == 2) {
      const uint64_t len = varint(i);
      IFT_CHECK(i + len <= model.size(), file.string(), ": truncated model proto");
      if (tag >> 3 == 3) {
        put_varint(out, tag);
        put_varint(out, len + 2);
        out.append(model, i, len);
        out += '\x18';  // field 3 (add_dummy_prefix), varint
        out += '\x00';  // false
        i += len;
        patched = true;
        continue;
      }
      i += len;
    } else {
      fail(file.string(), ": unsupported wire type ", wire, " in the model proto");
    }
    out.append(model, field_start, i - field_start);
  }
  IFT_CHECK(patched, file.string(), ": the model proto has no normalizer_spec");
  return out;
}

// transformers' "legacy" flag of a Llama/Mistral tokenizer_config.json beside the model: true (or
// absent) prepends the dummy-prefix space to every text segment between special tokens, false only
// to a segment at the start of the text (Metaspace prepend_scheme "first", transformers 5's default).
bool read_legacy(const fs::path& model_file) {
  const fs::path config = model_file.parent_path() / "tokenizer_config.json";
  if (!fs::is_regular_file(config)) return true;
  std::ifstream in(config);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(config.string(), ": not valid JSON (", e.what(), ")");
  }
  return !(j.contains("legacy") && j["legacy"].is_boolean() && !j["legacy"].get<bool>());
}

class Sentencepiece final : public Tokenizer {
 public:
  explicit Sentencepiece(const fs::path& file) : file_(file) {
    IFT_CHECK(fs::is_regular_file(file), file.string(), ": no such file");
    const auto status = sp_.Load(file.string());
    IFT_CHECK(status.ok(), file.string(), ": not a sentencepiece model (", status.ToString(), ")");
    legacy_ = read_legacy(file);
    {
      const auto st = sp_no_prefix_.LoadFromSerializedProto(without_dummy_prefix(sp_.serialized_model_proto(), file));
      IFT_CHECK(st.ok(), file.string(), ": cannot reload without the dummy prefix (", st.ToString(), ")");
    }
    if (fs::is_regular_file(file.parent_path() / "tokenizer_config.json")) config_ = file.parent_path() / "tokenizer_config.json";
    for (int id = 0; id < sp_.GetPieceSize(); ++id) {
      if (sp_.IsControl(id)) control_.push_back({sp_.IdToPiece(id), id});
    }
    std::sort(control_.begin(), control_.end(),
              [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  }

  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override {
    return encode_with_offsets(text, parse_special).ids;
  }

  Encoding encode_with_offsets(std::string_view text, bool parse_special) const override {
    Encoding out;
    if (!parse_special || control_.empty()) {
      encode_segment(text, 0, false, out);
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
      encode_segment(text.substr(begin, i - begin), begin, true, out);
      out.ids.push_back(hit->second);
      out.offsets.emplace_back(i, i + hit->first.size());
      i += hit->first.size();
      begin = i;
    }
    encode_segment(text.substr(begin), begin, true, out);
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

  std::vector<fs::path> files() const override {
    if (config_.empty()) return {file_};
    return {file_, config_};
  }

 private:
  // `text` starts at byte `at` of the whole text; its pieces' ranges are shifted by it. With
  // `hf` (parse_special, the chat-template path) a segment that already starts with a space gets
  // no dummy prefix, as Hugging Face's Metaspace pre-tokenizer does.
  void encode_segment(std::string_view text, size_t at, bool hf, Encoding& out) const {
    if (text.empty()) return;
    const bool prefix = (legacy_ || at == 0) && !(hf && text[0] == ' ');
    const auto& sp = prefix ? sp_ : sp_no_prefix_;
    sentencepiece::ImmutableSentencePieceText spt;
    const auto status = sp.Encode(absl::string_view(text.data(), text.size()), spt.mutable_proto());
    IFT_CHECK(status.ok(), file_.string(), ": encode failed (", status.ToString(), ")");
    for (const auto& p : spt.pieces()) {
      out.ids.push_back(static_cast<int32_t>(p.id()));
      out.offsets.emplace_back(static_cast<uint32_t>(at + p.begin()), static_cast<uint32_t>(at + p.end()));
    }
  }

  fs::path file_, config_;
  bool legacy_ = true;
  sentencepiece::SentencePieceProcessor sp_, sp_no_prefix_;
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
