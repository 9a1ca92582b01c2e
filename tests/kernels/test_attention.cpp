// Attention kernels in the emulator against the CPU reference (engine/cpu/ops.h) run in double.
// fp32: out, dq, dk, dv within 1e-5 of max(1, largest |ref| of their tensor) (elementwise relative
// error is ill-posed for gradients with entries near 0; the floor of 1, the size of the inputs, is
// for tensors that are exactly 0, like dq and dk of a one-row sample, where the kernel's fp32
// cancellation residue of ~1e-7 has nothing to be relative to); lse within 1e-5 + 1e-5 |ref|.
// bf16: the FlashAttention rule, max error vs the fp64 reference at most 2x that of a naive bf16
// implementation (every materialised tensor stored in bf16, fp32 math inside each op, like eager
// PyTorch in bf16) + 1e-3 * max|ref| (a floor, for tensors where the naive error happens to be tiny).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/cpu/ops.h"
#include "engine/base/error.h"
#include "kernels/attention.h"
#include "kernels/attention_tc.h"
#include "kernels/simt/runtime.h"
#include "tests/kernels/kernel_support.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

struct AttnCase {
  int H, KVH, D;
  KernelVector<int32_t> cu;  // segment boundaries; N = cu.back()
  uint64_t seed;
};

std::string describe(const AttnCase& c) {
  std::ostringstream os;
  os << "H=" << c.H << " KVH=" << c.KVH << " D=" << c.D << " N=" << c.cu.back() << " S=" << c.cu.size() - 1
     << " seed=" << c.seed;
  return os.str();
}

// The fused buffer: rows of (H + 2 KVH) * D plus `pad` padding columns: 3 by default (ld odd and
// larger than needed, which the tensor-core kernels do not take), 8 for the tensor-core cases.
struct AttnData {
  int N, ld;
  AttentionArgs p;
  KernelVector<float> qkv, dout;  // (N, ld), (N, H*D)
};

AttnData make_data(const AttnCase& c, int pad = 3) {
  AttnData a;
  a.N = c.cu.back();
  a.ld = (c.H + 2 * c.KVH) * c.D + pad;
  a.p.N = a.N;
  a.p.H = c.H;
  a.p.KVH = c.KVH;
  a.p.D = c.D;
  a.p.ld = a.ld;
  a.p.cu_seqlens = c.cu.data();
  a.p.cu_seqlens_host = c.cu.data();
  a.p.S = static_cast<int>(c.cu.size()) - 1;
  a.p.scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  // q and k in [-2, 2): peaked softmax rows, not nearly uniform ones.
  a.qkv = random_vector<float>(static_cast<size_t>(a.N) * a.ld, c.seed, -2.0, 2.0);
  a.dout = random_vector<float>(static_cast<size_t>(a.N) * c.H * c.D, c.seed + 100);
  return a;
}

struct Reference {
  KernelVector<double> out, lse, dqkv;
};

Reference reference(const AttnData& a, const KernelVector<double>& qkv, const KernelVector<double>& dout) {
  const AttentionArgs& p = a.p;
  Reference r;
  r.out.assign(static_cast<size_t>(p.N) * p.H * p.D, 0.0);
  r.lse.assign(static_cast<size_t>(p.N) * p.H, 0.0);
  r.dqkv.assign(qkv.size(), 0.0);
  const double* q = qkv.data();
  const double* k = q + p.H * p.D;
  const double* v = q + (p.H + p.KVH) * p.D;
  cpu::attention_forward(r.out.data(), r.lse.data(), q, k, v, p);
  cpu::attention_backward(r.dqkv.data(), r.dqkv.data() + p.H * p.D, r.dqkv.data() + (p.H + p.KVH) * p.D, dout.data(),
                          q, k, v, r.out.data(), r.lse.data(), p);
  return r;
}

// Columns [col, col + width) of every row of a (N, ld) buffer.
template <class T>
KernelVector<double> columns(const KernelVector<T>& x, int N, int ld, int col, int width) {
  KernelVector<double> y;
  y.reserve(static_cast<size_t>(N) * width);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < width; ++c) y.push_back(static_cast<double>(x[static_cast<size_t>(n) * ld + col + c]));
  return y;
}

