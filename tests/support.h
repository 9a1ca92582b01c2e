// Helpers shared by the tests: fixture paths, the one tolerance rule, seeded random data.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <catch2/catch.hpp>

namespace ift::test {

// tests/fixtures of the source tree the binary was built from, or of $IFT_FIXTURES_DIR where set
// (binaries carried to another machine, tools/gpu_check.sh).
inline std::filesystem::path fixture(const std::string& relative) {
  const char* moved = std::getenv("IFT_FIXTURES_DIR");
  return std::filesystem::path(moved && *moved ? moved : IFT_FIXTURES_DIR) / relative;
}

// A fresh, empty directory under the system temp dir, unique to this test process.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("ift-test-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Fills with uniform values in [lo, hi) from a fixed seed.
template <class T>
std::vector<T> random_vector(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(rng));
  return v;
}

// The tolerance rule of the project: |x - ref| <= atol + rtol * |ref|, element by element. Reports
// the first few offenders with their index, and the name of the compared tensor.
template <class A, class B>
void require_close(const std::string& what, const A& got, const B& ref, double atol, double rtol) {
  REQUIRE(got.size() == ref.size());
  size_t bad = 0;
  double worst = 0;
  std::ostringstream os;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
    const double err = std::abs(g - r);
    const double allowed = atol + rtol * std::abs(r);
    if (!(err <= allowed)) {
      if (bad < 5) os << "  [" << i << "] got " << g << " want " << r << " (err " << err << " > " << allowed << ")\n";
      ++bad;
      worst = std::max(worst, err);
    }
  }
  INFO(what << ": " << bad << " of " << ref.size() << " elements out of tolerance (atol " << atol << ", rtol " << rtol
            << ", worst error " << worst << ")\n"
            << os.str());
  CHECK(bad == 0);
}

// Compared relative to the largest magnitude of the reference: |x - ref| <= rtol * max|ref|.
// Used for logits and gradients, whose small entries carry no relative meaning.
template <class A, class B>
void require_close_to_max(const std::string& what, const A& got, const B& ref, double rtol) {
  double scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) scale = std::max(scale, std::abs(static_cast<double>(ref[i])));
  require_close(what, got, ref, rtol * scale, 0.0);
}

}  // namespace ift::test
