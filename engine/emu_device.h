// The device of the emu backend (EmuBackend<S>, engine/kernel_backend.h): host memory that looks
// like cudaMalloc's, and a plain CPU GEMM in the place of cuBLASLt. In a header of its own so that
// tests reach its GEMM (tests/engine/test_gemm.cpp); engine/emu_backend.cpp instantiates the backend.
#pragma once

#include <cuda_runtime_api.h>  // cudaStream_t (host-only header, compiles without a GPU)

#include <cstddef>
#include <cstring>
#include <new>

#include "engine/device_gemm.h"

namespace ift {

struct EmuDevice {
  static constexpr size_t kGemmWorkspaceBytes = 0;
  void* gemm_workspace = nullptr;
  size_t gemm_workspace_bytes = 0;

  // 256-byte aligned, as cudaMalloc is; filled with a NaN pattern (0xff bytes), so that a buffer
  // read before it is written shows up in the results instead of passing as zeros.
  void* allocate(size_t bytes) {
    void* p = ::operator new(bytes, std::align_val_t{256});
    std::memset(p, 0xff, bytes);
    return p;
  }
  void release(void* p) { ::operator delete(p, std::align_val_t{256}); }
  void upload(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }
  void zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }
  cudaStream_t stream() { return nullptr; }

  // What a cuBLASLt call computes (engine/device_gemm.h): In inputs widened to fp32, fp32
  // accumulation (in k order here), the bias added in fp32, one rounding to Out. Unblocked: the emu
  // backend runs small models.
  template <class In, class Out>
  void gemm(Out* c, int ldc, const In* a, int lda, const In* b, int ldb, const In* bias, int M, int N, int K,
            bool trans_a, bool trans_b, bool accumulate, float alpha = 1.0f) {
    check_gemm_shape(M, N, K, lda, ldb, ldc, trans_a, trans_b);
    const auto f = [](auto x) { return static_cast<float>(x); };
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        float acc = 0;
        for (int k = 0; k < K; ++k) {
          const float x = f(trans_a ? a[size_t(k) * lda + i] : a[size_t(i) * lda + k]);
          const float y = f(trans_b ? b[size_t(j) * ldb + k] : b[size_t(k) * ldb + j]);
          acc += x * y;
        }
        if (alpha != 1.0f) acc *= alpha;
        if (bias) acc += f(bias[j]);
        Out& out = c[size_t(i) * ldc + j];
        out = static_cast<Out>(accumulate ? f(out) + acc : acc);
      }
  }
};

}  // namespace ift
