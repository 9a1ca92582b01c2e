// Byte-level BPE: loaders for tokenizer.json and vocab.json + merges.txt, and the encoder.
//
// Pieces in these files are written through GPT-2's byte -> code point table (so that every piece
// is printable text: space is "Ġ", newline "Ċ"). Merges work on ids, so the table is only needed to
// find the 256 single-byte symbols and to turn pieces back into bytes for decode.
//
// Speed: the data pipeline tokenizes whole datasets, so the hot loop avoids strings. Merge ranks sit
// in an open-addressing table keyed on the id pair; words are merged in place (short ones by a
// rescan, long ones with a heap so a 1 MB run of spaces stays n log n); finished words are cached
// per thread, as most words of a corpus repeat.
#include "tokenizer/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstdint>
#include <fstream>
#include <queue>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "tokenizer/utf8.h"

namespace ift {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// GPT-2's table: printable Latin-1 bytes map to themselves, the other 68 bytes to 256, 257, ... in
// byte order.
std::array<char32_t, 256> byte_to_code_point() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? char32_t(b) : next++;
  }
  return table;
}

// Raw bytes of a piece written in GPT-2's table, or nullopt when it holds a code point outside it
// (such pieces, e.g. an added "<｜begin▁of▁sentence｜>", decode as their text).
std::optional<std::string> piece_to_bytes(std::string_view piece) {
  static const std::vector<int> inverse = [] {
    std::vector<int> inv(256 + 68, -1);
    const auto fwd = byte_to_code_point();
    for (int b = 0; b < 256; ++b) inv[fwd[b]] = b;
    return inv;
  }();
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    const size_t n = utf8::valid_prefix_length(piece.substr(i));
    if (n == 0) return std::nullopt;
    const auto* p = reinterpret_cast<const uint8_t*>(piece.data() + i);
    char32_t cp = n == 1 ? p[0] : n == 2 ? ((p[0] & 0x1F) << 6) | (p[1] & 0x3F) : 0x110000;
    if (n == 3) cp = ((p[0] & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    if (cp >= inverse.size() || inverse[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(inverse[cp]));
    i += n;
  }
  return out;
}

std::string code_point_string(char32_t cp) {
  std::string s;
  utf8::append(s, cp);
  return s;
}

// Merge rank and result of a pair of ids, in an open-addressing table (linear probing, power-of-two
// size, at most half full).
class PairTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t merged = 0;
  };

  void reserve(size_t n) {
    size_t size = 16;
    while (size < 2 * n) size *= 2;
    slots_.assign(size, Entry{});
    mask_ = size - 1;
  }
  // Keeps the first (lowest-rank) entry of a pair that is listed twice.
  void insert(int32_t a, int32_t b, int32_t rank, int32_t merged) {
    const uint64_t key = pack(a, b);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return;
      if (slots_[i].key == kEmpty) {
        slots_[i] = Entry{key, rank, merged};
        return;
      }
    }
  }
  const Entry* find(int32_t a, int32_t b) const {
    const uint64_t key = pack(a, b);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i];
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

