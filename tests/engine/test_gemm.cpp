// The emu device's GEMM (engine/emu_device.h), the stand-in for cuBLASLt that every EmuBackend
// matmul runs through, against a double-precision loop: strided slices of wider buffers (leading
// dimensions larger than the rows), all four transposes, accumulate and bias, fp32 and bf16.
//
// Tolerance, per element: the reference sums the same (already rounded) inputs in double, so what
// differs is fp32 accumulation over K terms, at most K * 2^-24 * sum_k |a_ik b_kj| (plus |bias| and
// |C| when added), and the one rounding to the output type, 2^-24 (fp32) or 2^-9 (bf16) of |ref|.
// Twice that is allowed.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <vector>

#include <cuda_bf16.h>

#include "engine/emu_device.h"
#include "tests/support.h"

using namespace ift;

namespace {

using bf16 = __nv_bfloat16;

template <class T>
double to_double(T x) {
  return static_cast<double>(static_cast<float>(x));
}

template <class T>
constexpr double unit_roundoff() {
  return std::is_same_v<T, float> ? std::ldexp(1.0, -24) : std::ldexp(1.0, -9);
}

// A buffer of rows x ld values, random in [-1, 1) from seed, rounded to T.
template <class T>
std::vector<T> random_buffer(size_t n, uint64_t seed) {
  std::vector<T> v(n);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (auto& x : v) x = static_cast<T>(dist(rng));
  return v;
}

struct Shape {
  int M, N, K;
  bool trans_a, trans_b, accumulate, bias;
  int pad_a, pad_b, pad_c;  // leading dimension minus the stored row's width
  int off_a, off_b, off_c;  // the slice starts this many elements into its buffer
};

template <class In, class Out>
void check(const Shape& s, uint64_t seed) {
  const int a_rows = s.trans_a ? s.K : s.M, a_cols = s.trans_a ? s.M : s.K;
  const int b_rows = s.trans_b ? s.N : s.K, b_cols = s.trans_b ? s.K : s.N;
  const int lda = a_cols + s.pad_a, ldb = b_cols + s.pad_b, ldc = s.N + s.pad_c;
  const std::vector<In> a = random_buffer<In>(size_t(s.off_a) + size_t(a_rows) * lda, seed);
  const std::vector<In> b = random_buffer<In>(size_t(s.off_b) + size_t(b_rows) * ldb, seed + 1);
  const std::vector<In> bias = random_buffer<In>(size_t(s.N), seed + 2);
  std::vector<Out> c = random_buffer<Out>(size_t(s.off_c) + size_t(s.M) * ldc, seed + 3);
  const std::vector<Out> c_before = c;

  EmuDevice device;
  device.gemm<In, Out>(c.data() + s.off_c, ldc, a.data() + s.off_a, lda, b.data() + s.off_b, ldb,
                       s.bias ? bias.data() : nullptr, s.M, s.N, s.K, s.trans_a, s.trans_b, s.accumulate);

  INFO("seed " << seed << ": M " << s.M << " N " << s.N << " K " << s.K << " trans_a " << s.trans_a << " trans_b "
               << s.trans_b << " accumulate " << s.accumulate << " bias " << s.bias << " lda " << lda << " ldb "
               << ldb << " ldc " << ldc);
  size_t bad = 0, untouched_bad = 0;
  std::ostringstream os;
  for (size_t e = 0; e < c.size(); ++e) {
    const bool inside = e >= size_t(s.off_c) && (e - s.off_c) / ldc < size_t(s.M) && (e - s.off_c) % ldc < size_t(s.N);
    if (!inside) {  // padding and elements before the slice: never written
      untouched_bad += std::memcmp(&c[e], &c_before[e], sizeof(Out)) != 0;
      continue;
    }
    const int i = int((e - s.off_c) / ldc), j = int((e - s.off_c) % ldc);
    double ref = 0, magnitude = 0;
    for (int k = 0; k < s.K; ++k) {
      const double x = to_double(s.trans_a ? a[s.off_a + size_t(k) * lda + i] : a[s.off_a + size_t(i) * lda + k]);
      const double y = to_double(s.trans_b ? b[s.off_b + size_t(j) * ldb + k] : b[s.off_b + size_t(k) * ldb + j]);
      ref += x * y, magnitude += std::abs(x * y);
    }
    if (s.bias) ref += to_double(bias[j]), magnitude += std::abs(to_double(bias[j]));
    if (s.accumulate) ref += to_double(c_before[e]), magnitude += std::abs(to_double(c_before[e]));
    const double allowed = 2 * ((s.K + 2) * std::ldexp(1.0, -24) * magnitude + unit_roundoff<Out>() * std::abs(ref));
    const double err = std::abs(to_double(c[e]) - ref);
    if (!(err <= allowed)) {
      if (bad < 5) os << "  C[" << i << "][" << j << "] got " << to_double(c[e]) << " want " << ref << "\n";
      ++bad;
    }
  }
  INFO(bad << " elements of C out of tolerance\n" << os.str());
  CHECK(bad == 0);
  INFO(untouched_bad << " elements outside C's window were written");
  CHECK(untouched_bad == 0);
}

}  // namespace

