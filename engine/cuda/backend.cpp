// The cuda backend: nvcc's build of the kernels (ift::cuda), device memory, one stream, and
// cuBLASLt for every GEMM (bf16 or fp32 inputs, fp32 accumulation, the bias in the epilogue).
// Compiled and linked in CI; it has never run here (no GPU): the emu backend runs the same
// KernelBackend code over the emulator, so only this file's CUDA calls are untested.
#define IFT_KERNELS_CUDA 1  // before any kernel header: the kernels this file calls are nvcc's

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <type_traits>

#include "engine/cuda/check.h"
#include "engine/kernel_backend.inl"
#include "engine/model.inl"

namespace ift {

struct CudaDevice {
  static constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's, as llm.c gives it
  void* gemm_workspace = nullptr;
  size_t gemm_workspace_bytes = 0;

  CudaDevice() {
    int devices = 0;
    IFT_CUDA_CHECK(cudaGetDeviceCount(&devices));
    IFT_CHECK(devices > 0, "backend cuda: no CUDA device");
    IFT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    IFT_CUBLAS_CHECK(cublasLtCreate(&lt_));
  }
  ~CudaDevice() {
    cublasLtDestroy(lt_);
    cudaStreamDestroy(stream_);
  }
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  void* allocate(size_t bytes) {
    void* p = nullptr;
    IFT_CUDA_CHECK(cudaMalloc(&p, bytes));
    return p;
  }
  void release(void* p) { cudaFree(p); }
  // Host buffers are pageable and the caller may reuse them at once: copies to and from the host
  // wait for the stream.
  void upload(void* dst, const void* src, size_t bytes) {
    IFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    synchronize();
  }
  void download(void* dst, const void* src, size_t bytes) {
    IFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }
  void copy(void* dst, const void* src, size_t bytes) {
    IFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(void* dst, size_t bytes) { IFT_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream_)); }
  void synchronize() { IFT_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  cudaStream_t stream() { return stream_; }

  // Row-major C (M, N) = op(A) op(B) is column-major C^T (N, M) = op(B)^T op(A)^T, so cuBLASLt's
  // first operand is our B and its second our A; a row-major (r, c) matrix is a column-major (c, r)
  // one with the same leading dimension.
  template <class In, class Out>
  void gemm(Out* c, const In* a, const In* b, const In* bias, int M, int N, int K, bool trans_a, bool trans_b,
            bool accumulate) {
    constexpr cudaDataType_t in_type = std::is_same_v<In, float> ? CUDA_R_32F : CUDA_R_16BF;
    constexpr cudaDataType_t out_type = std::is_same_v<Out, float> ? CUDA_R_32F : CUDA_R_16BF;
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t lt_a = nullptr, lt_b = nullptr, lt_c = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    IFT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    IFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    IFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    if (bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;  // adds bias (N) to every row of C
      IFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
      IFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    }
    IFT_CUBLAS_CHECK(trans_b ? cublasLtMatrixLayoutCreate(&lt_a, in_type, K, N, K)
                             : cublasLtMatrixLayoutCreate(&lt_a, in_type, N, K, N));
    IFT_CUBLAS_CHECK(trans_a ? cublasLtMatrixLayoutCreate(&lt_b, in_type, M, K, M)
                             : cublasLtMatrixLayoutCreate(&lt_b, in_type, K, M, K));
    IFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lt_c, out_type, N, M, N));
    IFT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    IFT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                          &gemm_workspace_bytes, sizeof gemm_workspace_bytes));
    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    IFT_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_, op, lt_a, lt_b, lt_c, lt_c, pref, 1, &heuristic, &found));
    IFT_CHECK(found > 0, "cuBLASLt has no algorithm for a ", M, "x", N, "x", K, " GEMM (trans_a ", trans_a,
              ", trans_b ", trans_b, ", bias ", bias != nullptr, ")");
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    IFT_CUBLAS_CHECK(cublasLtMatmul(lt_, op, &alpha, b, lt_a, a, lt_b, &beta, c, lt_c, c, lt_c, &heuristic.algo,
                                    gemm_workspace, gemm_workspace_bytes, stream_));
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(lt_c);
    cublasLtMatrixLayoutDestroy(lt_b);
    cublasLtMatrixLayoutDestroy(lt_a);
    cublasLtMatmulDescDestroy(op);
  }

 private:
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
};

template class KernelBackend<float, CudaDevice>;
template class KernelBackend<__nv_bfloat16, CudaDevice>;
template class Transformer<CudaBackend<float>>;
template class Optimizer<CudaBackend<float>>;
template class Model<CudaBackend<float>>;
template class Transformer<CudaBackend<__nv_bfloat16>>;
template class Optimizer<CudaBackend<__nv_bfloat16>>;
template class Model<CudaBackend<__nv_bfloat16>>;

}  // namespace ift
