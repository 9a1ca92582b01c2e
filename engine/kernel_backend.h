// The kernel backends: the ops of kernels/ behind the Backend interface (engine/backend.h), over one
// of two devices:
//
//   EmuBackend<S>   kernels built by the host compiler over the SIMT emulator (ift::emu); memory is
//                   host memory; a CPU loop GEMM (S inputs, fp32 accumulation, one rounding to the
//                   output type: the semantics of a cuBLASLt call) stands in for cuBLASLt.
//   CudaBackend<S>  kernels built by nvcc (ift::cuda), cudaMalloc'd memory, one stream, cuBLASLt
//                   GEMMs with a fixed workspace. Only in builds with CUDA (cuda_built()).
//
// S is the storage type of weights and activations: float (precision fp32) or __nv_bfloat16
// (precision bf16, mixed: parameter gradients, master weights, optimizer moments, norm statistics,
// the log-sum-exp and every reduction stay fp32; the logits are bf16 but the cross-entropy kernel
// computes in fp32).
//
// One class template serves both devices. Its members are defined in engine/kernel_backend.inl,
// which engine/emu_backend.cpp and engine/cuda/backend.cpp each include after choosing their kernel
// build (kernels/target.h): each translation unit instantiates the backend over its own device, and
// the calls inside resolve to that device's kernels.
#pragma once

#include <cuda_bf16.h>  // __nv_bfloat16 (host-compilable)

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "engine/backend.h"
#include "engine/config.h"

namespace ift {

struct EmuDevice;   // engine/emu_device.h
struct CudaDevice;  // engine/cuda/backend.cpp

template <class S, class Device>
class KernelBackend {
 public:
  using act_t = S;
  using grad_t = float;
  using stat_t = float;
  static constexpr BackendKind kind = std::is_same_v<Device, CudaDevice> ? BackendKind::cuda : BackendKind::emu;
  static constexpr bool host_memory = !std::is_same_v<Device, CudaDevice>;

  KernelBackend();  // cuda: selects the current device, creates a stream and a cuBLASLt handle
  ~KernelBackend();
  KernelBackend(const KernelBackend&) = delete;
  KernelBackend& operator=(const KernelBackend&) = delete;

  void* allocate(size_t bytes, MemoryPart part);
  void release(void* p, size_t bytes, MemoryPart part);
  const MemoryBytes& allocated() const { return live_; }
  void upload(void* dst, const void* src, size_t bytes);
  void download(void* dst, const void* src, size_t bytes);
  void zero(void* dst, size_t bytes);
  void to_act(S* out, const float* in, size_t n);
  void to_float(float* out, const S* in, size_t n);

  // Scratch for the kernels (norm and bias gradient partials, cross-entropy chunks, attention's
  // delta, the grad-norm partials; used one op at a time, so one region of the largest) plus the
  // device's own (cuBLASLt's workspace). Grows to fit, never shrinks.
  void reserve_workspace(const ModelConfig& config, int N);
  // What reserve_workspace allocates for this shape plus the device's fixed GEMM workspace.
  static size_t workspace_bytes(const ModelConfig& config, int N);

  void embedding_forward(S* out, const int32_t* tokens, const int32_t* positions, const S* wte, const S* wpe,
                         const EmbeddingArgs& a);
  void embedding_backward(float* dwte, float* dwpe, const S* dout, const int32_t* tokens, const int32_t* positions,
                          const EmbeddingArgs& a);
  void layernorm_forward(S* out, float* mean, float* rstd, const S* x, const S* w, const S* b, const NormArgs& a);
  void layernorm_backward(S* dx, float* dw, float* db, const S* dres, const S* dout, const S* x, const S* w,
                          const float* mean, const float* rstd, const NormArgs& a);
  void rmsnorm_forward(S* out, float* rstd, const S* x, const S* w, const NormArgs& a);
  void layernorm_residual_forward(S* residual_out, S* out, float* mean, float* rstd, const S* x, const S* residual,
                                  const S* w, const S* b, const NormArgs& a);
  void rmsnorm_residual_forward(S* residual_out, S* out, float* rstd, const S* x, const S* residual, const S* w,
                                const NormArgs& a);
  void rmsnorm_backward(S* dx, float* dw, const S* dres, const S* dout, const S* x, const S* w, const float* rstd,
                        const NormArgs& a);
  void matmul_forward(S* out, const S* inp, const S* w, const S* b, const MatmulArgs& a);
  void matmul_backward(S* dinp, float* dw, float* db, const S* dout, const S* inp, const S* w, const MatmulArgs& a);
  // C (Out: S, or fp32 for parameter gradients) = / += alpha op(A) op(B), S inputs (GemmArgs)
  template <class Out>
  void gemm(Out* c, const S* a, const S* b, const GemmArgs& g);
  void attention_forward(S* out, float* lse, const S* qkv, const AttentionArgs& a);
  void attention_backward(S* dqkv, const S* dout, const S* qkv, const S* out, const float* lse,
                          const AttentionArgs& a);
  // Whose kernels attention_forward/backward run; cudnn on the cuda backend in bf16 only (callers
  // check_attention_path first; this refuses too).
  void set_attention_path(AttentionPath path);
  void copy_rows(S* dst, int ld_dst, const S* src, int ld_src, int rows, int cols);
  void attention_decode(S* out, const S* q, const S* k_cache, const S* v_cache, const DecodeAttentionArgs& a);
  void rope_forward(S* x, const int32_t* positions, const float* table, const RopeArgs& a);
  void rope_backward(S* dx, const int32_t* positions, const float* table, const RopeArgs& a);
  void gelu_forward(S* out, const S* inp, size_t n);
  void gelu_backward(S* dinp, const S* inp, const S* dout, size_t n);
  void glu_forward(S* out, const S* inp, const GluArgs& a);
  void glu_backward(S* dinp, const S* inp, const S* dout, const GluArgs& a);
  void residual_forward(S* out, const S* a, const S* b, size_t n);
  void dropout(S* out, const S* in, const DropoutArgs& args);
  void neftune_forward(S* x, const int32_t* cu_seqlens, const NeftuneArgs& args);
  void nf4_dequantize(S* out, const uint8_t* codes, const float* absmax, const Nf4Args& args);
  double cross_entropy(S* dlogits, const S* logits, const int32_t* targets, const CrossEntropyArgs& a);
  double sum_of_squares(const float* g, size_t n);
  void adamw(float* master, S* params, const float* grads, float* m, float* v, const AdamWArgs& a);

 private:
  static size_t scratch_bytes(const ModelConfig& config, int N);
  float* scratch(size_t floats);  // the workspace past its scalars; checks it is large enough

  std::unique_ptr<Device> device_;
  AttentionPath attention_ = AttentionPath::ift;
  MemoryBytes live_;
  void* workspace_ = nullptr;  // (workspace_bytes_) see reserve_workspace
  size_t workspace_bytes_ = 0;
};

template <class S>
using EmuBackend = KernelBackend<S, EmuDevice>;
template <class S>
using CudaBackend = KernelBackend<S, CudaDevice>;

}  // namespace ift
