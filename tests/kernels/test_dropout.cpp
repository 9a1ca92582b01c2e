// The dropout kernel (kernels/dropout.cu), run in the SIMT emulator, against the CPU reference
// cpu::dropout (engine/cpu/ops.h), in fp32 and bf16 storage. Both compute one fp32 multiply by the
// same fp32 factor under the same mask, so results must be equal bit for bit, masks included, on
// awkward sizes, unaligned pointers and in place. The mask's statistics are checked against the
// binomial law with a 6-sigma band (a false failure has probability about 2e-9 per check).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <cuda_bf16.h>

#include "engine/base/error.h"
#include "engine/cpu/ops.h"
#include "kernels/counter_hash.h"
#include "kernels/dropout.h"
#include "tests/kernels/kernel_support.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

DropoutArgs args_of(uint64_t seed, uint64_t step, uint32_t site, float p, int64_t n) {
  DropoutArgs a;
  a.seed = seed, a.step = step, a.site = site, a.p = p, a.n = n;
  return a;
}

// The kernel against the reference on `n` values starting `offset` elements into the buffers
// (offset 1 defeats the 16-byte vector path), out of place and in place.
template <class T>
void check_against_reference(int64_t n, float p, int offset, uint64_t seed) {
  INFO("dropout<" << type_name<T>() << "> n=" << n << " p=" << p << " offset=" << offset << " seed=" << seed);
  const DropoutArgs a = args_of(seed, 7, 3, p, n);
  const auto in = to_storage<T>(random_vector<float>(size_t(n + offset), seed));
  KernelVector<T> out(size_t(n + offset), from_f<T>(-5.0f));
  dropout(out.data() + offset, in.data() + offset, a, nullptr);

  const std::vector<float> inf = to_floats(in);
  std::vector<float> ref(size_t(n + offset), -5.0f);
  cpu::dropout(ref.data() + offset, inf.data() + offset, a);
  CHECK(bitwise_equal(out, to_storage<T>(ref)));  // the untouched prefix included

  KernelVector<T> inplace = in;
  dropout(inplace.data() + offset, inplace.data() + offset, a, nullptr);
  for (int i = 0; i < offset; ++i) inplace[i] = from_f<T>(-5.0f);
  CHECK(bitwise_equal(inplace, out));
}

// The mask as 0/1 from a run of the kernel on ones, checking every kept value is exactly the factor.
std::vector<uint8_t> kernel_mask(const DropoutArgs& a) {
  KernelVector<float> ones(size_t(a.n), 1.0f), out(size_t(a.n));
  dropout(out.data(), ones.data(), a, nullptr);
  std::vector<uint8_t> mask(size_t(a.n));
  const float scale = 1.0f / (1.0f - a.p);
  int64_t bad = 0;
  for (int64_t i = 0; i < a.n; ++i) {
    mask[i] = out[i] != 0.0f;
    if (mask[i] && out[i] != scale) ++bad;
  }
  CHECK(bad == 0);
  return mask;
}

// |count - n q| <= 6 sqrt(n q (1 - q)) for a binomial(n, q) count.
void check_binomial(const char* what, int64_t count, int64_t n, double q) {
  const double mean = double(n) * q, sigma = std::sqrt(double(n) * q * (1 - q));
  INFO(what << ": " << count << " of " << n << ", expected " << mean << " +- 6 * " << sigma);
  CHECK(std::abs(double(count) - mean) <= 6 * sigma);
}

}  // namespace

TEST_CASE("dropout: the counter hash is SplitMix64 (its published first outputs from state 0)", "[kernels][dropout]") {
  // counter_bits(0, i) is the high half of SplitMix64's output i + 1 from state 0.
  CHECK(counter_mix64(0x9e3779b97f4a7c15ull) == 0xe220a8397b1dcdafull);
  CHECK(counter_bits(0, 0) == 0xe220a839u);
  CHECK(counter_bits(0, 1) == 0x6e789e6au);
  CHECK(counter_bits(0, 2) == 0x06c45d18u);
  CHECK(dropout_threshold(0.0f) == 0u);
  CHECK(dropout_threshold(0.5f) == 0x80000000u);
  CHECK(dropout_scale(0.5f) == 2.0f);
}

TEST_CASE("dropout: kernel equals the CPU reference bit for bit (float, bf16, awkward sizes, unaligned, in place)",
          "[kernels][dropout]") {
  uint64_t seed = 1000;
  for (int64_t n : {1, 7, 97, 1024, 1025, 4099}) {
    for (float p : {0.1f, 0.3f, 0.5f}) {
      for (int offset : {0, 1}) {
        check_against_reference<float>(n, p, offset, seed++);
        check_against_reference<bf16>(n, p, offset, seed++);
      }
    }
  }
}