float bf(float x) { return __bfloat162float(__float2bfloat16(x)); }

// |x - ref| <= rtol * max(1, max|ref|): see the head of the file.
void require_close_fp32(const std::string& what, const KernelVector<double>& got, const KernelVector<double>& ref) {
  require_close(what, got, ref, 1e-5 * std::max(1.0, max_abs(ref)), 0.0);
}

// The kernels on fp32 data: out, lse, and dqkv (pre-filled with a sentinel, so that untouched
// padding columns can be checked).
struct Fp32Result {
  KernelVector<float> out, lse, dqkv;
};

constexpr float kSentinel = 12345.0f;

Fp32Result run_fp32(const AttnData& a) {
  const AttentionArgs& p = a.p;
  Fp32Result r;
  r.out.assign(static_cast<size_t>(p.N) * p.H * p.D, 0.0f);
  r.lse.assign(static_cast<size_t>(p.N) * p.H, 0.0f);
  r.dqkv.assign(a.qkv.size(), kSentinel);
  KernelVector<float> delta(static_cast<size_t>(p.N) * p.H);
  attention_forward(r.out.data(), r.lse.data(), a.qkv.data(), p, nullptr);
  attention_backward(r.dqkv.data(), delta.data(), a.dout.data(), a.qkv.data(), r.out.data(), r.lse.data(), p, nullptr);
  return r;
}

void check_fp32(const AttnCase& c) {
  INFO(describe(c));
  const AttnData a = make_data(c);
  const Fp32Result got = run_fp32(a);
  const Reference ref = reference(a, to_double(a.qkv), to_double(a.dout));
  const int N = a.N, H = c.H, KVH = c.KVH, D = c.D;
  const KernelVector<double> out = to_double(got.out);
  const auto dq = columns(got.dqkv, N, a.ld, 0, H * D), dk = columns(got.dqkv, N, a.ld, H * D, KVH * D),
             dv = columns(got.dqkv, N, a.ld, (H + KVH) * D, KVH * D);
  const auto rq = columns(ref.dqkv, N, a.ld, 0, H * D), rk = columns(ref.dqkv, N, a.ld, H * D, KVH * D),
             rv = columns(ref.dqkv, N, a.ld, (H + KVH) * D, KVH * D);
  INFO("max errors: out " << max_error(out, ref.out) << ", dq " << max_error(dq, rq) << ", dk " << max_error(dk, rk)
                          << ", dv " << max_error(dv, rv) << "; max|ref|: out " << max_abs(ref.out) << ", dq "
                          << max_abs(rq) << ", dk " << max_abs(rk) << ", dv " << max_abs(rv));
  require_close_fp32("out", out, ref.out);
  require_close("lse", got.lse, ref.lse, 1e-5, 1e-5);
  require_close_fp32("dq", dq, rq);
  require_close_fp32("dk", dk, rk);
  require_close_fp32("dv", dv, rv);
  const auto pad = columns(got.dqkv, N, a.ld, (H + 2 * KVH) * D, 3);
  CHECK(std::all_of(pad.begin(), pad.end(), [](double x) { return x == kSentinel; }));
}

// ---- naive bf16 attention (the baseline of the bf16 rule) ------------------------------------------
// Per (segment, head): S = bf16(scale * Q K^T), P = bf16(softmax(S)), O = bf16(P V) forward;
// dP = bf16(dO V^T), D = rowsum(dO * O), dS = bf16(P * (dP - D)), dV = bf16(P^T dO),
// dQ = bf16(scale * dS K), dK = bf16(scale * dS^T Q) backward, all sums in fp32.
struct NaiveBf16 {
  KernelVector<double> out, dqkv;
};

