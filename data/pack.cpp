#include "data/pack.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <tuple>
#include <utility>

#include "engine/base/error.h"

namespace ift {

PackMode parse_pack_mode(std::string_view name) {
  if (name == "bfd") return PackMode::bfd;
  if (name == "greedy") return PackMode::greedy;
  if (name == "none") return PackMode::none;
  fail("unknown packing mode '", name, "' (expected bfd, greedy or none)");
}

const char* pack_mode_name(PackMode m) {
  switch (m) {
    case PackMode::bfd: return "bfd";
    case PackMode::greedy: return "greedy";
    case PackMode::none: return "none";
  }
  return "?";
}

std::vector<std::vector<int32_t>> pack_rows(const std::vector<int32_t>& lengths, int32_t seq_len, PackMode mode) {
  IFT_CHECK(seq_len > 0, "seq_len must be positive, got ", seq_len);
  for (size_t i = 0; i < lengths.size(); ++i)
    IFT_CHECK(lengths[i] >= 1 && lengths[i] <= seq_len, "sample ", i, " has length ", lengths[i],
              ", outside [1, seq_len=", seq_len, "]");
  std::vector<std::vector<int32_t>> rows;
  const int32_t n = static_cast<int32_t>(lengths.size());
  if (mode == PackMode::none) {
    for (int32_t i = 0; i < n; ++i) rows.push_back({i});
  } else if (mode == PackMode::greedy) {
    int32_t used = seq_len;  // forces a first row
    for (int32_t i = 0; i < n; ++i) {
      if (used + lengths[i] > seq_len) {
        rows.emplace_back();
        used = 0;
      }
      rows.back().push_back(i);
      used += lengths[i];
    }
  } else {
    std::vector<int32_t> order(lengths.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return lengths[a] > lengths[b]; });
    // Open rows by (free space, row index): lower_bound finds the tightest row that still fits,
    // in O(log rows).
    std::set<std::pair<int32_t, int32_t>> open;
    for (int32_t i : order) {
      auto it = open.lower_bound({lengths[i], -1});
      int32_t row, free;
      if (it == open.end()) {
        row = static_cast<int32_t>(rows.size());
        rows.emplace_back();
        free = seq_len;
      } else {
        std::tie(free, row) = *it;
        open.erase(it);
      }
      rows[row].push_back(i);
      free -= lengths[i];
      if (free > 0) open.insert({free, row});
    }
  }
  return rows;
}

}  // namespace ift