// The regex as Hugging Face runs it. Its engine (Oniguruma) takes \s as the Unicode White_Space
// property; PCRE2 with UCP also counts U+180E MONGOLIAN VOWEL SEPARATOR, which stopped being a space
// in Unicode 6.3. So \s and \S are spelled out as White_Space sets (inside a class too, where a
// \S cannot be spelled this way and is refused).
std::string onig_compatible_pattern(std::string_view pattern, const std::string& where) {
  static constexpr std::string_view kSpace = R"(\t-\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        out += in_class ? std::string(kSpace) : "[" + std::string(kSpace) + "]";
      } else if (e == 'S') {
        IFT_CHECK(!in_class, where, ": \\S inside a character class is not supported in the pre-tokenizer regex");
        out += "[^" + std::string(kSpace) + "]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    out += c;
    if (!in_class && c == '[') {
      in_class = true;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // a literal ] first
    } else if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t end = pattern.find(":]", i + 2);  // a POSIX class [:alpha:]
      if (end != std::string_view::npos) {
        out.append(pattern.substr(i + 1, end + 1 - i));
        i = end + 1;
      }
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

struct AddedToken {
  std::string content;
  int32_t id;
  bool special;
};

// Everything a loader reads from the files, before the tables are built.
struct BpeFiles {
  std::vector<std::pair<std::string, int32_t>> vocab;  // piece as written -> id
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<AddedToken> added;
  std::string pattern{kGpt2SplitPattern};
  bool add_prefix_space = false;
  bool ignore_merges = false;  // a word that is itself in the vocabulary is not merged (Llama 3)
  std::string bos, eos, pad, unk;  // token contents, "" for none
  std::vector<fs::path> files;
  std::string where;  // the path named in errors
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using WordMap = std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>;

// Finished words, per thread (encode is const and called from many threads). Tagged with the
// tokenizer it belongs to: a tokenizer's serial number, never reused, unlike its address.
struct WordCache {
  uint64_t owner = 0;
  WordMap words;
};
// 64k words cover most of a corpus's running text and keep each thread's cache near 10 MB.
constexpr size_t kCacheMaxWords = 1 << 16;
constexpr size_t kCacheMaxWordBytes = 64;
std::atomic<uint64_t> next_serial{1};

class ByteLevelBpe final : public Tokenizer {
 public:
  explicit ByteLevelBpe(BpeFiles f);
  ~ByteLevelBpe() override {
    if (code_) pcre2_code_free(code_);
  }

  std::vector<int32_t> encode(std::string_view text, bool parse_special) const override;
  Encoding encode_with_offsets(std::string_view text, bool parse_special) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(id_bytes_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return pad_; }
  int32_t unk_id() const override { return unk_; }
  std::optional<int32_t> special_id(std::string_view piece) const override;
  std::string id_to_piece(int32_t id) const override;
  std::vector<fs::path> files() const override { return files_; }

 private:
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out, WordCache& cache) const;
  void merge_short(std::vector<int32_t>& symbols) const;
  void merge_long(std::vector<int32_t>& symbols) const;

  std::vector<std::string> id_bytes_;  // what each id decodes to
  std::vector<std::string> id_piece_;  // each id as written in the files ("" for holes)
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> piece_id_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> bytes_id_;  // ignore_merges only
  std::array<int32_t, 256> byte_id_{};
  PairTable merges_;
  std::vector<AddedToken> added_;
  std::array<std::vector<const AddedToken*>, 256> added_by_first_byte_;  // longest first
  std::vector<bool> is_added_;  // (vocab) id -> an added token
  pcre2_code* code_ = nullptr;
  bool add_prefix_space_, ignore_merges_;
  int32_t bos_ = -1, eos_ = -1, pad_ = -1, unk_ = -1;
  std::vector<fs::path> files_;
  uint64_t serial_ = next_serial++;
};

ByteLevelBpe::ByteLevelBpe(BpeFiles f)
    : added_(std::move(f.added)),
      add_prefix_space_(f.add_prefix_space),
      ignore_merges_(f.ignore_merges),
      files_(std::move(f.files)) {
  const std::string& where = f.where;
  int32_t size = 0;
  for (const auto& [piece, id] : f.vocab) {
    IFT_CHECK(id >= 0 && id < (1 << 30), where, ": vocabulary id ", id, " of '", piece, "' is out of range");
    size = std::max(size, id + 1);
  }
  for (const AddedToken& t : added_) {
    IFT_CHECK(t.id >= 0 && t.id < (1 << 30), where, ": added token id ", t.id, " is out of range");
    IFT_CHECK(!t.content.empty(), where, ": added token ", t.id, " has empty content");
    size = std::max(size, t.id + 1);
  }
  id_bytes_.assign(size, std::string());
  id_piece_.assign(size, std::string());
  for (const auto& [piece, id] : f.vocab) {
    const auto bytes = piece_to_bytes(piece);
    id_bytes_[id] = bytes ? *bytes : piece;
    id_piece_[id] = piece;
    piece_id_.emplace(piece, id);
    if (ignore_merges_ && bytes) bytes_id_.emplace(*bytes, id);
  }
  for (const AddedToken& t : added_) {
    id_bytes_[t.id] = t.content;
    if (id_piece_[t.id].empty()) id_piece_[t.id] = t.content;
  }

  const auto table = byte_to_code_point();
  for (int b = 0; b < 256; ++b) {
    const auto it = piece_id_.find(code_point_string(table[b]));
    IFT_CHECK(it != piece_id_.end(), where, ": not a byte-level vocabulary: no piece for byte 0x", std::hex, b,
              " ('", code_point_string(table[b]), "')");
    byte_id_[b] = it->second;
  }

  merges_.reserve(f.merges.size());
  for (size_t rank = 0; rank < f.merges.size(); ++rank) {
    const auto& [a, b] = f.merges[rank];
    const auto ia = piece_id_.find(a), ib = piece_id_.find(b), im = piece_id_.find(a + b);
    IFT_CHECK(ia != piece_id_.end() && ib != piece_id_.end() && im != piece_id_.end(), where, ": merge ", rank,
              " ('", a, "' '", b, "') uses a piece that is not in the vocabulary");
    merges_.insert(ia->second, ib->second, static_cast<int32_t>(rank), im->second);
  }

  is_added_.assign(id_bytes_.size(), false);
  for (const AddedToken& t : added_) is_added_[t.id] = true;
  for (const AddedToken& t : added_) added_by_first_byte_[static_cast<uint8_t>(t.content[0])].push_back(&t);
  for (auto& list : added_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(),
                     [](const AddedToken* x, const AddedToken* y) { return x->content.size() > y->content.size(); });
  }

  // MATCH_INVALID_UTF: bytes that are not UTF-8 never match and never stop the scan; they fall in
  // the gaps between matches, which encode as raw bytes.
  int err = 0;
  PCRE2_SIZE offset = 0;
  const std::string pattern = onig_compatible_pattern(f.pattern, where);
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset, nullptr);
  if (code_ == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(err, message, sizeof message);
    fail(where, ": cannot compile the pre-tokenizer regex at offset ", offset, ": ", reinterpret_cast<char*>(message));
  }
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is missing

  auto id_of = [&](const std::string& content, const char* role) -> int32_t {
    if (content.empty()) return -1;
    const auto id = special_id(content);
    IFT_CHECK(id.has_value(), where, ": ", role, " token '", content, "' is not in the vocabulary");
    return *id;
  };
  bos_ = id_of(f.bos, "bos");
  eos_ = id_of(f.eos, "eos");
  pad_ = id_of(f.pad, "pad");
  unk_ = id_of(f.unk, "unk");
}

