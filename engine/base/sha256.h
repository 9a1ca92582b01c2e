// SHA-256 (FIPS 180-4) of a byte stream or a file, as lowercase hex: what checkpoints record of
// every file they hold, so a file changed after it was written (bit rot, a partial copy, a mixed-up
// directory) is found on load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace ift {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t bytes);
  std::string hex();  // finishes; the object is spent afterwards

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t used_ = 0;
  uint64_t bytes_ = 0;
};

std::string sha256_hex(std::string_view data);
// Reads the file in chunks; throws ift::Error naming it when it cannot be read.
std::string sha256_file(const std::filesystem::path& file);

}  // namespace ift