TEST_CASE("dropout: p = 0 is the identity, bit for bit", "[kernels][dropout]") {
  for (int64_t n : {1, 97, 1024}) {
    const auto in = random_vector<float>(size_t(n), 77 + n, -3.0, 3.0);
    KernelVector<float> kin(in.begin(), in.end()), out(in.size());
    dropout(out.data(), kin.data(), args_of(5, 1, 0, 0.0f, n), nullptr);
    CHECK(bitwise_equal(out, kin));
    const auto b = to_storage<bf16>(in);
    KernelVector<bf16> bout(b.size());
    dropout(bout.data(), b.data(), args_of(5, 1, 0, 0.0f, n), nullptr);
    CHECK(bitwise_equal(bout, b));
    const std::vector<double> d(in.begin(), in.end());
    std::vector<double> dout(d.size());
    cpu::dropout(dout.data(), d.data(), args_of(5, 1, 0, 0.0f, n));
    CHECK(dout == d);
  }
}

TEST_CASE("dropout: the mask drops a fraction p, kept values scaled by exactly 1/(1-p), neighbours independent",
          "[kernels][dropout]") {
  const int64_t n = 1 << 16;
  for (float p : {0.05f, 0.1f, 0.3f, 0.7f}) {
    const DropoutArgs a = args_of(42, 3, 1, p, n);
    const std::vector<uint8_t> mask = kernel_mask(a);
    int64_t dropped = 0, both = 0;
    for (int64_t i = 0; i < n; ++i) {
      dropped += !mask[i];
      if (i + 1 < n) both += !mask[i] && !mask[i + 1];
    }
    check_binomial("dropped", dropped, n, p);
    check_binomial("neighbours both dropped", both, n - 1, double(p) * p);  // not quite independent trials: adjacent pairs overlap, but the band is wide

    // The same arguments give the same mask (this is what backward relies on); another step or
    // another site a fresh one, agreeing only by chance: P(agree) = p^2 + (1-p)^2.
    CHECK(kernel_mask(a) == mask);
    for (DropoutArgs other : {args_of(42, 4, 1, p, n), args_of(42, 3, 2, p, n), args_of(43, 3, 1, p, n)}) {
      const std::vector<uint8_t> m = kernel_mask(other);
      int64_t agree = 0;
      for (int64_t i = 0; i < n; ++i) agree += m[i] == mask[i];
      check_binomial("masks of different keys agreeing", agree, n, double(p) * p + double(1 - p) * (1 - p));
    }
  }
}

TEST_CASE("dropout: backward is the same call on the gradient (the mask of forward, regenerated)",
          "[kernels][dropout]") {
  const int64_t n = 1025;
  const DropoutArgs a = args_of(9, 11, 4, 0.25f, n);
  const std::vector<uint8_t> mask = kernel_mask(a);
  const auto g = random_vector<float>(size_t(n), 31);
  KernelVector<float> dout(g.begin(), g.end()), din(g.size());
  dropout(din.data(), dout.data(), a, nullptr);
  const float scale = 1.0f / 0.75f;
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) wrong += din[i] != (mask[i] ? dout[i] * scale : 0.0f);
  CHECK(wrong == 0);
}

TEST_CASE("dropout: bad arguments are ift::Error naming the op and the argument", "[kernels][dropout]") {
  KernelVector<float> a(64, 1.0f), out(64);
  CHECK_THROWS_WITH(dropout(out.data(), a.data(), args_of(0, 0, 0, 1.0f, 64), nullptr),
                    Catch::Contains("dropout: probability p = 1 is outside [0, 1)"));
  CHECK_THROWS_WITH(dropout(out.data(), a.data(), args_of(0, 0, 0, -0.1f, 64), nullptr),
                    Catch::Contains("dropout: probability p = -0.1"));
  CHECK_THROWS_WITH(dropout(out.data(), a.data(), args_of(0, 0, 0, 0.1f, -1), nullptr),
                    Catch::Contains("dropout: negative element count n = -1"));
  CHECK_THROWS_WITH(dropout(out.data(), nullptr, args_of(0, 0, 0, 0.1f, 8), nullptr),
                    Catch::Contains("dropout: out and in must not be null"));
  std::vector<float> h(8);
  CHECK_THROWS_WITH(cpu::dropout(h.data(), h.data(), args_of(0, 0, 0, 1.5f, 8)),
                    Catch::Contains("dropout: probability p = 1.5"));
}
