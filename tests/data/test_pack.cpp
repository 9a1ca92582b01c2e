#include "data/pack.h"

#include <random>

#include "engine/base/error.h"
#include "tests/support.h"

using namespace ift;

namespace {

// A realistic mix: many short samples, a long tail up to seq_len.
std::vector<int32_t> length_mix(size_t n, int32_t seq_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> d(std::log(seq_len / 10.0), 0.9);
  std::vector<int32_t> out(n);
  for (auto& l : out) l = std::clamp(static_cast<int32_t>(d(rng)), 1, seq_len);
  return out;
}

void check_invariants(const std::vector<int32_t>& lengths, int32_t seq_len,
                      const std::vector<std::vector<int32_t>>& rows) {
  std::vector<int> seen(lengths.size(), 0);
  for (const auto& row : rows) {
    REQUIRE(!row.empty());
    int64_t used = 0;
    for (int32_t s : row) {
      REQUIRE(s >= 0);
      REQUIRE(static_cast<size_t>(s) < lengths.size());
      ++seen[s];
      used += lengths[s];
    }
    REQUIRE(used <= seq_len);
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    INFO("sample " << i);
    REQUIRE(seen[i] == 1);
  }
}

double efficiency(const std::vector<int32_t>& lengths, int32_t seq_len, size_t rows) {
  int64_t total = 0;
  for (int32_t l : lengths) total += l;
  return static_cast<double>(total) / (static_cast<double>(rows) * seq_len);
}

}  // namespace

TEST_CASE("packing invariants: no row over seq_len, every sample exactly once", "[pack]") {
  for (uint64_t seed : {1, 2, 3}) {
    for (int32_t seq_len : {1, 7, 97, 1024}) {
      const auto lengths = length_mix(3000, seq_len, seed);
      for (PackMode mode : {PackMode::bfd, PackMode::greedy, PackMode::none}) {
        INFO("seed " << seed << " seq_len " << seq_len << " mode " << pack_mode_name(mode));
        check_invariants(lengths, seq_len, pack_rows(lengths, seq_len, mode));
      }
    }
  }
  CHECK(pack_rows({}, 16, PackMode::bfd).empty());
}

TEST_CASE("bfd fills rows: >= 99% on a random length mix, better than greedy", "[pack]") {
  const int32_t seq_len = 2048;
  const auto lengths = length_mix(20000, seq_len, 42);
  const auto bfd = pack_rows(lengths, seq_len, PackMode::bfd);
  const auto greedy = pack_rows(lengths, seq_len, PackMode::greedy);
  const double e_bfd = efficiency(lengths, seq_len, bfd.size());
  const double e_greedy = efficiency(lengths, seq_len, greedy.size());
  INFO("bfd " << e_bfd << ", greedy " << e_greedy);
  CHECK(e_bfd >= 0.99);
  CHECK(e_bfd > e_greedy);
  CHECK(pack_rows(lengths, seq_len, PackMode::bfd) == bfd);  // deterministic
}

TEST_CASE("greedy keeps dataset order, none one sample per row, bfd best fit", "[pack]") {
  const std::vector<int32_t> lengths = {5, 4, 3, 6, 2};
  CHECK(pack_rows(lengths, 10, PackMode::greedy) == std::vector<std::vector<int32_t>>{{0, 1}, {2, 3}, {4}});
  CHECK(pack_rows(lengths, 10, PackMode::none) == std::vector<std::vector<int32_t>>{{0}, {1}, {2}, {3}, {4}});
  // Decreasing: 6 (row 0), 5 (row 1), 4 -> row 0 (free 4, exact fit), 3 -> row 1, 2 -> row 1.
  CHECK(pack_rows(lengths, 10, PackMode::bfd) == std::vector<std::vector<int32_t>>{{3, 1}, {0, 2, 4}});
}

TEST_CASE("packing rejects lengths outside [1, seq_len]", "[pack]") {
  CHECK_THROWS_AS(pack_rows({3, 11}, 10, PackMode::bfd), Error);
  CHECK_THROWS_AS(pack_rows({0}, 10, PackMode::greedy), Error);
  CHECK_THROWS_AS(pack_rows({1}, 0, PackMode::none), Error);
  CHECK(parse_pack_mode("greedy") == PackMode::greedy);
  CHECK_THROWS_AS(parse_pack_mode("ffd"), Error);
}
