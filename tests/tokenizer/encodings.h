// The committed reference encodings (tests/fixtures/tokenizers/encodings.json, written by
// tools/golden/make_tokenizer_fixtures.py from Hugging Face tokenizers and sentencepiece).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support.h"

namespace ift::test {

struct ReferenceCase {
  std::string text;
  std::vector<int32_t> ids;
};

inline std::vector<ReferenceCase> reference_encodings(const std::string& name) {
  std::ifstream in(fixture("tokenizers/encodings.json"));
  REQUIRE(in);
  const auto j = nlohmann::json::parse(in);
  REQUIRE(j.contains(name));
  std::vector<ReferenceCase> out;
  for (size_t i = 0; i < j["texts"].size(); ++i) {
    out.push_back({j["texts"][i].get<std::string>(), j[name][i].get<std::vector<int32_t>>()});
  }
  return out;
}

// A printable form of a test text for failure messages.
inline std::string show(const std::string& text) {
  std::string out = text.size() > 60 ? text.substr(0, 60) + "..." : text;
  for (char& c : out) {
    if (c == '\n') c = '|';
  }
  return out;
}

}  // namespace ift::test
