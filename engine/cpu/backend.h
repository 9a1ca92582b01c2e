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

  void embedding_forward(T* out, const int32_t* tokens, const int32_t* positions, const T* wte, const T* wpe, int N,
                         int C, int V, int P) {
    cpu::embedding_forward(out, tokens, positions, wte, wpe, N, C, V, P);
  }
  void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, const int32_t* positions, int N,
                          int C, int, int) {
    cpu::embedding_backward(dwte, dwpe, dout, tokens, positions, N, C);
  }
  void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, int N, int C, float eps) {
    cpu::layernorm_forward(out, mean, rstd, x, w, b, N, C, eps);
  }
  void layernorm_backward(T* dx, T* dw, T* db, const T* dres, const T* dout, const T* x, const T* w, const T* mean,
                          const T* rstd, int N, int C) {
    cpu::layernorm_backward(dx, dw, db, dres, dout, x, w, mean, rstd, N, C);
  }
  void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int N, int C, float eps) {
    cpu::rmsnorm_forward(out, rstd, x, w, N, C, eps);
  }
  // The reference composes the two ops: the kernels' fused pass must equal it.
  void layernorm_residual_forward(T* residual_out, T* out, T* mean, T* rstd, const T* x, const T* residual, const T* w,
                                  const T* b, int N, int C, float eps) {
    cpu::residual_forward(residual_out, x, residual, int64_t(N) * C);
    cpu::layernorm_forward(out, mean, rstd, residual_out, w, b, N, C, eps);
  }
  void rmsnorm_residual_forward(T* residual_out, T* out, T* rstd, const T* x, const T* residual, const T* w, int N,
                                int C, float eps) {
    cpu::residual_forward(residual_out, x, residual, int64_t(N) * C);
    cpu::rmsnorm_forward(out, rstd, residual_out, w, N, C, eps);
  }
  void rmsnorm_backward(T* dx, T* dw, const T* dres, const T* dout, const T* x, const T* w, const T* rstd, int N,
                        int C) {
    cpu::rmsnorm_backward(dx, dw, dres, dout, x, w, rstd, N, C);
  }
  void matmul_forward(T* out, const T* inp, const T* w, const T* b, int N, int I, int O) {
    cpu::matmul_forward(out, inp, w, b, N, I, O);
  }
  void matmul_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, int N, int I, int O) {
    cpu::matmul_backward(dinp, dw, db, dout, inp, w, N, I, O);
  }
  void gemm(T* c, const T* a, const T* b, const GemmArgs& g) {
    check_gemm_shape(g.M, g.N, g.K, g.lda, g.ldb, g.ldc, g.trans_a, g.trans_b);
    cpu::gemm(g.trans_a, g.trans_b, g.M, g.N, g.K, T(g.alpha), a, g.lda, b, g.ldb, T(g.accumulate ? 1 : 0), c, g.ldc);
  }
  void attention_forward(T* out, T* lse, const T* qkv, const AttentionDims& d) {
    const cpu::AttentionShape s = shape(d);
    cpu::attention_forward(out, lse, qkv, qkv + d.H * d.D, qkv + (d.H + d.KVH) * d.D, s);
  }
  void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const AttentionDims& d) {
    const int k = d.H * d.D, v = (d.H + d.KVH) * d.D;
    cpu::attention_backward(dqkv, dqkv + k, dqkv + v, dout, qkv, qkv + k, qkv + v, out, lse, shape(d));
  }
  void rope_forward(T* x, const int32_t* positions, int N, int heads, int D, int ld, float theta) {
    cpu::rope_forward(x, positions, N, heads, D, ld, theta);
  }
  void rope_backward(T* dx, const int32_t* positions, int N, int heads, int D, int ld, float theta) {
    cpu::rope_backward(dx, positions, N, heads, D, ld, theta);
  }
  void gelu_forward(T* out, const T* inp, size_t n) { cpu::gelu_forward(out, inp, static_cast<int64_t>(n)); }
  void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n) {
    cpu::gelu_backward(dinp, inp, dout, static_cast<int64_t>(n));
  }
  void swiglu_forward(T* out, const T* inp, int N, int F) { cpu::swiglu_forward(out, inp, N, F); }
  void swiglu_backward(T* dinp, const T* inp, const T* dout, int N, int F) { cpu::swiglu_backward(dinp, inp, dout, N, F); }
  void copy_rows(T* dst, int ld_dst, const T* src, int ld_src, int rows, int cols) {
    for (int r = 0; r < rows; ++r)
      std::memcpy(dst + int64_t(r) * ld_dst, src + int64_t(r) * ld_src, size_t(cols) * sizeof(T));
  }
  void attention_decode(T* out, const T* q, int ldq, const T* k_cache, const T* v_cache, int n, int start, int H,
                        int KVH, int D, float scale) {
    cpu::attention_cached(out, q, ldq, k_cache, v_cache, n, start, H, KVH, D, scale);
  }
  void residual_forward(T* out, const T* a, const T* b, size_t n) {
    cpu::residual_forward(out, a, b, static_cast<int64_t>(n));
  }
  double cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int N, int V, int ld, double normaliser) {
    return cpu::cross_entropy_forward(dlogits, logits, targets, N, V, ld, normaliser);
  }
  double sum_of_squares(const T* g, size_t n) { return cpu::sum_of_squares(g, static_cast<int64_t>(n)); }
  void adamw(float* master, T* params, const T* grads, float* m, float* v, size_t n, const DecayRuns& runs,
             const AdamWHyper& h) {
    IFT_CHECK(master == nullptr, "cpu backend: the parameters are their own master weights");
    cpu::AdamWStep s;
    s.lr = h.lr, s.beta1 = h.beta1, s.beta2 = h.beta2, s.eps = h.eps, s.grad_scale = h.grad_scale, s.t = h.t;
    int64_t begin = 0;
    for (size_t r = 0; r < runs.ends.size(); ++r) {
      s.weight_decay = runs.decays[r] ? h.weight_decay : 0.0f;
      cpu::adamw_update(params + begin, grads + begin, m + begin, v + begin, runs.ends[r] - begin, s);
      begin = runs.ends[r];
    }
    IFT_ASSERT(static_cast<size_t>(begin) == n);
  }

 private:
  static cpu::AttentionShape shape(const AttentionDims& d) {
    cpu::AttentionShape s;
    s.N = d.N, s.H = d.H, s.KVH = d.KVH, s.D = d.D, s.ld = d.ld, s.cu_seqlens = d.cu_seqlens_host, s.S = d.S;
    s.scale = d.scale;
    return s;
  }
  MemoryBytes live_;
};

}  // namespace ift