NaiveBf16 naive_bf16(const AttnData& a, const KernelVector<float>& qkv, const KernelVector<float>& dout) {
  const AttentionArgs& p = a.p;
  const int H = p.H, KVH = p.KVH, D = p.D, ld = a.ld, group = H / KVH;
  NaiveBf16 r;
  r.out.assign(static_cast<size_t>(p.N) * H * D, 0.0);
  r.dqkv.assign(qkv.size(), 0.0);
  KernelVector<float> dk_acc(qkv.size(), 0.0f), dv_acc(qkv.size(), 0.0f);
  auto Q = [&](int i, int h, int d) { return qkv[static_cast<size_t>(i) * ld + h * D + d]; };
  auto K = [&](int j, int g, int d) { return qkv[static_cast<size_t>(j) * ld + (H + g) * D + d]; };
  auto V = [&](int j, int g, int d) { return qkv[static_cast<size_t>(j) * ld + (H + KVH + g) * D + d]; };
  for (int s = 0; s < p.S; ++s) {
    const int b = p.cu_seqlens_host[s], e = p.cu_seqlens_host[s + 1], L = e - b;
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      KernelVector<float> P(static_cast<size_t>(L) * L, 0.0f), dS(static_cast<size_t>(L) * L, 0.0f);
      KernelVector<float> O(static_cast<size_t>(L) * D);
      for (int i = 0; i < L; ++i) {
        float m = -INFINITY, sum = 0;
        KernelVector<float> srow(i + 1);
        for (int j = 0; j <= i; ++j) {
          float dot = 0;
          for (int d = 0; d < D; ++d) dot += Q(b + i, h, d) * K(b + j, g, d);
          srow[j] = bf(dot * p.scale);
          m = std::max(m, srow[j]);
        }
        for (int j = 0; j <= i; ++j) sum += std::exp(srow[j] - m);
        for (int j = 0; j <= i; ++j) P[static_cast<size_t>(i) * L + j] = bf(std::exp(srow[j] - m) / sum);
        for (int d = 0; d < D; ++d) {
          float acc = 0;
          for (int j = 0; j <= i; ++j) acc += P[static_cast<size_t>(i) * L + j] * V(b + j, g, d);
          O[static_cast<size_t>(i) * D + d] = bf(acc);
          r.out[(static_cast<size_t>(b + i) * H + h) * D + d] = O[static_cast<size_t>(i) * D + d];
        }
      }
      for (int i = 0; i < L; ++i) {
        const float* dOi = dout.data() + (static_cast<size_t>(b + i) * H + h) * D;
        float Di = 0;
        for (int d = 0; d < D; ++d) Di += dOi[d] * O[static_cast<size_t>(i) * D + d];
        for (int j = 0; j <= i; ++j) {
          float dp = 0;
          for (int d = 0; d < D; ++d) dp += dOi[d] * V(b + j, g, d);
          dS[static_cast<size_t>(i) * L + j] = bf(P[static_cast<size_t>(i) * L + j] * (bf(dp) - Di));
        }
        for (int d = 0; d < D; ++d) {
          float acc = 0;
          for (int j = 0; j <= i; ++j) acc += dS[static_cast<size_t>(i) * L + j] * K(b + j, g, d);
          r.dqkv[static_cast<size_t>(b + i) * ld + h * D + d] = bf(acc * p.scale);
        }
      }
      // dK, dV sum over the group's heads in fp32, rounded once at the end.
      for (int j = 0; j < L; ++j)
        for (int d = 0; d < D; ++d) {
          float ak = 0, av = 0;
          for (int i = j; i < L; ++i) {
            ak += dS[static_cast<size_t>(i) * L + j] * Q(b + i, h, d);
            av += P[static_cast<size_t>(i) * L + j] * dout[(static_cast<size_t>(b + i) * H + h) * D + d];
          }
          dk_acc[static_cast<size_t>(b + j) * ld + (H + g) * D + d] += ak * p.scale;
          dv_acc[static_cast<size_t>(b + j) * ld + (H + KVH + g) * D + d] += av;
        }
    }
  }
  for (int n = 0; n < p.N; ++n)
    for (int c = H * D; c < (H + 2 * KVH) * D; ++c) {
      const size_t at = static_cast<size_t>(n) * ld + c;
      r.dqkv[at] = bf(c < (H + KVH) * D ? dk_acc[at] : dv_acc[at]);
    }
  return r;
}