// Byte-level tokens are the bytes of the text, in order: a token's range is the next len(its
// bytes) bytes, except the space add_prefix_space puts before a segment, which is in no range.
Tokenizer::Encoding ByteLevelBpe::encode_with_offsets(std::string_view text, bool parse_special) const {
  Encoding e;
  e.ids = encode(text, parse_special);
  e.offsets.reserve(e.ids.size());
  uint32_t pos = 0;
  bool segment_start = true;
  for (const int32_t id : e.ids) {
    const bool added = parse_special && is_added_[id] && text.substr(pos).starts_with(id_bytes_[id]);
    auto n = static_cast<uint32_t>(id_bytes_[id].size());
    if (!added && segment_start && add_prefix_space_ && pos < text.size() && text[pos] != ' ' && n > 0) --n;
    e.offsets.emplace_back(pos, pos + n);
    pos += n;
    segment_start = added;
  }
  IFT_ASSERT(pos == text.size());
  return e;
}

std::vector<int32_t> ByteLevelBpe::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (!parse_special || added_.empty()) {
    encode_segment(text, out);
    return out;
  }
  // Leftmost, then longest, added token; the text between them is encoded on its own, as Hugging
  // Face splits on added tokens before pre-tokenizing.
  size_t begin = 0;
  for (size_t i = 0; i < text.size();) {
    const AddedToken* found = nullptr;
    for (const AddedToken* t : added_by_first_byte_[static_cast<uint8_t>(text[i])]) {
      if (text.substr(i).starts_with(t->content)) {
        found = t;
        break;
      }
    }
    if (found == nullptr) {
      ++i;
      continue;
    }
    encode_segment(text.substr(begin, i - begin), out);
    out.push_back(found->id);
    i += found->content.size();
    begin = i;
  }
  encode_segment(text.substr(begin), out);
  return out;
}

