// The NEFTune kernel (kernels/neftune.cu), run in the SIMT emulator, against the CPU reference
// cpu::neftune_forward (engine/cpu/ops.h). Both draw the same uniform values and add them with one
// fp32 fused multiply-add, so results are equal bit for bit (bf16: the float reference on the
// stored inputs, rounded once). The noise's statistics are checked against the uniform law on
// [-scale, scale): mean 0 and mean square scale^2 / 3 within 6 standard errors.
#include <cmath>
#include <cstdint>
#include <vector>

#include <cuda_bf16.h>

#include "engine/base/error.h"
#include "engine/cpu/ops.h"
#include "kernels/neftune.h"
#include "tests/kernels/kernel_support.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

NeftuneArgs args_of(uint64_t seed, uint64_t step, float alpha, int N, int C, int S) {
  NeftuneArgs a;
  a.seed = seed, a.step = step, a.alpha = alpha, a.N = N, a.C = C, a.S = S;
  return a;
}

template <class T>
void check_against_reference(const std::vector<int32_t>& cu, int C, float alpha, uint64_t seed) {
  const int S = int(cu.size()) - 1, N = cu.back();
  INFO("neftune<" << type_name<T>() << "> N=" << N << " C=" << C << " S=" << S << " alpha=" << alpha
                  << " seed=" << seed);
  const NeftuneArgs a = args_of(seed, 5, alpha, N, C, S);
  const KernelVector<int32_t> kcu(cu.begin(), cu.end());
  KernelVector<T> x = to_storage<T>(random_vector<float>(size_t(N) * C, seed));
  std::vector<float> ref = to_floats(x);
  neftune_forward(x.data(), kcu.data(), a, nullptr);
  cpu::neftune_forward(ref.data(), cu.data(), a);
  CHECK(bitwise_equal(x, to_storage<T>(ref)));
}

}  // namespace

TEST_CASE("neftune: kernel equals the CPU reference bit for bit (float, bf16, awkward segments)", "[kernels][neftune]") {
  uint64_t seed = 2000;
  for (const std::vector<int32_t>& cu : std::vector<std::vector<int32_t>>{
           {0, 1}, {0, 97}, {0, 1, 98, 100, 357}, {0, 64, 128, 192, 256}}) {
    for (int C : {1, 33, 128}) {
      check_against_reference<float>(cu, C, 5.0f, seed++);
      check_against_reference<bf16>(cu, C, 15.0f, seed++);
    }
  }
}

TEST_CASE("neftune: uniform noise of scale alpha / sqrt(L d) per segment, the same for the same step",
          "[kernels][neftune]") {
  const std::vector<int32_t> cu = {0, 1, 300, 1324};  // segments of 1, 299 and 1024 tokens
  const int C = 64, N = cu.back(), S = 3;
  const float alpha = 5.0f;
  const KernelVector<int32_t> kcu(cu.begin(), cu.end());
  KernelVector<float> x(size_t(N) * C, 0.0f);
  neftune_forward(x.data(), kcu.data(), args_of(11, 2, alpha, N, C, S), nullptr);
  for (int s = 0; s < S; ++s) {
    const int L = cu[s + 1] - cu[s];
    const double scale = alpha / std::sqrt(double(L) * C);
    INFO("segment " << s << " of " << L << " tokens, scale " << scale);
    double sum = 0, sum_sq = 0, max_abs = 0;
    const int64_t n = int64_t(L) * C;
    for (int64_t i = int64_t(cu[s]) * C; i < int64_t(cu[s + 1]) * C; ++i) {
      const double u = x[i] / scale;
      sum += u, sum_sq += u * u, max_abs = std::max(max_abs, std::abs(u));
    }
    CHECK(max_abs <= 1.0 + 1e-6);               // |noise| <= scale (fp32 rounding of scale * u)
    CHECK(std::abs(sum / n) <= 6 * std::sqrt(1.0 / 3 / n));                     // E u = 0, Var u = 1/3
    CHECK(std::abs(sum_sq / n - 1.0 / 3) <= 6 * std::sqrt(4.0 / 45 / n));      // E u^2 = 1/3, Var u^2 = 4/45
    if (n >= 1000) CHECK(max_abs > 0.99);       // the range is used
  }
  // The same (seed, step) gives the same noise; another step other noise.
  KernelVector<float> again(size_t(N) * C, 0.0f), other(size_t(N) * C, 0.0f);
  neftune_forward(again.data(), kcu.data(), args_of(11, 2, alpha, N, C, S), nullptr);
  neftune_forward(other.data(), kcu.data(), args_of(11, 3, alpha, N, C, S), nullptr);
  CHECK(bitwise_equal(again, x));
  int64_t same = 0;
  for (size_t i = 0; i < x.size(); ++i) same += other[i] == x[i];
  CHECK(same < int64_t(x.size()) / 1000);
}

TEST_CASE("neftune: alpha 0 adds nothing - bad arguments are ift::Error", "[kernels][neftune]") {
  const std::vector<int32_t> cu = {0, 3, 10};
  const KernelVector<int32_t> kcu(cu.begin(), cu.end());
  const auto v = random_vector<float>(10 * 16, 3);
  KernelVector<float> x(v.begin(), v.end());
  const KernelVector<float> before = x;
  neftune_forward(x.data(), kcu.data(), args_of(1, 1, 0.0f, 10, 16, 2), nullptr);
  CHECK(bitwise_equal(x, before));
  CHECK_THROWS_WITH(neftune_forward(x.data(), kcu.data(), args_of(1, 1, -1.0f, 10, 16, 2), nullptr),
                    Catch::Contains("neftune_forward: alpha = -1"));
  CHECK_THROWS_WITH(neftune_forward(x.data(), kcu.data(), args_of(1, 1, 5.0f, 10, 16, 0), nullptr),
                    Catch::Contains("neftune_forward: bad shape N = 10, C = 16, S = 0"));
  CHECK_THROWS_WITH(neftune_forward(x.data(), nullptr, args_of(1, 1, 5.0f, 10, 16, 2), nullptr),
                    Catch::Contains("cu_seqlens must not be null"));
  const std::vector<int32_t> bad = {0, 7, 5};
  std::vector<float> h(v.begin(), v.end());
  CHECK_THROWS_AS(cpu::neftune_forward(h.data(), bad.data(), args_of(1, 1, 5.0f, 5, 16, 2)), Error);
}
