// What every libFuzzer harness of tests/fuzz shares. A harness feeds one input to one reader and
// catches ift::Error, the one way bad input may end; anything else (a crash, a sanitizer report, an
// escaping exception of another type, an allocation over -malloc_limit_mb) is a finding.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "engine/base/error.h"

namespace ift::fuzz {

// The input as text.
inline std::string_view text(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }

// The readers that take a path get the input through a file of this name in a directory of the
// process's own (so parallel fuzzing jobs do not share it).
inline std::filesystem::path write_input(std::string_view name, std::string_view bytes) {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("ift-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  const std::filesystem::path p = dir / name;
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return p;
}

// Runs `body`; an ift::Error is the expected outcome of bad input.
template <class F>
void expect_ok_or_error(F&& body) {
  try {
    body();
  } catch (const ift::Error&) {
  }
}

}  // namespace ift::fuzz
