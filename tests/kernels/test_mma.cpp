// The tensor-core wrappers (kernels/mma.cuh) and, in the emulator, their twins
// (kernels/simt/tensor_core.h), tested without trusting the twins' own statement of the layouts:
//  - layouts: every lane's registers are built (mma inputs) or decoded (mma outputs, ldmatrix
//    results) on the host with a second statement of the PTX ISA's fragment layouts, written here
//    as the ISA words them (conditions on the element index, groupID and threadID_in_group) and
//    spot-checked against entries read off the ISA's figures, as data;
//  - cross-identities: ldmatrix.x4 of a row-major tile is the A fragment, ldmatrix.x2 of K the B
//    fragment of q k^T, ldmatrix.x2.trans of V the B fragment of P v, and the S accumulator packed
//    to bf16 the A fragment of P v (end to end against host products);
//  - faults (emulator only): one per hardware requirement.
// Inputs encode their (matrix, row, col): values that bf16 holds exactly, so layouts compare bit for
// bit; other products are compared with |err| <= 1e-5 sum|terms| (sums of 16 exact bf16 products:
// the emulator rounds once, a tensor core's fp32 accumulation may truncate at each of its steps).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "tests/kernels/kernel_support.h"
#include "tests/kernels/mma_kernels.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;
using namespace ift::mma_test;

namespace {

// ---- the PTX ISA's statement (9.7.14.5.8, .bf16 m16n8k16; 9.7.14.5.15 ldmatrix) ---------------
struct Coord {
  int row, col;
};
int group_id(int lane) { return lane >> 2; }
int thread_in_group(int lane) { return lane % 4; }

// A: "row = groupID for a_i where 0 <= i < 2 || 4 <= i < 6, groupID + 8 otherwise;
//     col = (threadID_in_group * 2) + (i & 0x1) for a_i where i < 4, ... + 8 for i >= 4".
Coord isa_a(int lane, int i) {
  const int row = (i < 2 || (i >= 4 && i < 6)) ? group_id(lane) : group_id(lane) + 8;
  const int col = i < 4 ? thread_in_group(lane) * 2 + (i & 1) : thread_in_group(lane) * 2 + (i & 1) + 8;
  return {row, col};
}
// B: "row = (threadID_in_group * 2) + (i & 0x1) for b_i where i < 2, ... + 8 for i >= 2; col = groupID".
Coord isa_b(int lane, int i) {
  const int row = i < 2 ? thread_in_group(lane) * 2 + (i & 1) : thread_in_group(lane) * 2 + (i & 1) + 8;
  return {row, group_id(lane)};
}
// C/D: "row = groupID for c_i where i < 2, groupID + 8 for i >= 2; col = (threadID_in_group * 2) + (i & 0x1)".
Coord isa_c(int lane, int i) {
  return {i < 2 ? group_id(lane) : group_id(lane) + 8, thread_in_group(lane) * 2 + (i & 1)};
}
// ldmatrix: "each thread receives ... row = laneid / 4, elements 2*(laneid % 4), 2*(laneid % 4)+1";
// .trans delivers the same elements of the transposed matrix.
Coord isa_ldmatrix(int lane, int i, bool trans) {
  const Coord c{lane / 4, 2 * (lane % 4) + i};
  return trans ? Coord{c.col, c.row} : c;
}

// Entries of the ISA's figures: (lane, element) -> (row, col).
struct FigureEntry {
  int lane, i, row, col;
};
constexpr FigureEntry kFigureA[] = {{0, 0, 0, 0},  {0, 1, 0, 1},  {1, 0, 0, 2},  {3, 1, 0, 7},  {4, 0, 1, 0},
                                    {0, 2, 8, 0},  {0, 4, 0, 8},  {0, 6, 8, 8},  {31, 7, 15, 15}, {5, 3, 9, 3},
                                    {30, 4, 7, 12}, {17, 5, 4, 11}};
constexpr FigureEntry kFigureB[] = {{0, 0, 0, 0}, {0, 1, 1, 0}, {1, 0, 2, 0},  {4, 0, 0, 1},
                                    {0, 2, 8, 0}, {3, 3, 15, 0}, {31, 3, 15, 7}, {9, 1, 3, 2}};
constexpr FigureEntry kFigureC[] = {{0, 0, 0, 0}, {0, 1, 0, 1}, {1, 0, 0, 2}, {4, 0, 1, 0},
                                    {0, 2, 8, 0}, {3, 3, 8, 7}, {31, 3, 15, 7}, {13, 2, 11, 2}};

TEST_CASE("mma layouts: the ISA's wording agrees with entries of its figures", "[kernels][mma]") {
  for (const auto& e : kFigureA) CHECK((isa_a(e.lane, e.i).row == e.row && isa_a(e.lane, e.i).col == e.col));
  for (const auto& e : kFigureB) CHECK((isa_b(e.lane, e.i).row == e.row && isa_b(e.lane, e.i).col == e.col));
  for (const auto& e : kFigureC) CHECK((isa_c(e.lane, e.i).row == e.row && isa_c(e.lane, e.i).col == e.col));
  // Each layout covers its matrix exactly once.
  int a[16][16] = {}, b[16][8] = {}, c[16][8] = {};
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 8; ++i) ++a[isa_a(l, i).row][isa_a(l, i).col];
    for (int i = 0; i < 4; ++i) ++b[isa_b(l, i).row][isa_b(l, i).col], ++c[isa_c(l, i).row][isa_c(l, i).col];
  }
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 16; ++k) CHECK(a[r][k] == 1);
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) CHECK((b[r][n] == 1 && c[r][n] == 1));
}

