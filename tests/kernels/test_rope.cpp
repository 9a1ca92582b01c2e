// RoPE kernels in the emulator against the CPU reference (engine/cpu/ops.h), computed in double
// with exact angles (no table). fp32: |x - ref| <= 1e-6 + 1e-5 |ref| element by element (the
// kernel's cos and sin are the double values rounded once to fp32 (cpu::rope_table), its rotation
// fp32: a few 1e-7 expected). bf16: the FlashAttention rule, max error vs the fp64 reference at
// most 2x that of a naive bf16 implementation (bf16 storage, fp32 angles and math, as Hugging Face
// computes it) + 1e-6.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/ops.h"
#include "engine/base/error.h"
#include "kernels/rope.h"
#include "tests/kernels/kernel_support.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

struct RopeCase {
  int N, heads, extra_heads, D;
  float theta;
  uint64_t seed;
};

// Rows of `heads + extra_heads` heads plus `pad` padding columns (3: ld is odd, the scalar path;
// 0 with D % 16 == 0: the vector path), so the rotation must stop at `heads`; the cos/sin table of
// the 4096 positions drawn from.
struct RopeData {
  int ld;
  KernelVector<int32_t> positions;
  KernelVector<float> x;
  KernelVector<float> table;
  RopeArgs args;
};

constexpr int kTablePositions = 4096;

RopeData make_rope_data(const RopeCase& c, int pad = 3) {
  RopeData r;
  r.ld = (c.heads + c.extra_heads) * c.D + pad;
  r.args.N = c.N, r.args.heads = c.heads, r.args.D = c.D, r.args.ld = r.ld, r.args.P = kTablePositions;
  r.args.theta = c.theta;
  r.table.resize(size_t(kTablePositions) * c.D);
  cpu::rope_table(r.table.data(), r.args);
  std::mt19937_64 rng(c.seed);
  std::uniform_int_distribution<int32_t> pos(0, 4095);
  r.positions.resize(c.N);
  for (auto& p : r.positions) p = pos(rng);
  if (c.N > 1) r.positions[0] = 0;  // position 0 (the identity) in every case with a second row
  r.x = random_vector<float>(static_cast<size_t>(c.N) * r.ld, c.seed + 1, -2.0, 2.0);
  return r;
}

KernelVector<double> reference(const RopeData& r, const RopeCase& c, bool backward) {
  KernelVector<double> y(r.x.begin(), r.x.end());
  if (backward) cpu::rope_backward(y.data(), r.positions.data(), nullptr, r.args);
  else cpu::rope_forward(y.data(), r.positions.data(), nullptr, r.args);
  return y;
}

// What a naive bf16 implementation computes: HF's fp32 inv_freq and angles, fp32 math on bf16
// inputs, one rounding to bf16 at the end.
KernelVector<float> naive_bf16(const KernelVector<float>& x_bf16, const RopeData& r, const RopeCase& c, float sign) {
  KernelVector<float> y = x_bf16;
  const int half = c.D / 2;
  for (int n = 0; n < c.N; ++n)
    for (int h = 0; h < c.heads; ++h)
      for (int j = 0; j < half; ++j) {
        const float inv_freq = 1.0f / std::pow(c.theta, static_cast<float>(2 * j) / c.D);
        const float angle = static_cast<float>(r.positions[n]) * inv_freq;
        const float cs = std::cos(angle), sn = sign * std::sin(angle);
        float* row = y.data() + static_cast<size_t>(n) * r.ld + h * c.D;
        const float a = row[j], b = row[j + half];
        row[j] = __bfloat162float(__float2bfloat16(a * cs - b * sn));
        row[j + half] = __bfloat162float(__float2bfloat16(b * cs + a * sn));
      }
  return y;
}

