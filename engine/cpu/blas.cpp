#include "engine/cpu/blas.h"

#include <cblas.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "engine/base/error.h"

namespace ift::cpu {

// ---- CPU features ---------------------------------------------------------------------------

namespace {

struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};
Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) r = Regs{};
  return r;
}
uint64_t xgetbv0() {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
bool bit(unsigned v, int i) { return (v >> i) & 1u; }

}  // namespace

CpuFeatures cpu_features() {
  CpuFeatures f;
  const Regs v = cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &v.b, 4), std::memcpy(vendor + 4, &v.d, 4), std::memcpy(vendor + 8, &v.c, 4);
  f.vendor = vendor;
  if (cpuid(0x80000000).a >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002 + i);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    f.brand = brand;
    f.brand.erase(0, f.brand.find_first_not_of(' '));
  }
  const Regs l1 = cpuid(1);
  const int base_family = (l1.a >> 8) & 0xf;
  f.family = base_family == 0xf ? base_family + ((l1.a >> 20) & 0xff) : base_family;
  f.model = (l1.a >> 4) & 0xf;
  if (base_family == 0x6 || base_family == 0xf) f.model |= ((l1.a >> 16) & 0xf) << 4;
  // A feature is usable only if the OS saves its registers: XCR0 bits 1-2 (SSE, AVX state),
  // 5-7 (AVX-512 opmask and zmm state), 17-18 (AMX tile config and data).
  const uint64_t xcr0 = bit(l1.c, 27) ? xgetbv0() : 0;  // OSXSAVE
  const bool os_avx = (xcr0 & 0x6) == 0x6, os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;
  if (v.a < 7) return f;
  const Regs l7 = cpuid(7), l71 = cpuid(7, 1);
  f.avx = os_avx && bit(l1.c, 28);
  f.fma = f.avx && bit(l1.c, 12);
  f.avx2 = f.avx && bit(l7.b, 5);
  f.avx512 = os_avx512 && f.avx2 && bit(l7.b, 16) && bit(l7.b, 17) && bit(l7.b, 28) && bit(l7.b, 30) && bit(l7.b, 31);
  f.avx512_bf16 = f.avx512 && bit(l71.a, 5);
  f.amx = f.avx512 && os_amx && bit(l7.d, 22) && bit(l7.d, 24);
  return f;
}

// ---- OpenBLAS's kernels -----------------------------------------------------------------------

namespace {
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
DnnlSgemm onednn_in_use();
}  // namespace

const char* openblas_core_for(const CpuFeatures& f) {
  const bool amd = f.vendor == "AuthenticAMD" || f.vendor == "HygonGenuine";
  if (f.amx) return "SapphireRapids";  // libraries without it fall back to Cooperlake (use_best_core)
  if (f.avx512_bf16) return "Cooperlake";
  if (f.avx512) return "SkylakeX";
  if (f.avx2 && f.fma) return amd ? "Zen" : "Haswell";
  if (f.avx) return "Sandybridge";
  return "Prescott";
}

int openblas_core_rank(const std::string& core) {
  static const struct {
    const char* name;
    int rank;
  } ranks[] = {{"Prescott", 1},  {"Core2", 1},     {"Penryn", 1},       {"Dunnington", 1},     {"Nehalem", 1},
               {"Atom", 1},      {"Nano", 1},      {"Barcelona", 1},    {"Opteron", 1},        {"Opteron_SSE3", 1},
               {"Bobcat", 1},    {"Sandybridge", 2}, {"Bulldozer", 2},  {"Piledriver", 2},     {"Steamroller", 2},
               {"Excavator", 2}, {"Haswell", 3},   {"Zen", 3},          {"SkylakeX", 4},       {"Cooperlake", 5},
               {"SapphireRapids", 6}};
  for (const auto& r : ranks)
    if (strcasecmp(core.c_str(), r.name) == 0) return r.rank;
  return 0;
}