uint16_t bits_of(float x) {
  const bf16 b = __float2bfloat16(x);
  uint16_t u;
  std::memcpy(&u, &b, 2);
  return u;
}
float from_bits(uint16_t u) {
  bf16 b;
  std::memcpy(&b, &u, 2);
  return __bfloat162float(b);
}
uint32_t pack(float lo, float hi) { return uint32_t{bits_of(lo)} | uint32_t{bits_of(hi)} << 16; }

// Registers of every lane for a matrix given by value(row, col), per the ISA's layout `where`.
template <int kRegs, class Where, class Value>
KernelVector<uint32_t> fragments(Where where, Value value) {
  KernelVector<uint32_t> regs(32 * kRegs);
  for (int l = 0; l < 32; ++l)
    for (int r = 0; r < kRegs; ++r) {
      const Coord lo = where(l, 2 * r), hi = where(l, 2 * r + 1);
      regs[l * kRegs + r] = pack(value(lo.row, lo.col), value(hi.row, hi.col));
    }
  return regs;
}

TEST_CASE("mma.m16n8k16: (row, col)-encoded operands through the ISA's layouts", "[kernels][mma]") {
  // A(r, k) = r + k/16 and B(k, n) = k - n/8 + ... are exact in bf16; an identity-like B shows
  // whether rows and columns land where the ISA says.
  const auto A = [](int r, int k) { return float(r) + float(k) / 16.0f; };
  const auto B = [](int k, int n) { return k == n ? 1.0f : (k == n + 8 ? 2.0f : 0.0f); };
  const auto C = [](int r, int n) { return 100.0f * r + n; };
  KernelVector<uint32_t> a = fragments<4>(isa_a, A), b = fragments<2>(isa_b, B);
  KernelVector<float> c(128), d(128, -1.0f);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) c[l * 4 + i] = C(isa_c(l, i).row, isa_c(l, i).col);
  mma_lanes(a.data(), b.data(), c.data(), d.data(), 32, 32);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const Coord x = isa_c(l, i);
      double ref = C(x.row, x.col);
      for (int k = 0; k < 16; ++k) ref += double(A(x.row, k)) * B(k, x.col);
      INFO("lane " << l << " d" << i << " = D(" << x.row << ", " << x.col << ")");
      CHECK(d[l * 4 + i] == float(ref));
    }
}

TEST_CASE("mma.m16n8k16: random bf16 operands against a host product", "[kernels][mma]") {
  const uint32_t seed = 20261201;
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  float A[16][16], B[16][8], C[16][8];
  for (auto& row : A)
    for (float& x : row) x = from_bits(bits_of(u(rng)));
  for (auto& row : B)
    for (float& x : row) x = from_bits(bits_of(u(rng)));
  for (auto& row : C)
    for (float& x : row) x = u(rng);
  KernelVector<uint32_t> a = fragments<4>(isa_a, [&](int r, int k) { return A[r][k]; });
  KernelVector<uint32_t> b = fragments<2>(isa_b, [&](int k, int n) { return B[k][n]; });
  KernelVector<float> c(128), d(128);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) c[l * 4 + i] = C[isa_c(l, i).row][isa_c(l, i).col];
  mma_lanes(a.data(), b.data(), c.data(), d.data(), 32, 32);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const Coord x = isa_c(l, i);
      double ref = C[x.row][x.col], mag = std::abs(ref);
      for (int k = 0; k < 16; ++k) ref += double(A[x.row][k]) * B[k][x.col], mag += std::abs(double(A[x.row][k]) * B[k][x.col]);
      CHECK(std::abs(d[l * 4 + i] - ref) <= 1e-5 * mag);
    }
}