TEST_CASE("emu gemm: strided slices, every transpose, accumulate and bias, against a double loop", "[gemm]") {
  uint64_t seed = 40;
  for (const bool trans_a : {false, true})
    for (const bool trans_b : {false, true})
      for (const bool accumulate : {false, true})
        for (const bool bias : {false, true}) {
          // Awkward sizes; a dense case (no padding, no offset) and slices of wider buffers at
          // unaligned starts (C: the middle third of rows three times as wide, as in a fused QKV).
          const Shape dense{7, 13, 97, trans_a, trans_b, accumulate, bias, 0, 0, 0, 0, 0, 0};
          const Shape slice{5, 11, 33, trans_a, trans_b, accumulate, bias, 17, 2 * 11 + 1, 2 * 11, 3, 1, 11};
          for (const Shape& s : {dense, slice}) {
            check<float, float>(s, ++seed);
            check<bf16, bf16>(s, ++seed);
            if (!bias) check<bf16, float>(s, ++seed);  // the weight-gradient GEMM's types
          }
        }
}

TEST_CASE("emu gemm: sizes of one and K = 1", "[gemm]") {
  check<float, float>({1, 1, 1, false, false, false, true, 0, 0, 0, 0, 0, 0}, 7);
  check<float, float>({1, 9, 1, true, true, true, false, 3, 3, 3, 1, 1, 1}, 8);
  check<bf16, float>({6, 1, 1025, true, false, true, false, 0, 5, 2, 0, 0, 0}, 9);
}

TEST_CASE("emu gemm: a leading dimension shorter than the row is refused, naming it", "[gemm]") {
  EmuDevice device;
  std::vector<float> a(64), b(64), c(64);
  // M = N = 4, K = 8: A (4, 8) needs lda >= 8, stored transposed (8, 4) lda >= 4; B likewise.
  const auto gemm = [&](int lda, int ldb, int ldc, bool trans_a, bool trans_b) {
    device.gemm<float, float>(c.data(), ldc, a.data(), lda, b.data(), ldb, nullptr, 4, 4, 8, trans_a, trans_b, false);
  };
  CHECK_THROWS_WITH(gemm(7, 4, 4, false, false), Catch::Contains("lda 7") && Catch::Contains("row of 8"));
  CHECK_NOTHROW(gemm(4, 4, 4, true, false));
  CHECK_THROWS_WITH(gemm(8, 7, 4, false, true), Catch::Contains("ldb 7") && Catch::Contains("row of 8"));
  CHECK_THROWS_WITH(gemm(8, 4, 3, false, false), Catch::Contains("ldc 3"));
}
