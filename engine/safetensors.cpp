#include "engine/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <tuple>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "engine/base/io.h"

// safetensors data is little-endian; ift reads it by memcpy, which is only right on a little-endian
// host (every platform ift targets).
static_assert(std::endian::native == std::endian::little, "ift reads safetensors data as host-endian");

namespace ift {

namespace {

// The reference implementation's cap, which keeps a corrupt length from allocating gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }
float float_of(uint32_t u) { return std::bit_cast<float>(u); }

std::string errno_text() { return std::strerror(errno); }

bool parse_dtype(std::string_view s, DType& out) {
  for (DType d : {DType::F32, DType::F16, DType::BF16}) {
    if (s == dtype_name(d)) {
      out = d;
      return true;
    }
  }
  return false;
}

// Product of dims, or false on overflow of int64 (a corrupt shape must not wrap into a small size).
bool checked_numel(const std::vector<int64_t>& shape, int64_t& out) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return false;
  }
  out = n;
  return true;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Converts `n` stored elements starting at `src` (any alignment) to fp32.
void convert_to_f32(DType dtype, const std::byte* src, size_t n, float* dst) {
  if (n == 0) return;  // dst may be null (an empty vector), which memcpy does not allow
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_float(h);
      }
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_float(h);
      }
      return;
  }
}

// Converts `n` fp32 values to `dtype`, appending the bytes to `out`.
void convert_from_f32(DType dtype, const float* src, size_t n, std::vector<std::byte>& out) {
  if (n == 0) return;  // src may be null (an empty span), which memcpy does not allow
  const size_t at = out.size();
  out.resize(at + n * dtype_size(dtype));
  std::byte* dst = out.data() + at;
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = float_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = float_to_f16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
  }
}

// An open file descriptor that closes itself.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

}  // namespace

// ---- dtypes ------------------------------------------------------------------------------------

std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
  }
  return 0;
}

float bf16_to_float(uint16_t bits) { return float_of(static_cast<uint32_t>(bits) << 16); }

uint16_t float_to_bf16(float value) {
  const uint32_t u = bits_of(value);
  // NaN: truncating could clear every mantissa bit and turn it into infinity; keep the sign and
  // the top payload bits and force the quiet bit.
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  // Round to nearest, ties to even: add just under half an ulp, plus one when the kept lsb is odd.
  // A carry out of the mantissa correctly bumps the exponent (and the largest finite values round
  // to infinity).
  const uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return float_of(sign | 0x7F800000u | (mant << 13));  // inf, NaN (payload kept)
  if (exp != 0) return float_of(sign | ((exp + 127 - 15) << 23) | (mant << 13));
  // Zero or denormal: mant * 2^-24, exact in float.
  const float magnitude = static_cast<float>(mant) * 0x1p-24f;
  return sign ? -magnitude : magnitude;
}

uint16_t float_to_f16(float value) {
  const uint32_t u = bits_of(value);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7E00u | static_cast<uint16_t>((a >> 13) & 0x3FFu);  // quiet NaN
  // 65520 is halfway between the largest half (65504) and 2^16; the tie goes to the even
  // neighbour, which is infinity.
  if (a >= 0x477FF000u) return sign | 0x7C00u;
  if (a >= 0x38800000u) {  // normal half (>= 2^-14): rebias the exponent, round 13 mantissa bits away
    uint32_t h = (a - 0x38000000u) >> 13;
    const uint32_t rest = a & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return sign | static_cast<uint16_t>(h);
  }
  // Denormal half: value / 2^-24, rounded to nearest even. The float is m * 2^(e - 150) with the
  // implicit bit in m, so the half mantissa is m >> (126 - e).
  const uint32_t e = a >> 23;
  const int shift = 126 - static_cast<int>(e);
  if (shift > 24) return sign;  // below 2^-25: rounds to zero
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  uint32_t q = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (q & 1u))) ++q;  // may carry into the smallest normal: right
  return sign | static_cast<uint16_t>(q);
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- reader ------------------------------------------------------------------------------------