// Tile of `rows` rows of 8: element (row, col) = 8 * row + col, exact in bf16 below 256.
KernelVector<bf16> encoded_tile(int rows) {
  KernelVector<bf16> t(size_t(rows) * 8);
  for (int e = 0; e < rows * 8; ++e) t[e] = __float2bfloat16(float(e));
  return t;
}

TEST_CASE("ldmatrix x1/x2/x4 and .trans: per-lane registers follow the ISA", "[kernels][mma]") {
  const KernelVector<bf16> tile = encoded_tile(32);
  struct V {
    LdmatrixVariant v;
    int count;
    bool trans;
  };
  for (const V& v : {V{LdmatrixVariant::x1, 1, false}, V{LdmatrixVariant::x2, 2, false}, V{LdmatrixVariant::x4, 4, false},
                     V{LdmatrixVariant::x1_trans, 1, true}, V{LdmatrixVariant::x2_trans, 2, true},
                     V{LdmatrixVariant::x4_trans, 4, true}}) {
    // Lane l gives row (31 - l): the rows of matrix j come from lanes 8j..8j+7 in any order.
    KernelVector<int> offsets(32);
    for (int l = 0; l < 32; ++l) offsets[l] = 31 - l;
    KernelVector<uint32_t> out(128, 0xdeadbeefu);
    ldmatrix_lanes(tile.data(), 32, offsets.data(), v.v, 0, false, out.data());
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < 4; ++j) {
        INFO("x" << v.count << (v.trans ? ".trans" : "") << " lane " << l << " register " << j);
        if (j >= v.count) {
          CHECK(out[l * 4 + j] == 0u);
          continue;
        }
        for (int i = 0; i < 2; ++i) {
          const Coord x = isa_ldmatrix(l, i, v.trans);
          const int tile_row = offsets[8 * j + x.row];
          const float want = float(8 * tile_row + x.col);
          CHECK(from_bits(static_cast<uint16_t>(out[l * 4 + j] >> (16 * i))) == want);
        }
      }
  }
}

TEST_CASE("ldmatrix.x4 of a row-major 16x16 tile is the A fragment", "[kernels][mma]") {
  // The 16x16 tile (r, c) = 16 r + c... stored as 32 rows of 8: tile row 2r + c/8 holds (r, 8(c/8)..).
  const KernelVector<bf16> tile = encoded_tile(32);  // element 8*(2r + c/8) + c%8 = 16 r + c
  KernelVector<int> offsets(32);
  for (int l = 0; l < 32; ++l) offsets[l] = 2 * (l % 16) + l / 16;  // lane l: row l % 16, cols 8 (l / 16)..
  KernelVector<uint32_t> out(128);
  ldmatrix_lanes(tile.data(), 32, offsets.data(), LdmatrixVariant::x4, 0, false, out.data());
  const KernelVector<uint32_t> a = fragments<4>(isa_a, [](int r, int c) { return float(16 * r + c); });
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < 4; ++j) {
      INFO("lane " << l << " register " << j);
      CHECK(out[l * 4 + j] == a[l * 4 + j]);
    }
}

TEST_CASE("ldmatrix.x2 of K is the B fragment of q k^T - .trans of V the B fragment of P v", "[kernels][mma]") {
  const KernelVector<bf16> tile = encoded_tile(32);
  {  // K (8 keys x 16 dims) as rows of 8: key n, dims 8h.. at tile row 2n + h. B(k, n) = K(n, k).
    KernelVector<int> offsets(32);
    for (int l = 0; l < 32; ++l) offsets[l] = 2 * (l % 8) + (l / 8) % 2;
    KernelVector<uint32_t> out(128);
    ldmatrix_lanes(tile.data(), 32, offsets.data(), LdmatrixVariant::x2, 0, false, out.data());
    const KernelVector<uint32_t> b = fragments<2>(isa_b, [](int k, int n) { return float(16 * n + k); });
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < 2; ++j) CHECK(out[l * 4 + j] == b[l * 2 + j]);
  }
  {  // V (16 keys x 8 dims), key k at tile row k. B(k, n) = V(k, n).
    KernelVector<int> offsets(32);
    for (int l = 0; l < 32; ++l) offsets[l] = l % 16;
    KernelVector<uint32_t> out(128);
    ldmatrix_lanes(tile.data(), 16, offsets.data(), LdmatrixVariant::x2_trans, 0, false, out.data());
    const KernelVector<uint32_t> b = fragments<2>(isa_b, [](int k, int n) { return float(8 * k + n); });
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < 2; ++j) CHECK(out[l * 4 + j] == b[l * 2 + j]);
  }
}

