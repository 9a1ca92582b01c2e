// The packed file: tokenized, packed rows ready for training, read by memory mapping.
//
// Layout (little-endian; docs/data.md has the table):
//   PackedHeader (256 bytes)
//   row_sample_begin  u64[n_rows + 1]   row r holds samples [row_sample_begin[r], row_sample_begin[r+1])
//   row_token_begin   u64[n_rows + 1]   and tokens [row_token_begin[r], row_token_begin[r+1])
//   sample_len        u32[n_samples]    in row order; a row's lengths sum to its token count (<= seq_len)
//   tokens            i32[n_tokens]     rows back to back, no padding stored
//   trained           u8[n_tokens]      1 = the token is a training target (data/template.h)
// The checksum is FNV-1a 64 over every byte after the header. The file is written to a temporary
// name and renamed into place, so a reader never sees half a file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "data/template.h"

namespace ift {

inline constexpr char kPackedMagic[8] = {'I', 'F', 'T', 'P', 'A', 'C', 'K', '\0'};
inline constexpr uint32_t kPackedVersion = 1;

struct PackedHeader {
  char magic[8];               // kPackedMagic
  uint32_t version;            // kPackedVersion
  uint32_t header_bytes;       // sizeof(PackedHeader)
  uint32_t seq_len;            // tokens per row, padding included
  int32_t vocab_size;          // of the tokenizer that made the tokens
  int32_t pad_id;              // token the loader pads rows with (never trained)
  uint32_t reserved0;
  uint64_t n_rows;
  uint64_t n_samples;
  uint64_t n_tokens;           // real tokens (no padding)
  uint64_t n_trained;          // tokens with trained = 1
  uint64_t tokenizer_hash;     // FNV-1a 64 of the tokenizer's files; a mismatch at train time is an error
  uint64_t checksum;           // FNV-1a 64 of everything after the header
  char tokenizer_id[128];      // the tokenizer's description, NUL-padded, for messages
  char reserved[48];
};
static_assert(sizeof(PackedHeader) == 256);

// What the writer needs besides the rows.
struct PackedMeta {
  int32_t seq_len = 0;
  int32_t vocab_size = 0;
  int32_t pad_id = 0;
  uint64_t tokenizer_hash = 0;
  std::string tokenizer_id;
};

// FNV-1a 64, continuing from `h`.
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull);
// The hash of a tokenizer's files (their bytes, in order) and vocabulary size.
uint64_t tokenizer_hash(const Tokenizer& t);

// Writes `rows` (indices into `samples`) atomically to `path`. Throws ift::Error on I/O failure,
// leaving no file at `path` (an existing one is kept unchanged).
void write_packed_file(const std::filesystem::path& path, const PackedMeta& meta,
                       const std::vector<std::vector<int32_t>>& rows, const std::vector<Sample>& samples);

// A packed file mapped read-only. Opening checks the magic, version, sizes against the file
// length and (unless verify is false) the checksum.
class PackedFile {
 public:
  explicit PackedFile(const std::filesystem::path& path, bool verify = true);
  ~PackedFile();
  PackedFile(const PackedFile&) = delete;
  PackedFile& operator=(const PackedFile&) = delete;

  const PackedHeader& header() const { return *header_; }
  const std::filesystem::path& path() const { return path_; }
  int64_t n_rows() const { return static_cast<int64_t>(header_->n_rows); }
  int32_t seq_len() const { return static_cast<int32_t>(header_->seq_len); }

  std::span<const uint32_t> row_sample_lengths(int64_t row) const;
  std::span<const int32_t> row_tokens(int64_t row) const;
  std::span<const uint8_t> row_trained(int64_t row) const;

 private:
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  const PackedHeader* header_ = nullptr;
  const uint64_t* row_sample_begin_ = nullptr;
  const uint64_t* row_token_begin_ = nullptr;
  const uint32_t* sample_len_ = nullptr;
  const int32_t* tokens_ = nullptr;
  const uint8_t* trained_ = nullptr;
};

}  // namespace ift
