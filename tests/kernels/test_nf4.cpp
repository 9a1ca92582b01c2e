// The NF4 dequantize kernel (kernels/nf4.cu), run in the SIMT emulator, against the CPU reference
// cpu::nf4_dequantize (engine/cpu/ops.h) on codes and scales from the reference quantizer
// (engine/nf4.h). Both compute one fp32 multiply of the same two factors per element and round it
// once, so the results must be equal bit for bit, in fp32 and bf16 output, on both paths of the
// kernel (8-value packs, and single values for odd sizes and unaligned pointers), with an all-zero
// block among the others, and under every thread and block schedule.
#include <cstdint>
#include <cstring>
#include <vector>

#include <cuda_bf16.h>

#include "engine/base/error.h"
#include "engine/cpu/ops.h"
#include "engine/nf4.h"
#include "kernels/nf4.h"
#include "tests/kernels/kernel_support.h"
#if IFT_TEST_EMULATED
#include "kernels/simt/runtime.h"
#endif
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

// Random values of n, block 1 (when there is one) all zeros, quantized by the reference.
Nf4Tensor quantized(int64_t n, uint64_t seed) {
  std::vector<float> x = random_vector<float>(size_t(n), seed, -3.0, 3.0);
  for (int64_t i = kNf4Block; i < std::min<int64_t>(n, 2 * kNf4Block); ++i) x[i] = 0.0f;
  return nf4_quantize(x);
}

// The kernel's output of q, written `offset` elements into a buffer (offset 1: the scalar path),
// against the reference rounded to T; the untouched prefix must stay.
template <class T>
void check_against_reference(const Nf4Tensor& q, int offset) {
  INFO("nf4_dequantize<" << type_name<T>() << "> n=" << q.n << " offset=" << offset);
  const KernelVector<uint8_t> codes(q.packed.begin(), q.packed.end());
  const KernelVector<float> absmax(q.absmax.begin(), q.absmax.end());
  KernelVector<T> out(q.n + offset, from_f<T>(-7.0f));
  Nf4Args a;
  a.n = static_cast<int64_t>(q.n);
  nf4_dequantize(out.data() + offset, codes.data(), absmax.data(), a, nullptr);
  std::vector<float> ref(q.n + offset, -7.0f);
  cpu::nf4_dequantize(ref.data() + offset, q.packed.data(), q.absmax.data(), a);
  CHECK(bitwise_equal(out, to_storage<T>(ref)));
}

}  // namespace

TEST_CASE("nf4_dequantize: kernel equals the CPU reference bit for bit (fp32, bf16, odd sizes, a zero block)",
          "[kernels][nf4]") {
  uint64_t seed = 2000;
  for (int64_t n : {1, 2, 63, 64, 65, 128, 4096, 4097}) {
    const Nf4Tensor q = quantized(n, seed++);
    for (int offset : {0, 1}) {
      check_against_reference<float>(q, offset);
      check_against_reference<bf16>(q, offset);
    }
  }
  // The reference is engine/nf4.h's dequantizer (checked against numpy in tests/engine/test_nf4.cpp).
  const Nf4Tensor q = quantized(4097, 7);
  std::vector<float> via_tensor(q.n), via_op(q.n);
  nf4_dequantize(q, via_tensor);
  Nf4Args a;
  a.n = 4097;
  cpu::nf4_dequantize(via_op.data(), q.packed.data(), q.absmax.data(), a);
  CHECK(std::memcmp(via_tensor.data(), via_op.data(), q.n * sizeof(float)) == 0);
  for (int64_t i = kNf4Block; i < 2 * kNf4Block; ++i) CHECK(via_op[i] == 0.0f);  // the zero block
}

TEST_CASE("nf4_dequantize: n = 0 does nothing, a negative n or a null pointer is an error", "[kernels][nf4]") {
  KernelVector<float> out(4, 3.0f), absmax(1, 1.0f);
  KernelVector<uint8_t> codes(2, 0x7f);
  Nf4Args a;
  nf4_dequantize(out.data(), codes.data(), absmax.data(), a, nullptr);
  CHECK(out[0] == 3.0f);
  a.n = -1;
  CHECK_THROWS_WITH(nf4_dequantize(out.data(), codes.data(), absmax.data(), a, nullptr),
                    Catch::Contains("nf4_dequantize: negative element count"));
  a.n = 4;
  CHECK_THROWS_WITH(nf4_dequantize(out.data(), nullptr, absmax.data(), a, nullptr),
                    Catch::Contains("must not be null"));
}

#if IFT_TEST_EMULATED  // the emulator's thread and block schedules
TEST_CASE("nf4_dequantize gives the same bits under every schedule", "[kernels][nf4]") {
  const Nf4Tensor q = quantized(4097 * 8, 31);
  const KernelVector<uint8_t> codes(q.packed.begin(), q.packed.end());
  const KernelVector<float> absmax(q.absmax.begin(), q.absmax.end());
  Nf4Args a;
  a.n = static_cast<int64_t>(q.n);
  KernelVector<bf16> base(q.n);
  nf4_dequantize(base.data(), codes.data(), absmax.data(), a, nullptr);
  for (auto [schedule, seed] : {std::pair{simt::Schedule::reverse, 1}, {simt::Schedule::random, 3}, {simt::Schedule::random, 99}}) {
    simt::Options o = simt::options();
    o.schedule = schedule, o.seed = static_cast<uint64_t>(seed);
    const simt::ScopedOptions scoped(o);
    INFO("schedule " << static_cast<int>(schedule) << ", seed " << seed);
    KernelVector<bf16> out(q.n);
    nf4_dequantize(out.data(), codes.data(), absmax.data(), a, nullptr);
    CHECK(bitwise_equal(out, base));
    KernelVector<bf16> odd(q.n - 1);  // the scalar path
    Nf4Args b = a;
    b.n = a.n - 1;
    nf4_dequantize(odd.data(), codes.data(), absmax.data(), b, nullptr);
    CHECK(std::memcmp(odd.data(), base.data(), odd.size() * sizeof(bf16)) == 0);
  }
}
#endif
