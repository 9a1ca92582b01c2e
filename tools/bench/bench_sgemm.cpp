// ift_bench_sgemm: the fp32 GEMM candidates of this machine side by side, to choose and check the
// cpu backend's GEMM (docs/benchmarks.md).
//
//   ift_bench_sgemm [--threads K] [--rounds R] [--shape MxNxK[:AB]]...
//
// AB: the transposes of A and B, n or t each (default nt: C = A B^T); a weight gradient of a linear
// layer is tn (dW = dY^T X), an input gradient nn (dX = dY W).
//
// Candidates, each on the same row-major C = A B^T with A (M x K), B (N x K):
//   ift            engine/cpu/blas.h's gemm on fixed tiles: oneDNN's dnnl_sgemm (where installed), and
//                  OpenBLAS's kernels (the set ift chose)
//   openblas:CORE  one cblas_sgemm call, OpenBLAS's own threading, on each kernel set this CPU can run
//   blis           BLIS's cblas_sgemm (Debian's libblis4-openmp), when installed
//   dnnl           oneDNN's dnnl_sgemm (Debian's libdnnl2), when installed
// Rounds alternate the candidates (A B C A B C ...), so a machine whose speed drifts moves them
// alike; each prints the median and the best GFLOP/s over the rounds.
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/cpu/blas.h"

namespace {

using Clock = std::chrono::steady_clock;

// C (m x n) = op(A) op(B) over k; ta/tb: A stored k x m, B stored n x k (the default, B^T, is how
// a linear layer's forward multiplies), else A m x k, B k x n.
struct Shape {
  int m, n, k;
  bool ta = false, tb = true;
  int lda() const { return ta ? m : k; }
  int ldb() const { return tb ? k : n; }
};

using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                            int);
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

struct Candidate {
  std::string name;
  std::function<void()> prepare;  // before each timed call (switching OpenBLAS's kernels)
  std::function<void(const Shape&, const float*, const float*, float*)> run;
};