SafetensorsReader::SafetensorsReader(const std::filesystem::path& path) : path_(path) {
  using nlohmann::json;
  const std::string file = path.string();

  Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  IFT_CHECK(fd.fd >= 0, file, ": cannot open safetensors file: ", errno_text());
  struct stat st {};
  IFT_CHECK(::fstat(fd.fd, &st) == 0, file, ": cannot stat: ", errno_text());
  IFT_CHECK(S_ISREG(st.st_mode), file, ": not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  IFT_CHECK(file_size >= 8, file, ": truncated safetensors file: ", file_size,
            " bytes, too short for the 8-byte header length");

  // Mapping the whole file lets read_f32 convert straight from the page cache into the caller's
  // buffer; the mapping outlives the descriptor.
  void* m = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  IFT_CHECK(m != MAP_FAILED, file, ": cannot map the file: ", errno_text());
  map_ = static_cast<const std::byte*>(m);
  map_size_ = file_size;

  // From here on, errors must release the mapping (the destructor does not run for a throwing
  // constructor).
  try {
    uint64_t header_len = 0;
    std::memcpy(&header_len, map_, 8);
    IFT_CHECK(header_len <= kMaxHeaderBytes, file, ": header length ", header_len, " exceeds the limit of ",
              kMaxHeaderBytes, " bytes (not a safetensors file, or corrupt)");
    IFT_CHECK(header_len <= file_size - 8, file, ": truncated safetensors file: header length ", header_len,
              " but only ", file_size - 8, " bytes follow");
    data_start_ = 8 + header_len;
    const uint64_t data_size = file_size - data_start_;
    const std::string_view text(reinterpret_cast<const char*>(map_ + 8), header_len);

    // The header must be a JSON object; the callback catches duplicate top-level keys, which
    // nlohmann would otherwise resolve silently (last one wins).
    std::set<std::string> seen;
    std::string duplicate;
    json header;
    try {
      header = json::parse(text, [&](int depth, json::parse_event_t event, json& key) {
        if (depth == 1 && event == json::parse_event_t::key && !seen.insert(key.get<std::string>()).second &&
            duplicate.empty())
          duplicate = key.get<std::string>();
        return true;
      });
    } catch (const json::exception& e) {
      fail(file, ": header is not valid JSON (", e.what(), ")");
    }
    IFT_CHECK(header.is_object(), file, ": header must be a JSON object, got ", header.type_name());
    IFT_CHECK(duplicate.empty(), file, ": tensor '", duplicate, "' appears twice in the header");

    for (auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        IFT_CHECK(entry.is_object(), file, ": __metadata__ must be an object of strings, got ", entry.type_name());
        for (auto& [key, value] : entry.items()) {
          IFT_CHECK(value.is_string(), file, ": __metadata__ entry '", key, "' must be a string, got ", value.dump());
          metadata_[key] = value.get<std::string>();
        }
        continue;
      }
      const std::string where = file + ": tensor '" + name + "'";
      IFT_CHECK(entry.is_object(), where, ": entry must be an object with dtype, shape and data_offsets");
      IFT_CHECK(entry.contains("dtype") && entry["dtype"].is_string(), where, ": 'dtype' is missing or not a string");
      IFT_CHECK(entry.contains("shape") && entry["shape"].is_array(), where, ": 'shape' is missing or not a list");
      IFT_CHECK(entry.contains("data_offsets") && entry["data_offsets"].is_array(), where,
                ": 'data_offsets' is missing or not a list");

      TensorInfo t;
      t.name = name;
      const std::string dtype = entry["dtype"].get<std::string>();
      IFT_CHECK(parse_dtype(dtype, t.dtype), where, ": unsupported dtype '", dtype,
                "' (ift reads F32, F16 and BF16)");
      for (const json& d : entry["shape"]) {
        IFT_CHECK(d.is_number_unsigned(), where, ": shape ", entry["shape"].dump(),
                  " must hold non-negative integers");
        IFT_CHECK(d.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), where,
                  ": shape ", entry["shape"].dump(), " is too large");
        t.shape.push_back(d.get<int64_t>());
      }
      const json& offsets = entry["data_offsets"];
      IFT_CHECK(offsets.size() == 2 && offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned(), where,
                ": data_offsets ", offsets.dump(), " must be two non-negative integers [begin, end]");
      t.begin = offsets[0].get<uint64_t>();
      t.end = offsets[1].get<uint64_t>();
      IFT_CHECK(t.begin <= t.end, where, ": data_offsets [", t.begin, ", ", t.end, "] end before they begin");

      int64_t numel = 0;
      uint64_t bytes = 0;
      IFT_CHECK(checked_numel(t.shape, numel) &&
                    !__builtin_mul_overflow(static_cast<uint64_t>(numel), dtype_size(t.dtype), &bytes),
                where, ": shape ", shape_text(t.shape), " overflows");
      IFT_CHECK(t.end - t.begin == bytes, where, ": byte count mismatch: shape ", shape_text(t.shape), " of ",
                dtype, " needs ", bytes, " bytes but data_offsets [", t.begin, ", ", t.end, "] hold ",
                t.end - t.begin);
      tensors_.push_back(std::move(t));
    }

    // The tensors must tile the data section: sorted by offset, each begins where the previous
    // ended, and the last ends at the end of the file. Empty tensors may share an offset.
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    uint64_t cursor = 0;
    const TensorInfo* previous = nullptr;
    for (const TensorInfo& t : tensors_) {
      if (t.begin < cursor)
        fail(file, ": tensor '", t.name, "' at data_offsets [", t.begin, ", ", t.end, "] overlaps tensor '",
             previous->name, "' at [", previous->begin, ", ", previous->end, "]");
      if (t.begin > cursor)
        fail(file, ": gap of ", t.begin - cursor, " bytes in the data section before tensor '", t.name,
             "' at data_offsets [", t.begin, ", ", t.end, "]",
             previous ? " (the previous tensor '" + previous->name + "' ends at " + std::to_string(cursor) + ")"
                      : std::string(" (the first tensor must begin at 0)"));
      cursor = t.end;
      previous = &t;
    }
    if (cursor > data_size)
      fail(file, ": truncated safetensors file: the tensors need ", cursor, " bytes of data but only ", data_size,
           " follow the header");
    IFT_CHECK(cursor == data_size, file, ": ", data_size - cursor,
              " bytes after the last tensor are not covered by any tensor (the data section has ", data_size,
              " bytes, the tensors end at ", cursor, ")");

    for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  } catch (...) {
    close();
    throw;
  }
}

