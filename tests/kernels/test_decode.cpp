// The decode-attention kernel in the emulator against the CPU reference (cpu::attention_cached in
// double). fp32: |x - ref| <= 1e-5 max|ref| + 1e-5 |ref|. bf16: the FlashAttention rule, max error
// at most 2x that of the fp32 kernel's output rounded once to bf16, plus 1e-5 max|ref|.
#include <cmath>

#include "engine/base/error.h"
#include "engine/cpu/ops.h"
#include "kernels/decode.h"
#include "tests/kernels/kernel_support.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

struct DecodeCase {
  int n, start, H, KVH, D;
  uint64_t seed;
};

const DecodeCase kCases[] = {
    {1, 0, 1, 1, 1, 1},       // the first token, one head of one dim
    {1, 96, 4, 2, 6, 2},      // one new token over 97 keys, GQA, a head dim that is not a power of two
    {7, 0, 4, 4, 40, 3},      // a prompt chunk from scratch
    {5, 300, 8, 2, 64, 4},    // a chunk after a long cache: several key tiles, 4 query heads per kv head
    {2, 129, 2, 1, 128, 5},   // keys = one tile + a remainder
    {3, 17, 2, 2, 256, 6},    // the largest head dim (Gemma), two output dims per thread
};

struct DecodeData {
  int ldq;
  KernelVector<float> q, k, v;  // (n, ldq), (start + n, KVH*D) x 2
};

DecodeData make_data(const DecodeCase& c) {
  DecodeData d;
  d.ldq = c.H * c.D + 5;  // q rows inside a wider buffer, as in the fused qkv
  d.q = random_vector<float>(size_t(c.n) * d.ldq, c.seed, -1.5, 1.5);
  d.k = random_vector<float>(size_t(c.start + c.n) * c.KVH * c.D, c.seed + 1, -1.5, 1.5);
  d.v = random_vector<float>(size_t(c.start + c.n) * c.KVH * c.D, c.seed + 2, -2.0, 2.0);
  return d;
}

DecodeAttentionArgs params(const DecodeData& d, const DecodeCase& c) {
  DecodeAttentionArgs p;
  p.n = c.n, p.start = c.start, p.H = c.H, p.KVH = c.KVH, p.D = c.D, p.ldq = d.ldq;
  p.scale = static_cast<float>(1.0 / std::sqrt(double(c.D)));
  return p;
}

KernelVector<double> reference(const DecodeData& d, const DecodeCase& c) {
  KernelVector<double> out(size_t(c.n) * c.H * c.D);
  const KernelVector<double> q(d.q.begin(), d.q.end()), k(d.k.begin(), d.k.end()), v(d.v.begin(), d.v.end());
  cpu::attention_cached(out.data(), q.data(), k.data(), v.data(), params(d, c));
  return out;
}

}  // namespace

TEST_CASE("attention_decode fp32 and bf16 match the CPU reference", "[kernels][decode]") {
  for (const DecodeCase& c : kCases) {
    INFO("n=" << c.n << " start=" << c.start << " H=" << c.H << " KVH=" << c.KVH << " D=" << c.D << " seed=" << c.seed);
    DecodeData d = make_data(c);
    for (auto* x : {&d.q, &d.k, &d.v})
      for (float& e : *x) e = __bfloat162float(__float2bfloat16(e));  // bf16-representable inputs for both runs
    const KernelVector<double> ref = reference(d, c);
    KernelVector<float> out(ref.size());
    attention_decode(out.data(), d.q.data(), d.k.data(), d.v.data(), params(d, c), nullptr);
    require_fp32_close("decode fp32", to_double(out), ref);

    const KernelVector<bf16> q = to_storage<bf16>(d.q), k = to_storage<bf16>(d.k), v = to_storage<bf16>(d.v);
    KernelVector<bf16> out16(ref.size());
    attention_decode(out16.data(), q.data(), k.data(), v.data(), params(d, c), nullptr);
    require_storage_close("decode bf16", out16, ref, out);
  }
}

TEST_CASE("attention_decode: bad shapes are errors naming the argument", "[kernels][decode]") {
  const DecodeCase c{1, 3, 4, 2, 8, 9};
  const DecodeData d = make_data(c);
  KernelVector<float> out(32);
  auto run = [&](auto edit) {
    DecodeAttentionArgs p = params(d, c);
    edit(p);
    attention_decode(out.data(), d.q.data(), d.k.data(), d.v.data(), p, nullptr);
  };
  CHECK_THROWS_WITH(run([](auto& p) { p.n = 0; }), Catch::Contains("n (new rows)"));
  CHECK_THROWS_WITH(run([](auto& p) { p.KVH = 3; }), Catch::Contains("multiple of KVH"));
  CHECK_THROWS_WITH(run([](auto& p) { p.D = 257; }), Catch::Contains("head dim"));
  CHECK_THROWS_WITH(run([](auto& p) { p.ldq = 8; }), Catch::Contains("ldq"));
  CHECK_THROWS_WITH(run([](auto& p) { p.scale = 0; }), Catch::Contains("scale"));
}
