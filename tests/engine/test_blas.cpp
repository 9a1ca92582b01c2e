// The GEMM kernels the cpu backend runs match the CPU (engine/cpu/blas.h): the rule from features
// to OpenBLAS's kernel sets, checked on the feature sets of the CPUs it must serve, and the choice
// made on this machine.
#include <cstdlib>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/base/error.h"
#include "engine/cpu/blas.h"

using namespace ift;
using namespace ift::cpu;

namespace {

CpuFeatures features(const char* vendor, bool avx, bool avx2, bool avx512, bool bf16, bool amx) {
  CpuFeatures f;
  f.vendor = vendor;
  f.avx = avx, f.fma = avx2, f.avx2 = avx2, f.avx512 = avx512, f.avx512_bf16 = bf16, f.amx = amx;
  return f;
}

}  // namespace

TEST_CASE("each CPU class maps to the OpenBLAS kernels of its widest instructions", "[blas]") {
  // Sapphire/Emerald/Granite Rapids: AMX and AVX512-BF16 (0.3.21 has no SapphireRapids set: the
  // choice falls back to Cooperlake, which gemm_kernels() checks against the library).
  CHECK(std::string(openblas_core_for(features("GenuineIntel", true, true, true, true, true))) == "SapphireRapids");
  CHECK(std::string(openblas_core_for(features("GenuineIntel", true, true, true, true, false))) == "Cooperlake");
  CHECK(std::string(openblas_core_for(features("GenuineIntel", true, true, true, false, false))) == "SkylakeX");
  CHECK(std::string(openblas_core_for(features("GenuineIntel", true, true, false, false, false))) == "Haswell");
  CHECK(std::string(openblas_core_for(features("GenuineIntel", true, false, false, false, false))) == "Sandybridge");
  CHECK(std::string(openblas_core_for(features("GenuineIntel", false, false, false, false, false))) == "Prescott");
  // Zen 1-3: AVX2; Zen 4-5: AVX-512 with BF16 (upstream OpenBLAS also runs Cooperlake there).
  CHECK(std::string(openblas_core_for(features("AuthenticAMD", true, true, false, false, false))) == "Zen");
  CHECK(std::string(openblas_core_for(features("HygonGenuine", true, true, false, false, false))) == "Zen");
  CHECK(std::string(openblas_core_for(features("AuthenticAMD", true, true, true, true, false))) == "Cooperlake");
  // Ranks order instruction sets, case-insensitively as OPENBLAS_CORETYPE reads them.
  CHECK(openblas_core_rank("PRESCOTT") == 1);
  CHECK(openblas_core_rank("Haswell") == openblas_core_rank("zen"));
  CHECK(openblas_core_rank("Haswell") < openblas_core_rank("SkylakeX"));
  CHECK(openblas_core_rank("SkylakeX") < openblas_core_rank("Cooperlake"));
  CHECK(openblas_core_rank("NoSuchCore") == 0);
}

TEST_CASE("this machine runs the kernels its CPU calls for, and never ones it cannot run", "[blas]") {
  const CpuFeatures f = cpu_features();
  const GemmKernels& k = gemm_kernels();
  INFO(gemm_kernels_line() << " (" << f.brand << ", family " << f.family << " model " << f.model << ")");
  const int want = openblas_core_rank(openblas_core_for(f));
  const int got = openblas_core_rank(k.core);
  REQUIRE(got > 0);
  if (std::getenv("OPENBLAS_CORETYPE")) {
    CHECK(k.chosen == "OPENBLAS_CORETYPE");
    return;
  }
  // 0.3.21 lacks SapphireRapids: Cooperlake is then the best it has.
  CHECK(got >= std::min(want, openblas_core_rank("Cooperlake")));
  CHECK(got <= want);
  if (f.avx2 && f.fma) CHECK(got >= openblas_core_rank("Haswell"));
  if (f.avx512) CHECK(got >= openblas_core_rank("SkylakeX"));
}

TEST_CASE("switching kernels at run time works, and refuses what the CPU cannot run", "[blas]") {
  const std::string chosen = gemm_kernels().core;
  const CpuFeatures f = cpu_features();
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {1, 0, 0, 1, 1, 1};  // (2x3) x (3x2)
  for (const char* core : {"Prescott", "Sandybridge", "Haswell"}) {
    if (openblas_core_rank(core) > openblas_core_rank(openblas_core_for(f))) continue;
    INFO(core);
    CHECK(use_openblas_core(core) == core);
    std::vector<float> c(4);
    gemm(false, false, 2, 2, 3, 1.0f, a.data(), 3, b.data(), 2, 0.0f, c.data(), 2);
    CHECK(c == std::vector<float>{4, 5, 10, 11});
  }
  if (!f.avx512) CHECK_THROWS_AS(use_openblas_core("SkylakeX"), Error);
  CHECK_THROWS_AS(use_openblas_core("NoSuchCore"), Error);
  CHECK(use_openblas_core(chosen) == chosen);
}

TEST_CASE("fp32 GEMMs run oneDNN where it is installed, OpenBLAS otherwise, and both give the product", "[blas]") {
  const GemmKernels& k = gemm_kernels();
  INFO(gemm_kernels_line());
  CHECK(k.fp32 == (onednn_available() ? "oneDNN" : "OpenBLAS"));
  CHECK(gemm_kernels_line().find(onednn_available() ? "fp32 oneDNN" : "OpenBLAS") != std::string::npos);
  const std::string saved = k.fp32;
  // (2x3) x (3x2), with alpha, beta and each transpose: every path of the call.
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, at = {1, 4, 2, 5, 3, 6};
  const std::vector<float> b = {1, 0, 0, 1, 1, 1}, bt = {1, 0, 1, 0, 1, 1};
  for (const char* library : {"oneDNN", "OpenBLAS"}) {
    if (std::string(library) == "oneDNN" && !onednn_available()) {
      CHECK_THROWS_AS(use_fp32_gemm(library), Error);
      continue;
    }
    INFO(library);
    use_fp32_gemm(library);
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      std::vector<float> c = {1, 1, 1, 1};
      gemm(ta, tb, 2, 2, 3, 2.0f, ta ? at.data() : a.data(), ta ? 2 : 3, tb ? bt.data() : b.data(), tb ? 3 : 2, 0.5f,
           c.data(), 2);
      CHECK(c == std::vector<float>{8.5f, 10.5f, 20.5f, 22.5f});
    }
  }
  CHECK_THROWS_AS(use_fp32_gemm("MKL"), Error);
  use_fp32_gemm(saved);
}

TEST_CASE("the machine peak is lanes x 2 x FMA units x clock x threads", "[blas]") {
  const MachinePeak p = machine_peak(2);
  const CpuFeatures f = cpu_features();
  CHECK(p.lanes == (f.avx512 ? 16 : f.avx ? 8 : 4));
  CHECK(p.fma_units >= 1);
  CHECK(p.fma_units <= 4);
  CHECK(p.clock_ghz > 0.3);
  CHECK(p.clock_ghz < 8);
  CHECK(p.gflops == Approx(p.lanes * 2.0 * p.fma_units * p.clock_ghz * 2));
}