SafetensorsReader::~SafetensorsReader() { close(); }

void SafetensorsReader::close() noexcept {
  if (map_) ::munmap(const_cast<std::byte*>(map_), map_size_);
  map_ = nullptr;
  map_size_ = 0;
}

SafetensorsReader::SafetensorsReader(SafetensorsReader&& other) noexcept
    : path_(std::move(other.path_)),
      tensors_(std::move(other.tensors_)),
      index_(std::move(other.index_)),
      metadata_(std::move(other.metadata_)),
      map_(std::exchange(other.map_, nullptr)),
      map_size_(std::exchange(other.map_size_, 0)),
      data_start_(other.data_start_) {}

SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&& other) noexcept {
  if (this != &other) {
    close();
    path_ = std::move(other.path_);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    data_start_ = other.data_start_;
  }
  return *this;
}

const TensorInfo* SafetensorsReader::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsReader::at(std::string_view name) const {
  const TensorInfo* t = find(name);
  IFT_CHECK(t != nullptr, path_.string(), ": no tensor named '", name, "' (the file holds ", tensors_.size(),
            " tensors)");
  return *t;
}

std::vector<float> SafetensorsReader::read_f32(std::string_view name) const {
  std::vector<float> out(static_cast<size_t>(at(name).numel()));
  read_f32(name, out);
  return out;
}

void SafetensorsReader::read_f32(std::string_view name, std::span<float> out) const {
  const TensorInfo& t = at(name);
  IFT_CHECK(out.size() == static_cast<uint64_t>(t.numel()), path_.string(), ": tensor '", t.name, "' has ",
            t.numel(), " elements (shape ", shape_text(t.shape), ") but the destination holds ", out.size());
  IFT_CHECK(map_ != nullptr, path_.string(), ": reader was moved from");
  convert_to_f32(t.dtype, map_ + data_start_ + t.begin, out.size(), out.data());
}

// ---- writer ------------------------------------------------------------------------------------

void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors, DType dtype,
                       const std::map<std::string, std::string>& metadata) {
  const std::string file = path.string();

  // Sorted by name, as Python's safetensors lays out tensors of one dtype.
  std::vector<const TensorToWrite*> order;
  for (const TensorToWrite& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorToWrite& t = *order[i];
    IFT_CHECK(!t.name.empty(), file, ": cannot write a tensor with an empty name");
    IFT_CHECK(t.name != "__metadata__", file, ": '__metadata__' is reserved and cannot name a tensor");
    IFT_CHECK(i == 0 || order[i - 1]->name != t.name, file, ": tensor '", t.name, "' is given twice");
    int64_t numel = 0;
    IFT_CHECK(checked_numel(t.shape, numel), file, ": tensor '", t.name, "' has invalid shape ", shape_text(t.shape));
    IFT_CHECK(t.data.size() == static_cast<uint64_t>(numel), file, ": tensor '", t.name, "' has shape ",
              shape_text(t.shape), " (", numel, " elements) but ", t.data.size(), " values were given");
    const uint64_t bytes = static_cast<uint64_t>(numel) * dtype_size(dtype);
    header[t.name] = {{"dtype", std::string(dtype_name(dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // a name or metadata string that is not UTF-8
    fail(file, ": cannot write the header (", e.what(), ")");
  }
  // Spaces (valid JSON whitespace) pad the header so the data section starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');

  AtomicFile out(path);
  const uint64_t header_len = text.size();
  out.write(&header_len, 8);
  out.write(text);
  // Convert in bounded chunks: a multi-gigabyte checkpoint is never duplicated in memory.
  constexpr size_t kChunk = 1 << 20;  // values per write
  std::vector<std::byte> buffer;
  for (const TensorToWrite* t : order) {
    for (size_t i = 0; i < t->data.size(); i += kChunk) {
      const size_t n = std::min(kChunk, t->data.size() - i);
      buffer.clear();
      convert_from_f32(dtype, t->data.data() + i, n, buffer);
      out.write(buffer.data(), buffer.size());
    }
  }
  out.commit();
}

}  // namespace ift
