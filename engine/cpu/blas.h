// The cpu backend's GEMM and thread count: which library and kernels run it, how a GEMM is split
// among threads, and the machine's fp32 peak that a benchmark compares with.
//
// Library. fp32 GEMMs run oneDNN's dnnl_sgemm where Debian's libdnnl2 is installed (looked up at
// run time: libdnnl.so.2), OpenBLAS's otherwise; fp64 always runs OpenBLAS. oneDNN generates its
// kernels for the CPU it finds; on ift's tiles it measured 8-20% ahead of OpenBLAS's best kernels
// on all but one of the training shapes tried on a Zen 4, and 1.5x on a small-K shape on a Zen 3
// (docs/benchmarks.md).
//
// Kernels. Debian's OpenBLAS is built for every x86-64 CPU (DYNAMIC_ARCH) and picks its kernels
// from the CPU's family and model when it is loaded, before main. A CPU newer than the library
// (0.3.21 does not know Sapphire Rapids and falls back to its SSE3 "Prescott" kernels, a quarter of
// the speed) gets the wrong ones. The first use of this header reads the CPU's features (CPUID and
// the OS's saved register state) and, where OpenBLAS picked kernels for a smaller instruction set
// than the CPU has, switches it to the matching set: AVX-512 with BF16 -> Cooperlake, AVX-512 ->
// SkylakeX, AVX2 + FMA -> Haswell (Zen on AMD), AVX -> Sandybridge. It never switches down, and
// never when OPENBLAS_CORETYPE is set (the user's choice stands).
//
// Threads. A GEMM's result does not depend on the thread count: C is cut into tiles by its shape
// alone, each tile is one single-threaded library call over the whole K, and threads share the
// tiles. (OpenBLAS's own threading rounds differently with 1, 2 or 3 threads: it moves which
// micro-kernel computes which element.) Use set_threads() rather than omp_set_num_threads alone.
#pragma once

#include <cstdint>
#include <string>

namespace ift::cpu {

// What the CPU can run, from CPUID and XGETBV (a feature counts only if the OS saves its registers).
struct CpuFeatures {
  std::string vendor;        // "GenuineIntel", "AuthenticAMD", ...
  std::string brand;         // e.g. "AMD EPYC 7B13"
  int family = 0, model = 0; // display family and model
  bool avx = false, fma = false, avx2 = false;
  bool avx512 = false;       // F, CD, BW, DQ and VL: what OpenBLAS's SkylakeX kernels use
  bool avx512_bf16 = false;  // Cooper Lake, Sapphire Rapids, Zen 4
  bool amx = false;          // AMX tiles with BF16, enabled by the OS
};
CpuFeatures cpu_features();

// The OpenBLAS kernel set ("core") for a CPU with these features, by the rule above, and the
// instruction-set rank of a core name (0 = unknown, 1 = SSE kernels, 2 = AVX, 3 = AVX2, 4 = AVX-512,
// 5 = AVX-512 BF16, 6 = AMX): a core is only ever replaced by one of a higher rank.
const char* openblas_core_for(const CpuFeatures& f);
int openblas_core_rank(const std::string& core);

// The GEMM libraries and kernels in use (chosen on first call, which every GEMM makes).
struct GemmKernels {
  std::string fp32;     // the library of fp32 GEMMs: "oneDNN" or "OpenBLAS"
  std::string library;  // OpenBLAS (fp64, and fp32 without oneDNN), e.g. "OpenBLAS 0.3.21 (OpenMP, DYNAMIC_ARCH)"
  std::string core;     // the kernel set in use, e.g. "Zen"
  std::string chosen;   // why: "OpenBLAS's own choice", "switched from Prescott", "OPENBLAS_CORETYPE"
};
const GemmKernels& gemm_kernels();
// One line for logs: "GEMM: fp32 oneDNN 2.6.3 dnnl_sgemm ..., fp64 OpenBLAS 0.3.21 ..., Zen kernels
// (OpenBLAS's own choice); CPU: AVX FMA AVX2".
std::string gemm_kernels_line();

// Whether libdnnl.so.2 (with dnnl_sgemm) loads; and a switch of the fp32 library ("oneDNN" or
// "OpenBLAS") for tests and benchmarks. Not while another thread runs a GEMM.
bool onednn_available();
void use_fp32_gemm(const std::string& library);

// Switches OpenBLAS to a kernel set by name (what OPENBLAS_CORETYPE takes) and returns the core
// now in use; for tests and benchmarks. ift::Error when the library cannot switch or the CPU lacks
// the core's instructions. Not while another thread runs a GEMM.
std::string use_openblas_core(const std::string& core);

// The thread count of the cpu backend (OpenMP, and the BLAS with it); n <= 0: every core.
void set_threads(int n);
int threads();

// C (m x n, row stride ldc) = alpha op(A) op(B) + beta C, row-major, the library's single-threaded
// kernels on a partition of C fixed by (m, n, k): the same bits on any thread count. Inside a
// parallel region the tiles run on the calling thread.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc);
void gemm(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
          int ldb, double beta, double* c, int ldc);

// The machine's fp32 peak: vector lanes x 2 (an FMA is two FLOPs) x FMA units x clock x threads.
// Lanes come from the features (16 with AVX-512, 8 with AVX2 or AVX); FMA units per core and the
// clock are measured (a register-only FMA loop, a chain of dependent adds), each the best of a few
// short runs, so a loaded machine reads low rather than high.
struct MachinePeak {
  int lanes = 0;        // fp32 lanes of the widest FMA
  int fma_units = 0;    // vector FMAs retired per cycle per core (measured, rounded)
  double clock_ghz = 0; // measured on one core
  int threads = 0;
  double gflops = 0;    // lanes * 2 * fma_units * clock * threads
};
MachinePeak machine_peak(int threads);

}  // namespace ift::cpu