const RopeCase kCases[] = {
    {1, 1, 0, 2, 10000.0f, 1},         // one row, the smallest head
    {97, 5, 1, 40, 10000.0f, 2},       // awkward rows and head dim, a head left alone
    {97, 6, 2, 64, 500000.0f, 3},      // Llama 3 theta, GQA-like q+k heads
    {33, 3, 0, 128, 10000.0f, 4},      // largest usual head dim
    {1025, 2, 1, 16, 10000.0f, 5},     // many rows
    {7, 2, 2, 256, 1000000.0f, 6},     // the largest head dim (Gemma's 256), Qwen2's theta
    {97, 4, 0, 64, 10000.0f, 7},       // GPT-NeoX-like D 64
};

// Each case on the scalar path (odd ld) and, where D % 16 == 0, the 16-byte vector path (ld a
// multiple of the pack).
std::vector<int> pads_of(const RopeCase& c) { return c.D % 16 == 0 ? std::vector<int>{3, 0} : std::vector<int>{3}; }

}  // namespace

TEST_CASE("rope fp32: forward and backward match the CPU reference, other columns untouched", "[kernels][rope]") {
  for (const RopeCase& c : kCases)
  for (int pad : pads_of(c)) {
    INFO("N=" << c.N << " heads=" << c.heads << " D=" << c.D << " pad=" << pad << " theta=" << c.theta << " seed=" << c.seed);
    const RopeData r = make_rope_data(c, pad);
    for (bool backward : {false, true}) {
      INFO((backward ? "backward" : "forward"));
      KernelVector<float> y = r.x;
      if (backward) rope_backward(y.data(), r.positions.data(), r.table.data(), r.args, nullptr);
      else rope_forward(y.data(), r.positions.data(), r.table.data(), r.args, nullptr);
      const KernelVector<double> ref = reference(r, c, backward);
      double err = 0;
      for (size_t i = 0; i < ref.size(); ++i) err = std::max(err, std::abs(y[i] - ref[i]));
      INFO("max error " << err);
      require_close("x", y, ref, 1e-6, 1e-5);
      int changed_rows = 0;  // columns past heads*D must stay bitwise unchanged
      for (int n = 0; n < c.N; ++n)
        changed_rows += std::memcmp(y.data() + static_cast<size_t>(n) * r.ld + c.heads * c.D,
                                    r.x.data() + static_cast<size_t>(n) * r.ld + c.heads * c.D,
                                    sizeof(float) * (r.ld - c.heads * c.D)) != 0;
      CHECK(changed_rows == 0);
      if (backward) {
        // The backward is the inverse: forward after backward gives x back.
        rope_forward(y.data(), r.positions.data(), r.table.data(), r.args, nullptr);
        require_close("forward(backward(x))", y, r.x, 1e-6, 1e-5);
      }
    }
  }
}

TEST_CASE("rope bf16: at most twice the error of a naive bf16 implementation", "[kernels][rope]") {
  for (const RopeCase& c : kCases)
  for (int pad : pads_of(c)) {
    INFO("N=" << c.N << " heads=" << c.heads << " D=" << c.D << " pad=" << pad << " theta=" << c.theta << " seed=" << c.seed);
    RopeData r = make_rope_data(c, pad);
    for (auto& v : r.x) v = __bfloat162float(__float2bfloat16(v));  // the inputs are bf16 values
    for (bool backward : {false, true}) {
      INFO((backward ? "backward" : "forward"));
      KernelVector<bf16> y(r.x.size());
      for (size_t i = 0; i < y.size(); ++i) y[i] = __float2bfloat16(r.x[i]);
      if (backward) rope_backward(y.data(), r.positions.data(), r.table.data(), r.args, nullptr);
      else rope_forward(y.data(), r.positions.data(), r.table.data(), r.args, nullptr);
      KernelVector<float> got(y.size());
      for (size_t i = 0; i < y.size(); ++i) got[i] = __bfloat162float(y[i]);
      const KernelVector<double> ref = reference(r, c, backward);
      const double err = max_error(got, ref);
      const double naive = max_error(naive_bf16(r.x, r, c, backward ? -1.0f : 1.0f), ref);
      INFO("max error " << err << ", naive bf16 " << naive);
      CHECK(err <= 2 * naive + 1e-6);
      CHECK(err > 0);  // the comparison is not vacuous: bf16 rounding shows
    }
  }
}

