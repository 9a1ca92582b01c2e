// Validation follows Table 3-7 of the Unicode standard (well-formed byte sequences): the second
// byte's range depends on the first, which rules out overlong forms, surrogates and values past
// U+10FFFF. The length of an ill-formed "maximal subpart" is the number of bytes that still fit a
// well-formed prefix, which is what makes the U+FFFD count agree with Python and Rust.
#include "tokenizer/utf8.h"

#include <cstdint>

namespace ift::utf8 {

namespace {

// Bytes of `s` that form a prefix of some well-formed sequence (>= 1 for any non-empty input), and
// the full length the lead byte announces (0 for a byte that cannot start a sequence).
struct Prefix {
  size_t matched;
  size_t needed;
};

Prefix scan(std::string_view s) {
  const auto b0 = static_cast<uint8_t>(s[0]);
  if (b0 < 0x80) return {1, 1};
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {1, 0};
  }
  size_t i = 1;
  for (; i < need && i < s.size(); ++i) {
    const auto b = static_cast<uint8_t>(s[i]);
    const uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) break;
  }
  return {i, need};
}

}  // namespace

size_t valid_prefix_length(std::string_view s) {
  if (s.empty()) return 0;
  const Prefix p = scan(s);
  return p.needed != 0 && p.matched == p.needed ? p.needed : 0;
}

bool is_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = valid_prefix_length(s.substr(i));
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Prefix p = scan(s.substr(i));
    if (p.needed != 0 && p.matched == p.needed) {
      out.append(s.substr(i, p.needed));
    } else {
      out.append("\xEF\xBF\xBD");
    }
    i += p.matched;
  }
  return out;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace ift::utf8
