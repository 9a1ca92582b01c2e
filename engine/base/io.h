// Small file helpers shared by every writer of text outputs (reports, JSONL task files, HTML).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace ift {

// Writes `text` to a temporary sibling of `path`, then renames it over `path`: a reader (or a
// crash) never sees half a file. Throws ift::Error naming the file on failure.
void write_text_atomically(const std::filesystem::path& path, std::string_view text);

// The whole content of a file; ift::Error naming it if it cannot be read.
std::string read_text(const std::filesystem::path& path);

}  // namespace ift
