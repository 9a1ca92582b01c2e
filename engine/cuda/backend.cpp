// The cuda backend: nvcc's build of the kernels (ift::cuda), device memory, one stream, and
// cuBLASLt for every GEMM (bf16 or fp32 inputs, fp32 accumulation, the bias in the epilogue).
// Compiled and linked in CI; it has never run here (no GPU): the emu backend runs the same
// KernelBackend code over the emulator, so only this file's CUDA calls are untested.
#define IFT_KERNELS_CUDA 1  // before any kernel header: the kernels this file calls are nvcc's

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <compare>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "engine/cuda/check.h"
#include "engine/cuda/cudnn_attention.h"
#include "engine/device_gemm.h"
#include "engine/kernel_backend.inl"
#include "engine/model.inl"

namespace ift {

namespace {

// An owned CUDA or cuBLASLt handle, destroyed exactly once on every path (a check that throws
// between create and destroy included). The destroy status is ignored: it runs in destructors.
template <class Handle, auto Destroy>
class Owned {
 public:
  Owned() = default;
  ~Owned() {
    if (h_) Destroy(h_);
  }
  Owned(Owned&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Owned& operator=(Owned&& o) noexcept {
    std::swap(h_, o.h_);
    return *this;
  }
  Handle get() const { return h_; }
  Handle* out() { return &h_; }  // for the Create call, on an empty Owned only

 private:
  Handle h_ = nullptr;
};

using Stream = Owned<cudaStream_t, cudaStreamDestroy>;
using LtHandle = Owned<cublasLtHandle_t, cublasLtDestroy>;
using MatmulDesc = Owned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using MatrixLayout = Owned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using MatmulPreference = Owned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

// The alignment cuBLASLt may assume of a pointer: the largest power of two dividing its address,
// capped at 256 (cuBLASLt's default and largest requirement). Slices of a fused buffer, and rows of
// an odd width, are less aligned than cudaMalloc's 256 bytes.
uint32_t alignment(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  if (address == 0) return 256;
  return static_cast<uint32_t>(std::min<uintptr_t>(address & (~address + 1), 256));
}

// Everything the heuristic's choice depends on: shapes, transposes, leading dimensions, types, the
// epilogue and the alignment of every pointer it is given (the bias pointer's too).
struct GemmKey {
  int M, N, K, lda, ldb, ldc;
  bool trans_a, trans_b, bias;
  int in_type, out_type;
  uint32_t align_a, align_b, align_c, align_bias;  // of cuBLASLt's A (our b), B (our a), C = D, the bias
  auto operator<=>(const GemmKey&) const = default;
};

// What one cached shape keeps: the descriptor, the three layouts and the chosen algorithm.
// cuBLASLt's A is our B, its B our A (see CudaDevice::gemm); C and D are the same matrix.
struct GemmPlan {
  MatmulDesc op;
  MatrixLayout lt_a, lt_b, lt_c;
  cublasLtMatmulAlgo_t algo{};
};

}  // namespace

struct CudaDevice {
  static constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's, as llm.c gives it
  void* gemm_workspace = nullptr;
  size_t gemm_workspace_bytes = 0;

  CudaDevice() {
    int devices = 0;
    IFT_CUDA_CHECK(cudaGetDeviceCount(&devices));
    IFT_CHECK(devices > 0, "backend cuda: no CUDA device");
    IFT_CUDA_CHECK(cudaStreamCreateWithFlags(stream_.out(), cudaStreamNonBlocking));
    IFT_CUBLAS_CHECK(cublasLtCreate(lt_.out()));
  }
  // A failure of cudaFree that nothing reported any more goes to stderr: a destructor cannot throw,
  // and swallowing it would hide a fault (a sticky error of an earlier kernel, usually).
  ~CudaDevice() {
    if (!release_error_.empty()) std::fprintf(stderr, "ift: backend cuda: %s\n", release_error_.c_str());
  }
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  void* allocate(size_t bytes) {
    throw_release_error();
    void* p = nullptr;
    IFT_CUDA_CHECK(cudaMalloc(&p, bytes));
    return p;
  }
  // cudaFree's status is checked, but not thrown here: every release runs in a destructor or a
  // noexcept move (Buffer, engine/model.h; ~KernelBackend), where a throw ends the process. The
  // first failure is kept and thrown by the next call that may throw (allocate, upload, download,
  // synchronize, gemm), or printed by the destructor if none comes.
  void release(void* p) noexcept {
    const cudaError_t status = cudaFree(p);
    if (status != cudaSuccess && release_error_.empty())
      release_error_ = std::string("cudaFree failed: ") + cudaGetErrorString(status);
  }
  // Host buffers are pageable and the caller may reuse them at once: copies to and from the host
  // wait for the stream.
  void upload(void* dst, const void* src, size_t bytes) {
    IFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
    synchronize();
  }
  void download(void* dst, const void* src, size_t bytes) {
    IFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
    synchronize();
  }
  void copy(void* dst, const void* src, size_t bytes) {
    IFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
  }
  void zero(void* dst, size_t bytes) { IFT_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream())); }
  void synchronize() {
    throw_release_error();
    IFT_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }
  cudaStream_t stream() { return stream_.get(); }
  // cuDNN's fused attention on this stream, created on first use (`attention: cudnn`).
  CudnnAttention& cudnn() {
    if (!cudnn_) cudnn_ = std::make_unique<CudnnAttention>(stream());
    return *cudnn_;
  }

