// The cpu backend: the reference ops of engine/cpu/ops.h behind the Backend interface
// (engine/backend.h). T is float (the backend that trains) or double (the finite-difference checks).
// Memory is host memory, 64-byte aligned; every allocation is tallied by part.
#pragma once

#include <cstring>
#include <new>

#include "engine/backend.h"
#include "engine/cpu/ops.h"
#include "engine/base/error.h"
#include "engine/cpu/blas.h"
#include "engine/device_gemm.h"

namespace ift {

template <class T>
class CpuBackend {
 public:
  using act_t = T;
  using grad_t = T;
  using stat_t = T;
  static constexpr BackendKind kind = BackendKind::cpu;
  static constexpr bool host_memory = true;

  void* allocate(size_t bytes, MemoryPart part) {
    void* p = ::operator new(bytes, std::align_val_t{64});
    live_[part] += static_cast<int64_t>(bytes), ++live_.allocations;
    return p;
  }
  void release(void* p, size_t bytes, MemoryPart part) {
    ::operator delete(p, std::align_val_t{64});
    live_[part] -= static_cast<int64_t>(bytes), --live_.allocations;
  }
  const MemoryBytes& allocated() const { return live_; }
  void upload(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }
  void to_act(T* out, const float* in, size_t n) { std::copy(in, in + n, out); }
  void to_float(float* out, const T* in, size_t n) {
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]);
  }
  // The CPU ops keep their small per-call scratch (a few rows per thread) on the heap themselves.
  void reserve_workspace(const ModelConfig&, int) {}
  static size_t workspace_bytes(const ModelConfig&, int) { return 0; }

  void embedding_forward(T* out, const int32_t* tokens, const int32_t* positions, const T* wte, const T* wpe,
                         const EmbeddingArgs& a) {
    cpu::embedding_forward(out, tokens, positions, wte, wpe, a);
  }
  void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, const int32_t* positions,
                          const EmbeddingArgs& a) {
    cpu::embedding_backward(dwte, dwpe, dout, tokens, positions, a);
  }
  void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, const NormArgs& a) {
    cpu::layernorm_forward(out, mean, rstd, x, w, b, a);
  }
  void layernorm_backward(T* dx, T* dw, T* db, const T* dres, const T* dout, const T* x, const T* w, const T* mean,
                          const T* rstd, const NormArgs& a) {
    cpu::layernorm_backward(dx, dw, db, dres, dout, x, w, mean, rstd, a);
  }
  void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, const NormArgs& a) {
    cpu::rmsnorm_forward(out, rstd, x, w, a);
  }
  // The reference composes the two ops: the kernels' fused pass must equal it.
  void layernorm_residual_forward(T* residual_out, T* out, T* mean, T* rstd, const T* x, const T* residual, const T* w,
                                  const T* b, const NormArgs& a) {
    cpu::residual_forward(residual_out, x, residual, int64_t(a.N) * a.C);
    cpu::layernorm_forward(out, mean, rstd, residual_out, w, b, a);
  }
  void rmsnorm_residual_forward(T* residual_out, T* out, T* rstd, const T* x, const T* residual, const T* w,
                                const NormArgs& a) {
    cpu::residual_forward(residual_out, x, residual, int64_t(a.N) * a.C);
    cpu::rmsnorm_forward(out, rstd, residual_out, w, a);
  }
  void rmsnorm_backward(T* dx, T* dw, const T* dres, const T* dout, const T* x, const T* w, const T* rstd,
                        const NormArgs& a) {
    cpu::rmsnorm_backward(dx, dw, dres, dout, x, w, rstd, a);
  }
  void matmul_forward(T* out, const T* inp, const T* w, const T* b, const MatmulArgs& a) {
    cpu::matmul_forward(out, inp, w, b, a);
  }
  void matmul_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const MatmulArgs& a) {
    cpu::matmul_backward(dinp, dw, db, dout, inp, w, a);
  }
  void gemm(T* c, const T* a, const T* b, const GemmArgs& g) {
    check_gemm_shape(g.M, g.N, g.K, g.lda, g.ldb, g.ldc, g.trans_a, g.trans_b);
    cpu::gemm(g.trans_a, g.trans_b, g.M, g.N, g.K, T(g.alpha), a, g.lda, b, g.ldb, T(g.accumulate ? 1 : 0), c, g.ldc);
  }
  void attention_forward(T* out, T* lse, const T* qkv, const AttentionArgs& a) {
    cpu::attention_forward(out, lse, qkv, qkv + a.H * a.D, qkv + (a.H + a.KVH) * a.D, a);
  }
  void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const AttentionArgs& a) {
    const int k = a.H * a.D, v = (a.H + a.KVH) * a.D;
    cpu::attention_backward(dqkv, dqkv + k, dqkv + v, dout, qkv, qkv + k, qkv + v, out, lse, a);
  }
  void rope_forward(T* x, const int32_t* positions, const float* table, const RopeArgs& a) {
    cpu::rope_forward(x, positions, table, a);
  }
  void rope_backward(T* dx, const int32_t* positions, const float* table, const RopeArgs& a) {
    cpu::rope_backward(dx, positions, table, a);
  }
  void gelu_forward(T* out, const T* inp, size_t n) { cpu::gelu_forward(out, inp, static_cast<int64_t>(n)); }
  void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n) {
    cpu::gelu_backward(dinp, inp, dout, static_cast<int64_t>(n));
  }
  void glu_forward(T* out, const T* inp, const GluArgs& a) { cpu::glu_forward(out, inp, a); }
  void glu_backward(T* dinp, const T* inp, const T* dout, const GluArgs& a) { cpu::glu_backward(dinp, inp, dout, a); }
  void copy_rows(T* dst, int ld_dst, const T* src, int ld_src, int rows, int cols) {
    for (int r = 0; r < rows; ++r)
      std::memcpy(dst + int64_t(r) * ld_dst, src + int64_t(r) * ld_src, size_t(cols) * sizeof(T));
  }
  void attention_decode(T* out, const T* q, const T* k_cache, const T* v_cache, const DecodeAttentionArgs& a) {
    cpu::attention_cached(out, q, k_cache, v_cache, a);
  }
  void residual_forward(T* out, const T* a, const T* b, size_t n) {
    cpu::residual_forward(out, a, b, static_cast<int64_t>(n));
  }
  void dropout(T* out, const T* in, const DropoutArgs& args) { cpu::dropout(out, in, args); }
  void neftune_forward(T* x, const int32_t* cu_seqlens, const NeftuneArgs& args) {
    cpu::neftune_forward(x, cu_seqlens, args);
  }
  void nf4_dequantize(T* out, const uint8_t* codes, const float* absmax, const Nf4Args& args) {
    cpu::nf4_dequantize(out, codes, absmax, args);
  }
  double cross_entropy(T* dlogits, const T* logits, const int32_t* targets, const CrossEntropyArgs& a) {
    return cpu::cross_entropy_forward(dlogits, logits, targets, a);
  }
  double sum_of_squares(const T* g, size_t n) { return cpu::sum_of_squares(g, static_cast<int64_t>(n)); }
  void adamw(float* master, T* params, const T* grads, float* m, float* v, const AdamWArgs& a) {
    IFT_CHECK(master == nullptr, "cpu backend: the parameters are their own master weights");
    cpu::adamw_update(params, grads, m, v, a);
  }

 private:
  MemoryBytes live_;
};

}  // namespace ift