// The table: row p holds cos, then sin, of p * theta^(-2j/D), the double values rounded once.
TEST_CASE("rope: the cos/sin table and positions outside it", "[kernels][rope]") {
  RopeArgs a;
  a.N = 3, a.heads = 1, a.D = 8, a.ld = 8, a.P = 5, a.theta = 10000.0f;
  KernelVector<float> table(size_t(a.P) * a.D);
  cpu::rope_table(table.data(), a);
  for (int p = 0; p < a.P; ++p)
    for (int j = 0; j < a.D / 2; ++j) {
      const double angle = p * std::pow(10000.0, -2.0 * j / a.D);
      CHECK(table[p * a.D + j] == static_cast<float>(std::cos(angle)));
      CHECK(table[p * a.D + a.D / 2 + j] == static_cast<float>(std::sin(angle)));
    }
  // A position outside [0, P): NaN in the kernel (it cannot throw), an error in the reference.
  KernelVector<int32_t> pos = {4, 5, -1};
  KernelVector<float> x(size_t(a.N) * a.ld, 1.0f);
  rope_forward(x.data(), pos.data(), table.data(), a, nullptr);
  for (int d = 0; d < a.D; ++d) {
    INFO("d=" << d);
    CHECK(std::isfinite(x[d]));
    CHECK(std::isnan(x[a.ld + d]));
    CHECK(std::isnan(x[2 * a.ld + d]));
  }
  std::vector<double> xd(size_t(a.N) * a.ld, 1.0);
  CHECK_THROWS_WITH(cpu::rope_forward(xd.data(), pos.data(), table.data(), a),
                    Catch::Contains("position 5 at row 1 is outside the cos/sin table's [0, 5)"));
}

TEST_CASE("rope: bad shapes are errors naming the op and the argument", "[kernels][rope]") {
  KernelVector<float> x(64, 0.0f), table(256 * 8, 0.0f);
  KernelVector<int32_t> pos(4, 0);
  auto fwd = [&](int N, int heads, int D, int ld, int P) {
    RopeArgs a;
    a.N = N, a.heads = heads, a.D = D, a.ld = ld, a.P = P;
    rope_forward(x.data(), pos.data(), table.data(), a, nullptr);
  };
  CHECK_THROWS_WITH(fwd(4, 1, 3, 16, 8), Catch::Contains("rope_forward") && Catch::Contains("head dim D"));
  CHECK_THROWS_WITH(fwd(4, 1, 258, 300, 8), Catch::Contains("head dim D"));
  CHECK_THROWS_WITH(fwd(4, 2, 8, 15, 8), Catch::Contains("row stride ld"));
  CHECK_THROWS_WITH(fwd(4, 0, 8, 16, 8), Catch::Contains("heads"));
  CHECK_THROWS_WITH(fwd(-1, 1, 8, 16, 8), Catch::Contains("N (rows)"));
  CHECK_THROWS_WITH(fwd(4, 1, 8, 16, 0), Catch::Contains("the cos/sin table needs at least one position"));
  RopeArgs a;
  a.N = 4, a.heads = 1, a.D = 8, a.ld = 16, a.P = 8;
  CHECK_THROWS_WITH(rope_backward(x.data(), nullptr, table.data(), a, nullptr),
                    Catch::Contains("rope_backward") && Catch::Contains("positions"));
  CHECK_THROWS_WITH(rope_backward(x.data(), pos.data(), nullptr, a, nullptr),
                    Catch::Contains("rope_backward") && Catch::Contains("table"));
  CHECK_NOTHROW(fwd(0, 1, 8, 16, 8));  // no rows: nothing to do
}