// `tensor_cores`: the case must run the tensor-core kernels (kernels/attention_tc.h): ld a multiple
// of 8 and a head dim they cover. Otherwise the odd ld sends bf16 to the SIMT kernels.
void check_bf16(const AttnCase& c, bool tensor_cores = false) {
  INFO(describe(c) << (tensor_cores ? " (tensor cores)" : " (SIMT)"));
  AttnData a = make_data(c, tensor_cores ? 8 : 3);
  for (auto& x : a.qkv) x = bf(x);  // the inputs are bf16 values, for all three implementations
  for (auto& x : a.dout) x = bf(x);
  const AttentionArgs& p = a.p;
  const int N = a.N, H = c.H, KVH = c.KVH, D = c.D;
  KernelVector<bf16> qkv(a.qkv.size()), dout(a.dout.size()), out(static_cast<size_t>(N) * H * D), dqkv(a.qkv.size());
  for (size_t i = 0; i < qkv.size(); ++i) qkv[i] = __float2bfloat16(a.qkv[i]);
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = __float2bfloat16(a.dout[i]);
  KernelVector<float> lse(static_cast<size_t>(N) * H), delta(static_cast<size_t>(N) * H);
  REQUIRE(attention_tc_supports(p, qkv.data(), out.data(), dqkv.data()) == tensor_cores);
  attention_forward(out.data(), lse.data(), qkv.data(), p, nullptr);
  attention_backward(dqkv.data(), delta.data(), dout.data(), qkv.data(), out.data(), lse.data(), p, nullptr);

  const Reference ref = reference(a, to_double(a.qkv), to_double(a.dout));
  const NaiveBf16 naive = naive_bf16(a, a.qkv, a.dout);
  require_close("lse", lse, ref.lse, 1e-5, 1e-5);
  const KernelVector<double> got_dqkv = to_double(dqkv);
  struct Part {
    const char* name;
    KernelVector<double> got, naive, ref;
  };
  const Part parts[] = {
      {"out", to_double(out), naive.out, ref.out},
      {"dq", columns(got_dqkv, N, a.ld, 0, H * D), columns(naive.dqkv, N, a.ld, 0, H * D),
       columns(ref.dqkv, N, a.ld, 0, H * D)},
      {"dk", columns(got_dqkv, N, a.ld, H * D, KVH * D), columns(naive.dqkv, N, a.ld, H * D, KVH * D),
       columns(ref.dqkv, N, a.ld, H * D, KVH * D)},
      {"dv", columns(got_dqkv, N, a.ld, (H + KVH) * D, KVH * D), columns(naive.dqkv, N, a.ld, (H + KVH) * D, KVH * D),
       columns(ref.dqkv, N, a.ld, (H + KVH) * D, KVH * D)},
  };
  for (const Part& part : parts) {
    const double err = max_error(part.got, part.ref), base = max_error(part.naive, part.ref);
    const double floor = 1e-3 * max_abs(part.ref);
    INFO(part.name << ": max error " << err << ", naive bf16 " << base << ", floor " << floor);
    CHECK(err <= 2 * base + floor);
    INFO(describe(c) << " bf16 " << part.name << ": max error " << err << " vs naive " << base << " (max|ref| "
                     << max_abs(part.ref) << ")");
  }
}

// Row 5 is a segment of its own ({0, 5, 6, ...}): softmax over one key, so out is exactly its v.
void check_length1_row_is_its_value(const AttnCase& c) {
  INFO(describe(c));
  const AttnData a = make_data(c);
  const Fp32Result r = run_fp32(a);
  for (int h = 0; h < c.H; ++h)
    for (int d = 0; d < c.D; ++d)
      CHECK(r.out[(5 * c.H + h) * c.D + d] == a.qkv[5 * a.ld + (c.H + c.KVH) * c.D + d]);
}

}  // namespace

TEST_CASE("attention fp32: one row", "[kernels][attention]") { check_fp32({2, 1, 16, {0, 1}, 1}); }

