// Reading and writing safetensors files, the checkpoint format of Hugging Face.
//
// Layout: an unsigned 64-bit little-endian header length N, N bytes of JSON
//   {"__metadata__": {"key": "value", ...}?, "name": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}, ...}
// then the data section: every tensor row-major and little-endian, at byte offsets [b, e) relative
// to the start of the data section. The tensors tile the data section exactly: no gaps, no overlaps,
// nothing left over.
//
// The reader validates a file as strictly as the reference implementation (the Rust crate behind
// Python's `safetensors`) and names the file, and the tensor where there is one, in every error.
// It memory-maps the file, so a multi-gigabyte checkpoint is read from the page cache straight into
// the caller's buffer, with one conversion pass and no intermediate copy.
//
// ift computes in fp32 on the CPU, so the reader hands out fp32 whatever the stored dtype (F32, F16,
// BF16) and the writer takes fp32 and stores any of the three.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ift {

// The stored element types ift reads and writes. Others (I64, F64, F8_*, ...) are rejected by name.
enum class DType { F32, F16, BF16 };

std::string_view dtype_name(DType);  // "F32", "F16", "BF16", as spelled in safetensors headers
size_t dtype_size(DType);            // bytes per element: 4, 2, 2

// bfloat16 <-> float. Narrowing rounds to nearest, ties to even (as torch does); values beyond the
// bf16 range round to infinity; NaN stays NaN (quiet, sign kept); denormals are kept.
float bf16_to_float(uint16_t bits);
uint16_t float_to_bf16(float value);

// IEEE binary16 <-> float. Narrowing rounds to nearest, ties to even; |x| >= 65520 becomes infinity;
// results below 2^-14 become half denormals (or zero); NaN stays NaN (quiet, sign kept).
float f16_to_float(uint16_t bits);
uint16_t float_to_f16(float value);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;   // empty for a scalar
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data section, end exclusive

  int64_t numel() const;  // product of shape; 1 for a scalar, 0 if any dimension is 0
};

// An open, validated safetensors file. The file stays mapped while the reader lives; it is movable
// but not copyable. Changing the file on disk while a reader has it open is undefined (as for any
// mapped file); checkpoints written by write_safetensors replace the file by rename, which is safe.
class SafetensorsReader {
 public:
  // Reads and validates the header; throws ift::Error naming the file on any problem.
  explicit SafetensorsReader(const std::filesystem::path& path);
  ~SafetensorsReader();
  SafetensorsReader(SafetensorsReader&& other) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&& other) noexcept;
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Sorted by data offset, i.e. in the order the tensors lie in the file.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when the file has no tensor of that name.
  const TensorInfo* find(std::string_view name) const;
  // Throws ift::Error naming the tensor and the file when absent.
  const TensorInfo& at(std::string_view name) const;

  // The tensor's values converted to fp32 (exact for F16 and BF16).
  std::vector<float> read_f32(std::string_view name) const;
  // Same, into a caller's buffer; out.size() must equal the tensor's numel.
  void read_f32(std::string_view name, std::span<float> out) const;

  // The "__metadata__" entries; empty when the file has none.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  void close() noexcept;

  std::filesystem::path path_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
  const std::byte* map_ = nullptr;  // the whole file, mapped read-only
  size_t map_size_ = 0;
  size_t data_start_ = 0;  // 8 + header length
};

struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  std::span<const float> data;  // numel(shape) values, row-major
};

// Writes `tensors` as a safetensors file at `path`, converting from fp32 to `dtype`.
//
// Atomic: the file is written under a temporary name in the same directory, flushed to disk
// (fsync), then renamed over `path`, and the directory is synced; a crash leaves either the old file
// or the complete new one, never a half-written one.
// Like Python's `safetensors.save_file`, tensors are laid out in order of name and the header is
// padded with spaces to a multiple of 8 bytes (so the data section starts 8-byte aligned); the
// `__metadata__` entry is written first, and only when `metadata` is non-empty.
// Throws ift::Error naming the path (and the tensor) on duplicate or empty names, a data size that
// does not match the shape, or any I/O failure.
void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       DType dtype = DType::F32, const std::map<std::string, std::string>& metadata = {});

}  // namespace ift
