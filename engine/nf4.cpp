#include "engine/nf4.h"

#include <cmath>

#include "engine/base/error.h"
#include "engine/cpu/ops.h"

namespace ift {

const std::array<float, 16>& nf4_code_book() {
  static const std::array<float, 16> book = std::to_array(kNf4CodeBook);
  return book;
}

Nf4Tensor nf4_quantize(std::span<const float> x) {
  const std::array<float, 16>& book = nf4_code_book();
  Nf4Tensor q;
  q.n = x.size();
  q.packed.assign((q.n + 1) / 2, 0);
  q.absmax.assign((q.n + kNf4Block - 1) / kNf4Block, 0.0f);
  for (size_t b = 0; b < q.absmax.size(); ++b) {
    const size_t begin = b * kNf4Block, end = std::min(q.n, begin + kNf4Block);
    float a = 0;
    for (size_t i = begin; i < end; ++i) {
      IFT_CHECK(std::isfinite(x[i]), "nf4_quantize: value ", i, " is not finite (", x[i], ")");
      a = std::max(a, std::fabs(x[i]));
    }
    q.absmax[b] = a;
    for (size_t i = begin; i < end; ++i) {
      const float s = a > 0 ? x[i] / a : 0.0f;
      int best = 0;
      float best_d = std::fabs(s - book[0]);
      for (int c = 1; c < 16; ++c) {
        const float d = std::fabs(s - book[c]);
        if (d < best_d) best = c, best_d = d;
      }
      q.packed[i / 2] |= static_cast<uint8_t>(i % 2 ? best : best << 4);
    }
  }
  return q;
}

void nf4_dequantize(const Nf4Tensor& q, std::span<float> out) {
  IFT_CHECK(out.size() == q.n, "nf4_dequantize: ", out.size(), " outputs for ", q.n, " values");
  Nf4Args a;
  a.n = static_cast<int64_t>(q.n);
  cpu::nf4_dequantize(out.data(), q.packed.data(), q.absmax.data(), a);
}

}  // namespace ift