TEST_CASE("attention fp32: 97 rows, GQA 6/2, D 64", "[kernels][attention]") {
  check_fp32({6, 2, 64, {0, 97}, 2});
}

TEST_CASE("attention fp32: packed samples with length-1 segments, MHA, D 40", "[kernels][attention]") {
  check_fp32({4, 4, 40, {0, 1, 30, 31, 32, 64, 65, 97}, 3});
}

TEST_CASE("attention fp32: D 128, odd D 3, tiles straddling segments", "[kernels][attention]") {
  check_fp32({2, 1, 128, {0, 17, 50}, 4});
  check_fp32({3, 1, 3, {0, 5, 6, 40}, 5});
  check_fp32({6, 2, 16, {0, 31, 33, 48, 49, 80}, 6});
}

// Head dims past 128 (Gemma: 256) run the kernels sized for 256, whose tiles need more than the
// 48 KiB of shared memory a block gets without opting in (the emulator faults a launch that lacks it).
TEST_CASE("attention fp32: D 256 and D 129, 200: odd N, length-1 samples, GQA", "[kernels][attention]") {
  check_fp32({2, 1, 256, {0, 1, 34, 35, 97}, 21});
  check_fp32({4, 2, 256, {0, 1}, 22});
  check_fp32({3, 3, 129, {0, 33, 34, 61}, 23});
  check_fp32({2, 2, 200, {0, 1, 2, 19}, 24});
}

TEST_CASE("attention fp32: D 256, a length-1 segment returns its own value", "[kernels][attention]") {
  check_length1_row_is_its_value({2, 1, 256, {0, 5, 6, 9}, 25});
}

TEST_CASE("attention bf16 D 256: at most twice the error of a naive bf16 implementation", "[kernels][attention]") {
  check_bf16({4, 2, 256, {0, 1, 40, 41, 97}, 26});
}

TEST_CASE("attention fp32: 1025 rows in 4 samples, GQA 4/1, D 40", "[kernels][attention]") {
  check_fp32({4, 1, 40, {0, 300, 301, 700, 1025}, 8});
}

TEST_CASE("attention fp32: 1025 rows in one sample, GQA 6/2, D 64", "[kernels][attention][slow]") {
  check_fp32({6, 2, 64, {0, 1025}, 7});  // ~3 s emulated, more under a sanitizer
}

TEST_CASE("attention fp32: a length-1 segment returns its own value", "[kernels][attention]") {
  check_length1_row_is_its_value({2, 1, 40, {0, 5, 6, 9}, 9});
}

TEST_CASE("attention bf16: at most twice the error of a naive bf16 implementation", "[kernels][attention]") {
  check_bf16({6, 2, 40, {0, 1, 30, 31, 64, 97}, 10});
  check_bf16({4, 4, 64, {0, 97}, 11});
  check_bf16({2, 1, 16, {0, 1}, 12});
}

// The tensor-core kernels (bf16, ld % 8 == 0): lengths off the 64-row tiles (1, 63, 65, 130),
// packed segments of length 1, GQA 8:1 and MHA, each head dim they cover.
TEST_CASE("attention tensor cores D 64: GQA 8:1, segments of 1, 63, 65, 1, 130", "[kernels][attention][tensor_cores]") {
  check_bf16({8, 1, 64, {0, 1, 64, 129, 130, 260}, 31}, true);
}

TEST_CASE("attention tensor cores D 128: MHA and MQA, lengths 63, 1, 130", "[kernels][attention][tensor_cores]") {
  check_bf16({2, 2, 128, {0, 63, 64, 194}, 32}, true);
  check_bf16({3, 1, 128, {0, 1}, 33}, true);
}

TEST_CASE("attention tensor cores D 96 and 256", "[kernels][attention][tensor_cores]") {
  check_bf16({2, 1, 96, {0, 70, 71}, 34}, true);
  check_bf16({2, 1, 256, {0, 1, 40, 105}, 35}, true);
}

TEST_CASE("attention tensor cores: 1025 rows, GQA 4:1, D 128 and D 64", "[kernels][attention][tensor_cores][slow]") {
  check_bf16({4, 1, 128, {0, 1025}, 36}, true);
  check_bf16({8, 1, 64, {0, 1, 1025}, 37}, true);
}