void* open_library(const char* path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, rounds = 5;
  std::vector<Shape> shapes;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (a == "--shape" && i + 1 < argc) {
      Shape s{};
      char ab[3] = "nt";
      const int got = std::sscanf(argv[++i], "%dx%dx%d:%2[nt]", &s.m, &s.n, &s.k, ab);
      s.ta = ab[0] == 't', s.tb = ab[1] == 't';
      if (got < 3 || (got == 3 && std::strchr(argv[i], ':'))) {
        std::fprintf(stderr, "--shape wants MxNxK or MxNxK:AB (AB: nn, nt, tn or tt), got %s\n", argv[i]);
        return 2;
      }
      shapes.push_back(s);
    } else {
      std::fprintf(stderr, "usage: %s [--threads K] [--rounds R] [--shape MxNxK[:AB]]...\n", argv[0]);
      return 2;
    }
  }
  // Default: the square benchmark and GPT-2 124M's projections at B x T = 1024 tokens.
  if (shapes.empty()) shapes = {{2048, 2048, 2048}, {1024, 2304, 768}, {1024, 3072, 768}, {1024, 768, 3072}};
  ift::cpu::set_threads(threads);
  threads = ift::cpu::threads();

  const ift::cpu::CpuFeatures f = ift::cpu::cpu_features();
  const std::string chosen = ift::cpu::gemm_kernels().core;
  std::printf("CPU: %s (%s family %d model %d), %d threads\n%s\n", f.brand.c_str(), f.vendor.c_str(), f.family,
              f.model, threads, ift::cpu::gemm_kernels_line().c_str());

  const std::string fp32 = ift::cpu::gemm_kernels().fp32;
  const auto ift_gemm = [](const Shape& s, const float* a, const float* b, float* c) {
    ift::cpu::gemm(s.ta, s.tb, s.m, s.n, s.k, 1.0f, a, s.lda(), b, s.ldb(), 0.0f, c, s.n);
  };
  std::vector<Candidate> cands;
  if (ift::cpu::onednn_available())
    cands.push_back({"ift (oneDNN, fixed tiles)", [] { ift::cpu::use_fp32_gemm("oneDNN"); }, ift_gemm});
  cands.push_back({"ift (" + chosen + ", fixed tiles)",
                   [chosen] {
                     ift::cpu::use_fp32_gemm("OpenBLAS");
                     ift::cpu::use_openblas_core(chosen);
                   },
                   ift_gemm});
  const auto cblas = reinterpret_cast<CblasSgemm>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
  const int rank = ift::cpu::openblas_core_rank(ift::cpu::openblas_core_for(f));
  for (const char* core : {"Prescott", "Sandybridge", "Haswell", "Zen", "SkylakeX", "Cooperlake"}) {
    if (ift::cpu::openblas_core_rank(core) > rank) continue;
    cands.push_back({std::string("openblas:") + core, [core] { ift::cpu::use_openblas_core(core); },
                     [cblas](const Shape& s, const float* a, const float* b, float* c) {
                       cblas(kRowMajor, s.ta ? kTrans : kNoTrans, s.tb ? kTrans : kNoTrans, s.m, s.n, s.k, 1.0f, a,
                             s.lda(), b, s.ldb(), 0.0f, c, s.n);
                     }});
  }
  if (void* h = open_library("/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4")) {
    const auto sgemm = reinterpret_cast<CblasSgemm>(dlsym(h, "cblas_sgemm"));
    if (auto set = reinterpret_cast<void (*)(long)>(dlsym(h, "bli_thread_set_num_threads"))) set(threads);
    if (sgemm)
      cands.push_back({"blis", [] {}, [sgemm](const Shape& s, const float* a, const float* b, float* c) {
                         sgemm(kRowMajor, s.ta ? kTrans : kNoTrans, s.tb ? kTrans : kNoTrans, s.m, s.n, s.k, 1.0f, a,
                               s.lda(), b, s.ldb(), 0.0f, c, s.n);
                       }});
  }
  if (void* h = open_library("libdnnl.so.2")) {
    if (const auto sgemm = reinterpret_cast<DnnlSgemm>(dlsym(h, "dnnl_sgemm")))
      cands.push_back({"dnnl", [] {}, [sgemm](const Shape& s, const float* a, const float* b, float* c) {
                         sgemm(s.ta ? 'T' : 'N', s.tb ? 'T' : 'N', s.m, s.n, s.k, 1.0f, a, s.lda(), b, s.ldb(), 0.0f,
                               c, s.n);
                       }});
  }

  for (const Shape& s : shapes) {
    std::vector<float> a(size_t(s.m) * s.k), b(size_t(s.n) * s.k), c(size_t(s.m) * s.n);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 7) * 0.1f - 0.3f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 5) * 0.1f - 0.2f;
    // Each call is repeated until it has run for 0.2 s, so small shapes are timed over many calls.
    std::vector<std::vector<double>> rates(cands.size());
    for (int r = 0; r <= rounds; ++r) {
      for (size_t ci = 0; ci < cands.size(); ++ci) {
        cands[ci].prepare();
        cands[ci].run(s, a.data(), b.data(), c.data());  // warm
        int calls = 0;
        const auto t = Clock::now();
        double elapsed = 0;
        do {
          cands[ci].run(s, a.data(), b.data(), c.data());
          ++calls;
          elapsed = std::chrono::duration<double>(Clock::now() - t).count();
        } while (elapsed < 0.2);
        if (r > 0) rates[ci].push_back(2.0 * s.m * s.n * s.k * calls / elapsed / 1e9);
      }
    }
    std::printf("\n%dx%dx%d:%c%c (M x N x K, transposes), %d rounds: GFLOP/s median (best)\n", s.m, s.n, s.k,
                s.ta ? 't' : 'n', s.tb ? 't' : 'n', rounds);
    for (size_t ci = 0; ci < cands.size(); ++ci) {
      std::vector<double>& v = rates[ci];
      std::sort(v.begin(), v.end());
      std::printf("  %-34s %7.1f (%.1f)\n", cands[ci].name.c_str(), v[v.size() / 2], v.back());
    }
  }
  ift::cpu::use_openblas_core(chosen);
  ift::cpu::use_fp32_gemm(fp32);
  const ift::cpu::MachinePeak p = ift::cpu::machine_peak(threads);
  std::printf("\nmachine peak: %d lanes x 2 x %d FMA units x %.2f GHz x %d threads = %.1f GFLOP/s\n", p.lanes,
              p.fma_units, p.clock_ghz, p.threads, p.gflops);
  return 0;
}
