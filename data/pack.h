// Packing samples into rows of seq_len tokens. Only lengths matter here; the row keeps the list of
// its samples so attention and positions never cross a sample boundary (data/loader.h).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace ift {

enum class PackMode {
  bfd,     // best-fit decreasing: longest first, each into the fullest row it still fits
  greedy,  // dataset order, a new row whenever the next sample does not fit (next-fit)
  none,    // one sample per row, the rest padding
};
PackMode parse_pack_mode(std::string_view name);
const char* pack_mode_name(PackMode m);

// Rows of sample indices. Every length must be in [1, seq_len] (long samples are dealt with
// before packing); every sample lands in exactly one row; no row holds more than seq_len tokens.
// Deterministic: ties are broken by sample index.
std::vector<std::vector<int32_t>> pack_rows(const std::vector<int32_t>& lengths, int32_t seq_len, PackMode mode);

}  // namespace ift
