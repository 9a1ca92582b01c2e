#include "data/packed_file.h"

#include <bit>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <span>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/base/error.h"
#include "engine/base/io.h"

namespace ift {

static_assert(std::endian::native == std::endian::little, "the packed file is little-endian");

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t tokenizer_hash(const Tokenizer& t) {
  const int32_t vocab = t.vocab_size();
  uint64_t h = fnv1a64(&vocab, sizeof vocab);
  for (const auto& f : t.files()) {
    std::ifstream in(f, std::ios::binary);
    IFT_CHECK(in, f.string(), ": cannot read tokenizer file to hash it");
    char buf[1 << 16];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) h = fnv1a64(buf, static_cast<size_t>(in.gcount()), h);
  }
  return h;
}

namespace {

// Section offsets, computed the same way by writer and reader.
struct Layout {
  uint64_t row_sample_begin, row_token_begin, sample_len, tokens, trained, end;
};

Layout layout(uint64_t n_rows, uint64_t n_samples, uint64_t n_tokens) {
  Layout l;
  l.row_sample_begin = sizeof(PackedHeader);
  l.row_token_begin = l.row_sample_begin + 8 * (n_rows + 1);
  l.sample_len = l.row_token_begin + 8 * (n_rows + 1);
  l.tokens = l.sample_len + 4 * n_samples;
  l.trained = l.tokens + 4 * n_tokens;
  l.end = l.trained + n_tokens;
  return l;
}

// Writes and hashes.
class HashingWriter {
 public:
  explicit HashingWriter(AtomicFile& out) : out_(out) {}
  template <class T>
  void write(std::span<const T> v) {
    if (v.empty()) return;
    out_.write(v.data(), v.size_bytes());
    hash_ = fnv1a64(v.data(), v.size_bytes(), hash_);
  }
  uint64_t hash() const { return hash_; }

 private:
  AtomicFile& out_;
  uint64_t hash_ = 0xcbf29ce484222325ull;
};

}  // namespace

void write_packed_file(const std::filesystem::path& path, const PackedMeta& meta,
                       const std::vector<std::vector<int32_t>>& rows, const std::vector<Sample>& samples) {
  // The index first; the tokens are then written straight from the samples, never gathered into
  // a second copy of the whole dataset.
  std::vector<uint64_t> row_sample_begin{0}, row_token_begin{0};
  std::vector<uint32_t> sample_len;
  uint64_t n_tokens = 0, n_trained = 0;
  for (const auto& row : rows) {
    uint64_t row_tokens = 0;
    for (int32_t s : row) {
      IFT_CHECK(s >= 0 && static_cast<size_t>(s) < samples.size(), "packed row refers to sample ", s, " of ",
                samples.size());
      const Sample& sm = samples[s];
      IFT_CHECK(sm.tokens.size() == sm.trained.size() && !sm.tokens.empty(), "sample ", s, " is empty or inconsistent");
      sample_len.push_back(static_cast<uint32_t>(sm.tokens.size()));
      for (int32_t t : sm.tokens)
        IFT_CHECK(t >= 0 && t < meta.vocab_size, "token id ", t, " is outside the vocabulary (", meta.vocab_size, ")");
      for (uint8_t t : sm.trained) n_trained += t;
      row_tokens += sm.tokens.size();
    }
    IFT_CHECK(row_tokens <= static_cast<uint64_t>(meta.seq_len), "a packed row holds ", row_tokens,
              " tokens, more than seq_len ", meta.seq_len);
    n_tokens += row_tokens;
    row_sample_begin.push_back(sample_len.size());
    row_token_begin.push_back(n_tokens);
  }

  PackedHeader h{};
  std::memcpy(h.magic, kPackedMagic, sizeof h.magic);
  h.version = kPackedVersion;
  h.header_bytes = sizeof(PackedHeader);
  h.seq_len = static_cast<uint32_t>(meta.seq_len);
  h.vocab_size = meta.vocab_size;
  h.pad_id = meta.pad_id;
  h.n_rows = rows.size();
  h.n_samples = sample_len.size();
  h.n_tokens = n_tokens;
  h.n_trained = n_trained;
  h.tokenizer_hash = meta.tokenizer_hash;
  std::strncpy(h.tokenizer_id, meta.tokenizer_id.c_str(), sizeof h.tokenizer_id - 1);

  // A temporary file beside the target, renamed into place once complete (engine/base/io.h).
  AtomicFile out(path);
  out.write(&h, sizeof h);  // the checksum is filled in last
  HashingWriter w(out);
  w.write(std::span<const uint64_t>(row_sample_begin));
  w.write(std::span<const uint64_t>(row_token_begin));
  w.write(std::span<const uint32_t>(sample_len));
  for (const auto& row : rows)
    for (int32_t s : row) w.write(std::span<const int32_t>(samples[s].tokens));
  for (const auto& row : rows)
    for (int32_t s : row) w.write(std::span<const uint8_t>(samples[s].trained));
  h.checksum = w.hash();
  out.write_at(0, &h, sizeof h);
  out.commit();
}