void ByteLevelBpe::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string prefixed;
  if (add_prefix_space_ && text[0] != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  thread_local WordCache cache;
  if (cache.owner != serial_) {
    cache.words.clear();
    cache.owner = serial_;
  }
  // One match-data block per thread, grown to fit whichever pattern uses it.
  struct MatchData {
    pcre2_match_data* data = pcre2_match_data_create(4, nullptr);
    ~MatchData() { pcre2_match_data_free(data); }
  };
  thread_local MatchData md;

  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap = 0;  // start of the bytes not yet emitted
  size_t pos = 0;  // where the next search starts
  while (pos < text.size()) {
    const int rc = pcre2_match(code_, subject, text.size(), pos, 0, md.data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      fail("byte-level BPE: pre-tokenizer regex failed: ", reinterpret_cast<char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.data);
    const size_t start = ov[0], end = ov[1];
    if (end == start) {  // an empty match (possible with a custom pattern): step past it
      pos = start + 1;
      continue;
    }
    if (start > gap) encode_word(text.substr(gap, start - gap), out, cache);
    encode_word(text.substr(start, end - start), out, cache);
    gap = pos = end;
  }
  if (gap < text.size()) encode_word(text.substr(gap), out, cache);
}

void ByteLevelBpe::encode_word(std::string_view word, std::vector<int32_t>& out, WordCache& cache) const {
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    const auto it = cache.words.find(word);
    if (it != cache.words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  const auto whole = ignore_merges_ ? bytes_id_.find(word) : bytes_id_.end();
  if (whole != bytes_id_.end()) {
    symbols.push_back(whole->second);
  } else {
    symbols.resize(word.size());
    for (size_t i = 0; i < word.size(); ++i) symbols[i] = byte_id_[static_cast<uint8_t>(word[i])];
    if (symbols.size() <= 32) {
      merge_short(symbols);
    } else {
      merge_long(symbols);
    }
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cacheable) {
    if (cache.words.size() >= kCacheMaxWords) cache.words.clear();
    cache.words.emplace(std::string(word), std::move(symbols));
  }
}

// Rescan for the lowest-ranked pair (leftmost among equals) and merge it, until none is left:
// quadratic, but for a few symbols faster than any structure.
void ByteLevelBpe::merge_short(std::vector<int32_t>& s) const {
  while (s.size() > 1) {
    int32_t best_rank = INT32_MAX, merged = 0;
    size_t best = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const PairTable::Entry* e = merges_.find(s[i], s[i + 1]);
      if (e != nullptr && e->rank < best_rank) {
        best_rank = e->rank;
        merged = e->merged;
        best = i;
      }
    }
    if (best_rank == INT32_MAX) return;
    s[best] = merged;
    s.erase(s.begin() + best + 1);
  }
}

// The same merges in the same order (lowest rank, then leftmost) for long words: symbols in a
// linked list, candidate pairs in a min-heap; entries made stale by earlier merges are skipped.
void ByteLevelBpe::merge_long(std::vector<int32_t>& s) const {
  const int n = static_cast<int>(s.size());
  std::vector<int> next(n), prev(n);
  for (int i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  struct Candidate {
    int32_t rank;
    int pos;  // left symbol; positions keep text order, so the smaller one is the leftmost
    int32_t left, right;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int i) {
    if (i < 0 || next[i] < 0) return;
    if (const PairTable::Entry* e = merges_.find(s[i], s[next[i]])) heap.push({e->rank, i, s[i], s[next[i]]});
  };
  std::vector<bool> alive(n, true);
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int i = c.pos, j = alive[i] ? next[i] : -1;
    if (j < 0 || s[i] != c.left || s[j] != c.right) continue;  // stale
    s[i] = merges_.find(c.left, c.right)->merged;
    alive[j] = false;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    push(prev[i]);
    push(i);
  }
  size_t w = 0;
  for (int i = 0; i >= 0; i = next[i]) s[w++] = s[i];
  s.resize(w);
}

std::string ByteLevelBpe::decode(std::span<const int32_t> ids) const {
  std::string bytes;
  for (const int32_t id : ids) {
    IFT_CHECK(id >= 0 && id < vocab_size(), "decode: token id ", id, " is out of range [0, ", vocab_size(), ")");
    bytes.append(id_bytes_[id]);
  }
  return utf8::sanitize(bytes);
}

std::optional<int32_t> ByteLevelBpe::special_id(std::string_view piece) const {
  for (const AddedToken& t : added_) {
    if (t.content == piece) return t.id;
  }
  const auto it = piece_id_.find(piece);
  if (it != piece_id_.end()) return it->second;
  return std::nullopt;
}

std::string ByteLevelBpe::id_to_piece(int32_t id) const {
  IFT_CHECK(id >= 0 && id < vocab_size(), "id_to_piece: token id ", id, " is out of range [0, ", vocab_size(), ")");
  return id_piece_[id];
}

json read_json(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  IFT_CHECK(in, file.string(), ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(file.string(), ": not valid JSON (", e.what(), ")");
  }
}

std::vector<std::pair<std::string, int32_t>> read_vocab(const json& vocab, const std::string& where) {
  IFT_CHECK(vocab.is_object(), where, ": the vocabulary must be an object {piece: id}");
  std::vector<std::pair<std::string, int32_t>> out;
  out.reserve(vocab.size());
  for (const auto& [piece, id] : vocab.items()) {
    IFT_CHECK(id.is_number_integer(), where, ": vocabulary entry '", piece, "' has a non-integer id");
    out.emplace_back(piece, id.get<int32_t>());
  }
  return out;
}

// A special token name in tokenizer_config.json: a string, an AddedToken object, or null.
std::string token_content(const json& config, const char* key) {
  if (!config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

// The pre-tokenizer of a tokenizer.json: sets the split regex and add_prefix_space, or fails on
// anything this encoder would get wrong.
void read_pre_tokenizer(const json& pre, BpeFiles& f) {
  auto byte_level = [&](const json& p, bool regex_expected) {
    f.add_prefix_space = p.value("add_prefix_space", false);
    const bool use_regex = p.value("use_regex", true);
    IFT_CHECK(use_regex == regex_expected, f.where, ": ByteLevel pre-tokenizer with use_regex=", use_regex,
              " is not supported here");
  };
  IFT_CHECK(pre.is_object() && pre.contains("type"), f.where, ": model is BPE but there is no pre_tokenizer (",
            "only byte-level BPE is supported)");
  const std::string type = pre["type"].get<std::string>();
  if (type == "ByteLevel") {
    byte_level(pre, true);
    return;
  }
  // Llama 3 / Qwen: Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)].
  const json* list = pre.contains("pretokenizers") ? &pre["pretokenizers"] : nullptr;
  IFT_CHECK(type == "Sequence" && list && list->is_array() && list->size() == 2 && (*list)[0].value("type", "") == "Split" &&
                (*list)[1].value("type", "") == "ByteLevel",
            f.where, ": unsupported pre_tokenizer ", pre.dump().substr(0, 200),
            " (supported: ByteLevel, or Sequence of a regex Split and ByteLevel)");
  const json& split = (*list)[0];
  IFT_CHECK(split.contains("pattern") && split["pattern"].contains("Regex") && split.value("behavior", "") == "Isolated" &&
                !split.value("invert", false),
            f.where, ": unsupported Split pre-tokenizer ", split.dump().substr(0, 200),
            " (supported: a Regex pattern, behavior Isolated, invert false)");
  f.pattern = split["pattern"]["Regex"].get<std::string>();
  byte_level((*list)[1], false);
}

}  // namespace

std::unique_ptr<Tokenizer> load_bpe_tokenizer_json(const fs::path& file) {
  const json j = read_json(file);
  BpeFiles f;
  f.where = file.string();
  f.files = {file};
  try {
    IFT_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), f.where, ": no \"model\" object");
    const json& model = j["model"];
    const std::string type = model.value("type", "");
    IFT_CHECK(type == "BPE", f.where, ": model type '", type, "' is not supported (only byte-level BPE; ",
              "use a sentencepiece .model for unigram models)");
    IFT_CHECK(model.value("continuing_subword_prefix", json()).is_null() ||
                  model["continuing_subword_prefix"].get<std::string>().empty(),
              f.where, ": continuing_subword_prefix is not supported");
    IFT_CHECK(model.value("end_of_word_suffix", json()).is_null() || model["end_of_word_suffix"].get<std::string>().empty(),
              f.where, ": end_of_word_suffix is not supported");
    IFT_CHECK(!j.contains("normalizer") || j["normalizer"].is_null(), f.where, ": normalizer ",
              j["normalizer"].dump().substr(0, 100), " is not supported");
    IFT_CHECK(model.contains("vocab"), f.where, ": model.vocab is missing");
    f.vocab = read_vocab(model["vocab"], f.where);
    IFT_CHECK(model.contains("merges") && model["merges"].is_array(), f.where, ": model.merges is missing");
    for (const json& m : model["merges"]) {
      if (m.is_string()) {  // "a b": pieces never hold a space (it is written Ġ)
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        IFT_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, f.where, ": merge '", s,
                  "' is not two pieces separated by one space");
        f.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else {
        IFT_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), f.where, ": merge ",
                  m.dump(), " is neither \"a b\" nor [a, b]");
        f.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      }
    }
    f.ignore_merges = model.value("ignore_merges", false);
    read_pre_tokenizer(j.value("pre_tokenizer", json()), f);
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& t : j["added_tokens"]) {
        IFT_CHECK(t.contains("id") && t.contains("content"), f.where, ": added token without id or content");
        f.added.push_back({t["content"].get<std::string>(), t["id"].get<int32_t>(), t.value("special", false)});
      }
    }
    if (!model.value("unk_token", json()).is_null()) f.unk = model["unk_token"].get<std::string>();
  } catch (const json::exception& e) {
    fail(f.where, ": unexpected structure (", e.what(), ")");
  }

  const fs::path config_file = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_file)) {
    const json config = read_json(config_file);
    f.files.push_back(config_file);
    f.bos = token_content(config, "bos_token");
    f.eos = token_content(config, "eos_token");
    f.pad = token_content(config, "pad_token");
    const std::string unk = token_content(config, "unk_token");
    if (!unk.empty()) f.unk = unk;
  } else {
    for (const AddedToken& t : f.added) {
      if (t.content == "<|endoftext|>") f.bos = f.eos = t.content;
    }
  }
  return std::make_unique<ByteLevelBpe>(std::move(f));
}

std::unique_ptr<Tokenizer> load_bpe_vocab_merges(const fs::path& vocab_json, const fs::path& merges_txt) {
  BpeFiles f;
  f.where = vocab_json.string();
  f.files = {vocab_json, merges_txt};
  f.vocab = read_vocab(read_json(vocab_json), f.where);

  std::ifstream in(merges_txt, std::ios::binary);
  IFT_CHECK(in, merges_txt.string(), ": cannot open");
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (number == 1 && line.starts_with("#version"))) continue;
    const size_t sp = line.find(' ');
    IFT_CHECK(sp != std::string::npos && line.find(' ', sp + 1) == std::string::npos, merges_txt.string(), ":",
              number, ": expected two pieces separated by one space, got '", line, "'");
    f.merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  for (const auto& [piece, id] : f.vocab) {
    if (piece == "<|endoftext|>") {
      f.added.push_back({piece, id, true});
      f.bos = f.eos = piece;
    }
  }
  return std::make_unique<ByteLevelBpe>(std::move(f));
}

}  // namespace ift