TEST_CASE("attention core: S = q k^T, bf16(S) as the A fragment, P v (end to end)", "[kernels][mma]") {
  const uint32_t seed = 77;
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  KernelVector<bf16> q(256), k(256), v(128);
  for (bf16& x : q) x = __float2bfloat16(u(rng));
  for (bf16& x : k) x = __float2bfloat16(u(rng));
  for (bf16& x : v) x = __float2bfloat16(u(rng));
  KernelVector<float> s(256, -1.0f), o(128, -1.0f);
  attention_core(q.data(), k.data(), v.data(), s.data(), o.data());
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < 16; ++n) {
      double ref = 0, mag = 0;
      for (int d = 0; d < 16; ++d) {
        const double p = double(__bfloat162float(q[r * 16 + d])) * __bfloat162float(k[n * 16 + d]);
        ref += p, mag += std::abs(p);
      }
      CHECK(std::abs(s[r * 16 + n] - ref) <= 1e-5 * mag);
    }
    for (int n = 0; n < 8; ++n) {  // P = bf16(S) exactly as the kernel rounds it
      double ref = 0, mag = 0;
      for (int j = 0; j < 16; ++j) {
        const double p = double(from_bits(bits_of(s[r * 16 + j]))) * __bfloat162float(v[j * 8 + n]);
        ref += p, mag += std::abs(p);
      }
      CHECK(std::abs(o[r * 8 + n] - ref) <= 1e-5 * mag + 1e-30);
    }
  }
}

// The per-lane registers for (row, col)-encoded inputs, as text: ldmatrix of every variant over
// the tile (e) = e (lane l gives row l), and mma with A(r, k) = r + k/16, B(k, n) = k + 16 n... exact
// in bf16 and their products' sums exact in fp32, so the text is the same on any correct
// implementation, bit for bit. On a GPU, IFT_MMA_DUMP=FILE writes it (tools/gpu_check.sh, step
// mma.dump); once committed as tests/fixtures/mma_fragments.txt, every run must reproduce it.
std::string fragment_dump() {
  std::ostringstream os;
  os << std::hex;
  const KernelVector<bf16> tile = encoded_tile(32);
  KernelVector<int> offsets(32);
  for (int l = 0; l < 32; ++l) offsets[l] = l;
  const char* names[] = {"x1", "x2", "x4", "x1.trans", "x2.trans", "x4.trans"};
  for (int v = 0; v < 6; ++v) {
    KernelVector<uint32_t> out(128, 0);
    ldmatrix_lanes(tile.data(), 32, offsets.data(), static_cast<LdmatrixVariant>(v), 0, false, out.data());
    for (int l = 0; l < 32; ++l)
      os << "ldmatrix." << names[v] << " lane " << std::dec << l << std::hex << ": " << out[l * 4] << " " << out[l * 4 + 1]
         << " " << out[l * 4 + 2] << " " << out[l * 4 + 3] << "\n";
  }
  // Registers filled by element: a[4l + j] holds the A elements the ISA gives lane l, etc.
  KernelVector<uint32_t> a = fragments<4>(isa_a, [](int r, int k) { return float(r) + float(k) / 16.0f; });
  KernelVector<uint32_t> b = fragments<2>(isa_b, [](int k, int n) { return float(k) + 16.0f * float(n); });
  KernelVector<float> c(128, 0.0f), d(128);
  mma_lanes(a.data(), b.data(), c.data(), d.data(), 32, 32);
  for (int l = 0; l < 32; ++l) {
    os << "mma lane " << std::dec << l << std::hex << ":";
    for (int i = 0; i < 4; ++i) {
      uint32_t bits;
      std::memcpy(&bits, &d[l * 4 + i], 4);
      os << " " << bits;
    }
    os << "\n";
  }
  return os.str();
}

TEST_CASE("tensor-core fragments: the dump of (row, col)-encoded inputs matches the GPU's fixture", "[kernels][mma][dump]") {
  const std::string dump = fragment_dump();
  if (const char* path = std::getenv("IFT_MMA_DUMP"); path != nullptr && *path != '\0') {
    std::ofstream(path) << dump;
    INFO("wrote " << path);
  }
  std::ifstream in(fixture("mma_fragments.txt"));
  if (!in) {
    WARN("no tests/fixtures/mma_fragments.txt yet (it needs a GPU: tools/gpu_check.sh, step mma.dump): "
         "the twins are checked against the ISA's tables only");
    return;
  }
  std::stringstream want;
  want << in.rdbuf();
  CHECK(dump == want.str());
}