namespace {

// OpenBLAS's own entry points for choosing kernels at run time (exported by its DYNAMIC_ARCH
// builds, which is what Debian ships): quit forgets the kernel table, init chooses one again,
// reading OPENBLAS_CORETYPE as at load time. Looked up, not linked, so a build against a
// single-target OpenBLAS still links and runs (it just cannot switch).
using VoidFn = void (*)();
VoidFn openblas_fn(const char* name) { return reinterpret_cast<VoidFn>(dlsym(RTLD_DEFAULT, name)); }

bool openblas_has_core(const std::string& core) {
  std::string sym = "gotoblas_";
  for (char ch : core) sym += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return dlsym(RTLD_DEFAULT, sym.c_str()) != nullptr;
}

std::string current_core() { return openblas_get_corename(); }

std::string switch_core(const std::string& core) {
  const VoidFn quit = openblas_fn("gotoblas_dynamic_quit"), init = openblas_fn("gotoblas_dynamic_init");
  IFT_CHECK(quit && init, "this OpenBLAS (", openblas_get_config(), ") cannot switch kernels at run time");
  IFT_CHECK(openblas_has_core(core), "this OpenBLAS has no '", core, "' kernels");
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved = user ? user : "";
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  quit();
  init();
  if (user) setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  else unsetenv("OPENBLAS_CORETYPE");
  return current_core();
}

std::string feature_list(const CpuFeatures& f) {
  std::string s;
  for (auto [on, name] : {std::pair{f.avx, "AVX"}, {f.fma, "FMA"}, {f.avx2, "AVX2"}, {f.avx512, "AVX-512"},
                          {f.avx512_bf16, "AVX512-BF16"}, {f.amx, "AMX"}})
    if (on) {
      if (!s.empty()) s += ' ';
      s += name;
    }
  return s.empty() ? "SSE only" : s;
}

// oneDNN, looked up at run time (Debian's libdnnl2; no headers needed): dnnl_sgemm is row-major,
// takes 'N'/'T', and returns a dnnl_status_t (0: success).
struct Onednn {
  DnnlSgemm sgemm = nullptr;
  std::string version;  // "2.6.3"
};
const Onednn& onednn_library() {
  static const Onednn lib = [] {
    Onednn o;
    void* h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) return o;
    o.sgemm = reinterpret_cast<DnnlSgemm>(dlsym(h, "dnnl_sgemm"));
    struct Version {
      int major, minor, patch;
    };
    if (const auto version = reinterpret_cast<const Version* (*)()>(dlsym(h, "dnnl_version")))
      if (const Version* v = version())
        o.version = std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
    return o;
  }();
  return lib;
}

GemmKernels choose_kernels() {
  GemmKernels k;
  k.fp32 = onednn_library().sgemm ? "oneDNN" : "OpenBLAS";
  const std::string config = openblas_get_config();
  k.library = "OpenBLAS " + config.substr(config.find(' ') + 1, config.find(' ', 9) - config.find(' ') - 1);
  k.library += config.find("USE_OPENMP") != std::string::npos ? " (OpenMP" : " (";
  k.library += config.find("DYNAMIC_ARCH") != std::string::npos ? ", DYNAMIC_ARCH)" : ")";
  const std::string was = current_core();
  k.core = was;
  if (std::getenv("OPENBLAS_CORETYPE")) {
    k.chosen = "OPENBLAS_CORETYPE";
    return k;
  }
  const CpuFeatures f = cpu_features();
  // The best core the CPU can run that the library has, by descending rank.
  std::string want = openblas_core_for(f);
  for (const char* fallback : {"Cooperlake", "SkylakeX"})
    if (!openblas_has_core(want) && openblas_core_rank(want) > openblas_core_rank(fallback)) want = fallback;
  if (openblas_core_rank(was) >= openblas_core_rank(want)) {
    k.chosen = "OpenBLAS's own choice";
    return k;
  }
  try {
    k.core = switch_core(want);
    k.chosen = "switched from " + was + " for the CPU's " + feature_list(f);
  } catch (const Error& e) {
    k.chosen = std::string("OpenBLAS's own choice; could not switch to ") + want + ": " + e.what();
  }
  return k;
}

GemmKernels& kernels_state() {
  static GemmKernels k = choose_kernels();
  return k;
}

// Chosen before main (this file is linked wherever a GEMM is), while no other thread can be
// inside the library; gemm_kernels() covers callers that run earlier, from other initialisers.
const bool chosen_at_start = (kernels_state(), true);

DnnlSgemm onednn_in_use() { return kernels_state().fp32 == "oneDNN" ? onednn_library().sgemm : nullptr; }

}  // namespace

const GemmKernels& gemm_kernels() { return kernels_state(); }

bool onednn_available() { return onednn_library().sgemm != nullptr; }

std::string gemm_kernels_line() {
  const GemmKernels& k = gemm_kernels();
  const std::string openblas = k.library + ", " + k.core + " kernels (" + k.chosen + ")";
  const std::string cpu = "; CPU: " + feature_list(cpu_features());
  if (k.fp32 == "oneDNN")
    return "GEMM: fp32 oneDNN " + onednn_library().version + " dnnl_sgemm (its kernels for this CPU), fp64 " + openblas +
           cpu;
  return "GEMM: " + openblas + cpu + (onednn_available() ? "" : "; oneDNN (libdnnl.so.2) not installed");
}