  // Row-major C (M, N) = op(A) op(B) is column-major C^T (N, M) = op(B)^T op(A)^T, so cuBLASLt's
  // first operand is our B and its second our A; a row-major (r, c) matrix of row stride ld is a
  // column-major (c, r) one with the same leading dimension.
  template <class In, class Out>
  void gemm(Out* c, int ldc, const In* a, int lda, const In* b, int ldb, const In* bias, int M, int N, int K,
            bool trans_a, bool trans_b, bool accumulate, float alpha = 1.0f) {
    throw_release_error();
    check_gemm_shape(M, N, K, lda, ldb, ldc, trans_a, trans_b);
    // cuBLASLt's bias takes D's type by default: the engine adds a bias only where In is Out.
    IFT_CHECK((!bias || std::is_same_v<In, Out>), "gemm: a bias needs the output type of the inputs");
    constexpr cudaDataType_t in_type = std::is_same_v<In, float> ? CUDA_R_32F : CUDA_R_16BF;
    constexpr cudaDataType_t out_type = std::is_same_v<Out, float> ? CUDA_R_32F : CUDA_R_16BF;
    const GemmKey key{M, N, K, lda, ldb, ldc, trans_a, trans_b, bias != nullptr, in_type, out_type,
                      alignment(b), alignment(a), alignment(c), alignment(bias)};
    const GemmPlan& plan = gemm_plan(key, bias);
    // The descriptor is the cached one; only the bias pointer changes between calls.
    if (bias)
      IFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                      sizeof bias));
    const float beta = accumulate ? 1.0f : 0.0f;
    IFT_CUBLAS_CHECK(cublasLtMatmul(lt_.get(), plan.op.get(), &alpha, b, plan.lt_a.get(), a, plan.lt_b.get(), &beta,
                                    c, plan.lt_c.get(), c, plan.lt_c.get(), &plan.algo, gemm_workspace,
                                    gemm_workspace_bytes, stream()));
  }

 private:
  // The cached plan of a shape, or a new one: descriptor and layouts created, the heuristic asked
  // once. Nothing is cached when a call fails; what it created is released by Owned.
  const GemmPlan& gemm_plan(const GemmKey& k, const void* bias) {
    if (const auto it = plans_.find(k); it != plans_.end()) return it->second;
    const auto in_type = static_cast<cudaDataType_t>(k.in_type), out_type = static_cast<cudaDataType_t>(k.out_type);
    GemmPlan plan;
    IFT_CUBLAS_CHECK(cublasLtMatmulDescCreate(plan.op.out(), CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = k.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = k.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    IFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op.get(), CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    IFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op.get(), CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    if (k.bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;  // adds bias (N) to every row of C
      IFT_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan.op.get(), CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
      // The heuristic reads the pointer's alignment from the descriptor.
      IFT_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan.op.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    }
    // Column-major (rows, cols, ld) of each operand as cuBLASLt sees it.
    IFT_CUBLAS_CHECK(k.trans_b ? cublasLtMatrixLayoutCreate(plan.lt_a.out(), in_type, k.K, k.N, k.ldb)
                               : cublasLtMatrixLayoutCreate(plan.lt_a.out(), in_type, k.N, k.K, k.ldb));
    IFT_CUBLAS_CHECK(k.trans_a ? cublasLtMatrixLayoutCreate(plan.lt_b.out(), in_type, k.M, k.K, k.lda)
                               : cublasLtMatrixLayoutCreate(plan.lt_b.out(), in_type, k.K, k.M, k.lda));
    IFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(plan.lt_c.out(), out_type, k.N, k.M, k.ldc));

    MatmulPreference pref;
    IFT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(pref.out()));
    IFT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                          &gemm_workspace_bytes, sizeof gemm_workspace_bytes));
    // The real alignments (cuBLASLt's A is our B): without them the heuristic assumes 256 bytes and
    // may pick a kernel that faults or is rejected on a less aligned slice.
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, k.align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, k.align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, k.align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, k.align_c}};
    for (const auto& [attribute, bytes] : aligns)
      IFT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.get(), attribute, &bytes, sizeof bytes));

    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    IFT_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_.get(), plan.op.get(), plan.lt_a.get(), plan.lt_b.get(),
                                                    plan.lt_c.get(), plan.lt_c.get(), pref.get(), 1, &heuristic,
                                                    &found));
    IFT_CHECK(found > 0 && heuristic.state == CUBLAS_STATUS_SUCCESS, "cuBLASLt has no algorithm for a ", k.M, "x",
              k.N, "x", k.K, " GEMM (trans_a ", k.trans_a, ", trans_b ", k.trans_b, ", lda ", k.lda, ", ldb ", k.ldb,
              ", ldc ", k.ldc, ", bias ", k.bias, ", alignments of B ", k.align_a, " A ", k.align_b, " C ", k.align_c,
              " bytes)");
    plan.algo = heuristic.algo;
    return plans_.emplace(k, std::move(plan)).first->second;
  }

  void throw_release_error() {
    if (release_error_.empty()) return;
    const std::string message = std::exchange(release_error_, {});
    fail("backend cuda: an earlier ", message);
  }

  // Declared in the order they must be created; destroyed in reverse: plans before the handle,
  // the handle before the stream.
  Stream stream_;
  LtHandle lt_;
  std::map<GemmKey, GemmPlan> plans_;  // one per GEMM shape seen (a model has a dozen)
  std::unique_ptr<CudnnAttention> cudnn_;  // before the stream is destroyed: its handle uses it
  std::string release_error_;          // the first cudaFree failure not yet reported
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