#if IFT_TEST_EMULATED  // the emulator's thread and block schedules
TEST_CASE("attention: bitwise deterministic across runs and schedules", "[kernels][attention]") {
  const AttnCase c{6, 2, 40, {0, 1, 30, 31, 64, 97}, 13};
  const AttnData a = make_data(c);
  const Fp32Result first = run_fp32(a);
  const Fp32Result again = run_fp32(a);
  simt::Options o = simt::options();
  o.schedule = simt::Schedule::random;
  o.seed = 2024;
  o.workers = 2;
  Fp32Result shuffled;
  {
    simt::ScopedOptions scoped(o);
    shuffled = run_fp32(a);
  }
  for (const Fp32Result* r : {&again, static_cast<const Fp32Result*>(&shuffled)}) {
    CHECK(std::memcmp(r->out.data(), first.out.data(), sizeof(float) * first.out.size()) == 0);
    CHECK(std::memcmp(r->lse.data(), first.lse.data(), sizeof(float) * first.lse.size()) == 0);
    CHECK(std::memcmp(r->dqkv.data(), first.dqkv.data(), sizeof(float) * first.dqkv.size()) == 0);
  }
}
#endif

TEST_CASE("attention: bad shapes are errors naming the op and the argument", "[kernels][attention]") {
  const AttnCase c{4, 2, 8, {0, 3, 7}, 14};
  const AttnData good = make_data(c);
  KernelVector<float> out(7 * 4 * 8), lse(7 * 4), dqkv(good.qkv.size()), delta(7 * 4);
  auto fwd = [&](const AttentionArgs& p) { attention_forward(out.data(), lse.data(), good.qkv.data(), p, nullptr); };
  auto bwd = [&](const AttentionArgs& p) {
    attention_backward(dqkv.data(), delta.data(), good.dout.data(), good.qkv.data(), out.data(), lse.data(), p, nullptr);
  };
  CHECK_NOTHROW(fwd(good.p));
  CHECK_NOTHROW(bwd(good.p));
  auto with = [&](auto change) {
    AttentionArgs p = good.p;
    change(p);
    return p;
  };
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.KVH = 3; })),
                    Catch::Contains("attention_forward") && Catch::Contains("do not group"));
  CHECK_THROWS_WITH(bwd(with([](auto& p) { p.KVH = 3; })), Catch::Contains("attention_backward"));
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.KVH = 0; })), Catch::Contains("KVH"));
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.D = 0; })), Catch::Contains("head dim D"));
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.D = 257; p.ld = 10000; })), Catch::Contains("head dim D"));
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.ld = 63; })), Catch::Contains("row stride ld"));
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.N = 0; })), Catch::Contains("N (rows)"));
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.S = 0; })), Catch::Contains("S (segments)"));
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.cu_seqlens = nullptr; })), Catch::Contains("cu_seqlens"));
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.scale = 0; })), Catch::Contains("scale"));
  CHECK_THROWS_WITH(fwd(with([](auto& p) { p.scale = NAN; })), Catch::Contains("scale"));
  const KernelVector<int32_t> flat = {0, 3, 3, 7}, short_end = {0, 3, 6}, late_start = {1, 3, 7};
  CHECK_THROWS_WITH(fwd(with([&](auto& p) { p.cu_seqlens_host = flat.data(); p.S = 3; })),
                    Catch::Contains("increase strictly"));
  CHECK_THROWS_WITH(fwd(with([&](auto& p) { p.cu_seqlens_host = short_end.data(); })),
                    Catch::Contains("cu_seqlens[S = 2]"));
  CHECK_THROWS_WITH(fwd(with([&](auto& p) { p.cu_seqlens_host = late_start.data(); })),
                    Catch::Contains("cu_seqlens[0]"));
  CHECK_THROWS_WITH(attention_forward(nullptr, lse.data(), good.qkv.data(), good.p, nullptr),
                    Catch::Contains("must not be null"));
}
