// UTF-8 helpers shared by the tokenizers.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ift::utf8 {

// Length of the well-formed UTF-8 sequence at the start of `s` (1..4), or 0 when the bytes there are
// not one (stray continuation byte, overlong form, surrogate, > U+10FFFF, truncated sequence).
size_t valid_prefix_length(std::string_view s);

// True when all of `s` is well-formed UTF-8.
bool is_valid(std::string_view s);

// `s` with every ill-formed subsequence replaced by U+FFFD, one per maximal subpart (the Unicode
// recommendation that Python's errors="replace" and Rust's from_utf8_lossy follow), so decoded
// text compares equal with what the Hugging Face tokenizers return.
std::string sanitize(std::string_view s);

// Appends code point `cp` (< 0x110000, not a surrogate) as UTF-8.
void append(std::string& out, char32_t cp);

}  // namespace ift::utf8