void use_fp32_gemm(const std::string& library) {
  IFT_CHECK(library == "oneDNN" || library == "OpenBLAS", "unknown GEMM library '", library,
            "' (oneDNN or OpenBLAS)");
  IFT_CHECK(library == "OpenBLAS" || onednn_available(), "oneDNN (libdnnl.so.2 with dnnl_sgemm) is not installed");
  kernels_state().fp32 = library;
}

std::string use_openblas_core(const std::string& core) {
  const CpuFeatures f = cpu_features();
  const int rank = openblas_core_rank(core);
  IFT_CHECK(rank > 0, "unknown OpenBLAS core '", core, "'");
  IFT_CHECK(rank <= openblas_core_rank(openblas_core_for(f)), "this CPU (", feature_list(f), ") cannot run the ",
            core, " kernels");
  GemmKernels& k = kernels_state();
  k.core = switch_core(core);
  k.chosen = "set by use_openblas_core";
  return k.core;
}

// ---- threads --------------------------------------------------------------------------------

void set_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  openblas_set_num_threads(n);  // the OpenMP build sets OpenMP's count too; be explicit
  omp_set_num_threads(n);
}

int threads() { return omp_get_max_threads(); }

// ---- GEMM -----------------------------------------------------------------------------------

namespace {

void library_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                  int ldb, float beta, float* c, int ldc) {
  if (const DnnlSgemm sgemm = onednn_in_use()) {
    const int status = sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    IFT_CHECK(status == 0, "oneDNN's dnnl_sgemm failed (status ", status, ") on ", m, "x", n, "x", k, " with lda ", lda,
              ", ldb ", ldb, ", ldc ", ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
              b, ldb, beta, c, ldc);
}
void library_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
                  int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
              b, ldb, beta, c, ldc);
}

// Below this many multiply-adds a GEMM is one call (OpenBLAS itself would not split it).
constexpr int64_t kSingleCallMacs = int64_t(1) << 18;
// Tiles: about this many multiply-adds each (a few hundred microseconds), so that the repacking
// of the shared operand that each tile does costs a few percent, and at most kMaxTiles of them.
constexpr int64_t kTileMacs = int64_t(1) << 23;
constexpr int kMaxTiles = 48;
constexpr int kAlign = 16;  // tile edges on multiples of 16 rows/columns: whole micro-tiles

struct Tiling {
  int tm = 1, tn = 1;  // tiles along m and along n
  int bm = 0, bn = 0;  // tile sizes (the last one may be smaller)
};

// A partition of C that depends on (m, n, k) only. Splits the longer side first, so tiles stay
// roughly square (a tile repacks its share of A and of B; square tiles repack least).
Tiling tiling(int m, int n, int k) {
  const int64_t macs = int64_t(m) * n * k;
  const int want = static_cast<int>(std::clamp<int64_t>(macs / kTileMacs, 1, kMaxTiles));
  Tiling t;
  const int64_t max_tm = (m + kAlign - 1) / kAlign, max_tn = (n + kAlign - 1) / kAlign;
  while (t.tm * t.tn < want) {
    const bool split_m = (int64_t(m) * t.tn >= int64_t(n) * t.tm && t.tm < max_tm) || t.tn >= max_tn;
    if (split_m && t.tm >= max_tm) break;
    (split_m ? t.tm : t.tn)++;
  }
  const auto size = [](int len, int parts) {
    return static_cast<int>(((len + parts - 1) / parts + kAlign - 1) / kAlign * kAlign);
  };
  t.bm = size(m, t.tm), t.bn = size(n, t.tn);
  t.tm = (m + t.bm - 1) / t.bm, t.tn = (n + t.bn - 1) / t.bn;
  return t;
}

// Every library call must run on one thread. OpenBLAS's OpenMP build does inside an active
// parallel region, and otherwise uses as many threads as OpenMP allows: outside a region, allow one
// for the duration of the call.
class OneThread {
 public:
  OneThread() : saved_(omp_in_parallel() ? 1 : omp_get_max_threads()) {
    if (saved_ > 1) omp_set_num_threads(1);
  }
  ~OneThread() {
    if (saved_ > 1) omp_set_num_threads(saved_);
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int saved_;
};

template <class T>
void tiled_gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
                int ldc) {
  if (m <= 0 || n <= 0) return;
  if (int64_t(m) * n * k <= kSingleCallMacs) {
    const OneThread one;
    library_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const Tiling t = tiling(m, n, k);
  const auto tile = [&](int i) {
    const int r0 = (i / t.tn) * t.bm, c0 = (i % t.tn) * t.bn;
    const int rows = std::min(t.bm, m - r0), cols = std::min(t.bn, n - c0);
    // op(A) rows r0..: A's rows (no transpose) or columns (transpose); op(B) columns c0.. likewise.
    const T* ai = ta ? a + r0 : a + static_cast<int64_t>(r0) * lda;
    const T* bi = tb ? b + static_cast<int64_t>(c0) * ldb : b + c0;
    library_gemm(ta, tb, rows, cols, k, alpha, ai, lda, bi, ldb, beta, c + static_cast<int64_t>(r0) * ldc + c0, ldc);
  };
  const int tiles = t.tm * t.tn;
  if (tiles == 1 || omp_in_parallel() || omp_get_max_threads() == 1) {
    const OneThread one;
    for (int i = 0; i < tiles; ++i) tile(i);
    return;
  }
  // A team of at least two is an active region: OpenBLAS runs each call on its calling thread.
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::min(omp_get_max_threads(), tiles))
  for (int i = 0; i < tiles; ++i) tile(i);
}

}  // namespace