#if IFT_TEST_EMULATED
TEST_CASE("cp.async: poisoned until its wait_group, zero-fill, groups complete oldest first", "[kernels][mma]") {
  const int threads = 64;
  KernelVector<float> in(threads * 8), out(4 * threads * 8, 7.0f);
  for (size_t e = 0; e < in.size(); ++e) in[e] = float(e) + 0.5f;
  cp_async_run(in.data(), out.data(), threads, 1);
  const auto at = [&](int slot, int t, int i) { return out[(size_t(slot) * threads + t) * 8 + i]; };
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < 8; ++i) {
      INFO("thread " << t << " float " << i);
      const float data = in[t * 8 + i], second = t % 2 == 0 ? data : 0.0f;
      uint32_t bits0, bits1;
      const float s0 = at(0, t, i), s1 = at(1, t, i);
      std::memcpy(&bits0, &s0, 4);
      std::memcpy(&bits1, &s1, 4);
      CHECK(bits0 == 0xffffffffu);  // before any wait: poison
      if (i < 4) CHECK(s1 == data);
      else CHECK(bits1 == 0xffffffffu);  // the second group is still pending after wait_group 1
      CHECK(at(2, t, i) == (i < 4 ? data : second));
      const int n = (t + 1) % threads;
      CHECK(at(3, t, i) == (i < 4 ? in[n * 8 + i] : (n % 2 == 0 ? in[n * 8 + i] : 0.0f)));
    }
}

TEST_CASE("tensor-core twins: each hardware requirement is a fault", "[kernels][mma]") {
  KernelVector<uint32_t> a(128, 0), b(64, 0);
  KernelVector<float> c(128, 0), d(128);
  SECTION("mma with a lane missing") {
    CHECK_THROWS_WITH(mma_lanes(a.data(), b.data(), c.data(), d.data(), 32, 31),
                      Catch::Contains("mma.sync") && Catch::Contains("exited"));
  }
  SECTION("mma in a partial warp") {
    CHECK_THROWS_WITH(mma_lanes(a.data(), b.data(), c.data(), d.data(), 16, 16),
                      Catch::Contains("mma.sync") && Catch::Contains("do not exist"));
  }
  const KernelVector<bf16> tile = encoded_tile(32);
  KernelVector<int> offsets(32);
  for (int l = 0; l < 32; ++l) offsets[l] = l;
  KernelVector<uint32_t> out(128);
  SECTION("ldmatrix row address not 16-byte aligned") {
    CHECK_THROWS_WITH(ldmatrix_lanes(tile.data(), 32, offsets.data(), LdmatrixVariant::x4, 8, false, out.data()),
                      Catch::Contains("ldmatrix: lane ") &&
                          Catch::Contains("not 16-byte aligned") && Catch::Contains("mma_kernels.cu"));
  }
  SECTION("ldmatrix row address in global memory") {
    CHECK_THROWS_WITH(ldmatrix_lanes(tile.data(), 32, offsets.data(), LdmatrixVariant::x1, 0, true, out.data()),
                      Catch::Contains("outside the block's shared memory"));
  }
  SECTION("ldmatrix past the end of the shared tile") {
    KernelVector<int> past(32, 64);  // row 64 of a 64-row tile
    CHECK_THROWS_WITH(ldmatrix_lanes(tile.data(), 32, past.data(), LdmatrixVariant::x2, 0, false, out.data()),
                      Catch::Contains("outside the block's shared memory"));
  }
  KernelVector<float> in(64 * 8, 1.0f), cp_out(4 * 64 * 8);
  SECTION("cp.async pending at exit") {
    CHECK_THROWS_WITH(cp_async_run(in.data(), cp_out.data(), 64, 2),
                      Catch::Contains("cp.async copies not completed"));
  }
  SECTION("cp.async misaligned destination") {
    CHECK_THROWS_WITH(cp_async_run(in.data(), cp_out.data(), 64, 3), Catch::Contains("not 16-byte aligned"));
  }
  SECTION("cp.async destination outside shared memory") {
    CHECK_THROWS_WITH(cp_async_run(in.data(), cp_out.data(), 64, 4),
                      Catch::Contains("destination is not in the block's shared memory"));
  }
}
#endif

}  // namespace