PackedFile::PackedFile(const std::filesystem::path& path, bool verify) : path_(path) {
  const std::string p = path.string();
  const int fd = ::open(p.c_str(), O_RDONLY);
  IFT_CHECK(fd >= 0, p, ": cannot open packed file (", std::strerror(errno), ")");
  const off_t size = ::lseek(fd, 0, SEEK_END);
  if (size < static_cast<off_t>(sizeof(PackedHeader))) {
    ::close(fd);
    fail(p, ": too short to be a packed file (", size, " bytes)");
  }
  size_ = static_cast<size_t>(size);
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  IFT_CHECK(map_ != MAP_FAILED, p, ": mmap failed (", std::strerror(errno), ")");
  try {
    const auto* base = static_cast<const unsigned char*>(map_);
    header_ = reinterpret_cast<const PackedHeader*>(base);
    IFT_CHECK(std::memcmp(header_->magic, kPackedMagic, sizeof kPackedMagic) == 0, p,
              ": not an ift packed file (bad magic)");
    IFT_CHECK(header_->version == kPackedVersion, p, ": packed file version ", header_->version,
              ", this build reads version ", kPackedVersion, " (run ift prepare again)");
    IFT_CHECK(header_->header_bytes == sizeof(PackedHeader), p, ": header size ", header_->header_bytes,
              " is not ", sizeof(PackedHeader));
    // Counts a file of this size cannot hold are refused before they enter any arithmetic (a hostile
    // n_rows near 2^61 would wrap the section offsets around to plausible values).
    const uint64_t body = size_ - sizeof(PackedHeader);
    IFT_CHECK(header_->n_rows < body / 16 && header_->n_samples <= body / 4 && header_->n_tokens <= body / 5, p,
              ": header counts (", header_->n_rows, " rows, ", header_->n_samples, " samples, ", header_->n_tokens,
              " tokens) do not fit in its ", size_, " bytes (truncated or corrupt)");
    const Layout l = layout(header_->n_rows, header_->n_samples, header_->n_tokens);
    IFT_CHECK(l.end == size_, p, ": file is ", size_, " bytes, its header describes ", l.end,
              " (truncated or corrupt)");
    if (verify) {
      const uint64_t sum = fnv1a64(base + sizeof(PackedHeader), size_ - sizeof(PackedHeader));
      IFT_CHECK(sum == header_->checksum, p, ": checksum mismatch (file corrupt)");
    }
    row_sample_begin_ = reinterpret_cast<const uint64_t*>(base + l.row_sample_begin);
    row_token_begin_ = reinterpret_cast<const uint64_t*>(base + l.row_token_begin);
    sample_len_ = reinterpret_cast<const uint32_t*>(base + l.sample_len);
    tokens_ = reinterpret_cast<const int32_t*>(base + l.tokens);
    trained_ = base + l.trained;
    IFT_CHECK(row_sample_begin_[header_->n_rows] == header_->n_samples &&
                  row_token_begin_[header_->n_rows] == header_->n_tokens,
              p, ": row index does not match the header (corrupt)");
    // The row index is trusted by every row access below: check it whole, once (a checksum does not
    // protect against a file made to be hostile).
    IFT_CHECK(row_sample_begin_[0] == 0 && row_token_begin_[0] == 0, p, ": row index does not start at 0 (corrupt)");
    for (uint64_t r = 0; r < header_->n_rows; ++r) {
      const uint64_t s0 = row_sample_begin_[r], s1 = row_sample_begin_[r + 1];
      const uint64_t t0 = row_token_begin_[r], t1 = row_token_begin_[r + 1];
      IFT_CHECK(s0 <= s1 && s1 <= header_->n_samples && t0 <= t1 && t1 <= header_->n_tokens &&
                    t1 - t0 <= header_->seq_len,
                p, ": row ", r, " of the index is out of order or out of range (corrupt)");
      uint64_t sum = 0;
      for (uint64_t i = s0; i < s1; ++i) sum += sample_len_[i];
      IFT_CHECK(sum == t1 - t0, p, ": row ", r, ": sample lengths sum to ", sum, ", the row holds ", t1 - t0,
                " tokens (corrupt)");
    }
  } catch (...) {
    ::munmap(map_, size_);
    throw;
  }
}

PackedFile::~PackedFile() {
  if (map_) ::munmap(map_, size_);
}

std::span<const uint32_t> PackedFile::row_sample_lengths(int64_t row) const {
  IFT_CHECK(row >= 0 && row < n_rows(), path_.string(), ": row ", row, " out of range (", n_rows(), " rows)");
  return {sample_len_ + row_sample_begin_[row], sample_len_ + row_sample_begin_[row + 1]};
}

std::span<const int32_t> PackedFile::row_tokens(int64_t row) const {
  IFT_CHECK(row >= 0 && row < n_rows(), path_.string(), ": row ", row, " out of range (", n_rows(), " rows)");
  return {tokens_ + row_token_begin_[row], tokens_ + row_token_begin_[row + 1]};
}

std::span<const uint8_t> PackedFile::row_trained(int64_t row) const {
  IFT_CHECK(row >= 0 && row < n_rows(), path_.string(), ": row ", row, " out of range (", n_rows(), " rows)");
  return {trained_ + row_token_begin_[row], trained_ + row_token_begin_[row + 1]};
}

}  // namespace ift