void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
          float beta, float* c, int ldc) {
  tiled_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b, int ldb,
          double beta, double* c, int ldc) {
  tiled_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// ---- peak -----------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

// Cycles per second from a chain of dependent integer adds (one cycle each on every x86-64 core
// since the Pentium 4's successors): 2^22 adds, best of 7.
double measure_clock_hz() {
  double best = 1e30;
  for (int rep = 0; rep < 7; ++rep) {
    uint64_t x = 0;
    const auto t = Clock::now();
    for (int i = 0; i < (1 << 16); ++i) {
      __asm__ volatile(
          ".rept 64\n\t"
          "add $1, %0\n\t"
          ".endr"
          : "+r"(x));
    }
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t).count());
  }
  return double(1 << 22) / best;
}

// Vector FMAs per second on one core: 12 independent accumulators in registers (enough to cover a
// latency of 4 to 5 cycles on two pipes), one function per width, compiled for its instruction set.
#define IFT_FMA_RATE(NAME, TARGET, VEC, SET1, FMA, REG)                                                  \
  __attribute__((target(TARGET), noinline)) double NAME() {                                            \
    VEC a0 = SET1(1.0f), a1 = SET1(1.1f), a2 = SET1(1.2f), a3 = SET1(1.3f), a4 = SET1(1.4f), a5 = SET1(1.5f); \
    VEC a6 = SET1(1.6f), a7 = SET1(1.7f), a8 = SET1(1.8f), a9 = SET1(1.9f), a10 = SET1(2.0f), a11 = SET1(2.1f); \
    const VEC x = SET1(0.999999f), y = SET1(1e-7f);                                                    \
    const int iters = 1 << 17;                                                                         \
    double best = 1e30;                                                                                \
    for (int rep = 0; rep < 7; ++rep) {                                                                \
      const auto t = Clock::now();                                                                     \
      for (int it = 0; it < iters; ++it) {                                                             \
        a0 = FMA(a0, x, y), a1 = FMA(a1, x, y), a2 = FMA(a2, x, y), a3 = FMA(a3, x, y);                \
        a4 = FMA(a4, x, y), a5 = FMA(a5, x, y), a6 = FMA(a6, x, y), a7 = FMA(a7, x, y);                \
        a8 = FMA(a8, x, y), a9 = FMA(a9, x, y), a10 = FMA(a10, x, y), a11 = FMA(a11, x, y);            \
        __asm__ volatile("" : "+" REG(a0), "+" REG(a1), "+" REG(a2), "+" REG(a3), "+" REG(a4), "+" REG(a5)); \
        __asm__ volatile("" : "+" REG(a6), "+" REG(a7), "+" REG(a8), "+" REG(a9), "+" REG(a10), "+" REG(a11)); \
      }                                                                                                \
      best = std::min(best, std::chrono::duration<double>(Clock::now() - t).count());                  \
    }                                                                                                  \
    return 12.0 * iters / best;                                                                        \
  }
IFT_FMA_RATE(fma_rate_256, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, "x")
IFT_FMA_RATE(fma_rate_512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, "v")
#undef IFT_FMA_RATE

}  // namespace

MachinePeak machine_peak(int threads) {
  const CpuFeatures f = cpu_features();
  MachinePeak p;
  p.threads = threads;
  p.clock_ghz = measure_clock_hz() / 1e9;
  if (!f.fma) {  // no FMA: one multiply and one add per cycle, SSE or AVX width
    p.lanes = f.avx ? 8 : 4;
    p.fma_units = 1;
  } else {
    p.lanes = f.avx512 ? 16 : 8;
    const double per_cycle = (f.avx512 ? fma_rate_512() : fma_rate_256()) / (p.clock_ghz * 1e9);
    p.fma_units = std::max(1, static_cast<int>(per_cycle + 0.5));
  }
  p.gflops = p.lanes * 2.0 * p.fma_units * p.clock_ghz * threads;
  return p;
}

}  // namespace ift::cpu
