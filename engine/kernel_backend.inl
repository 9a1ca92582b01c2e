// The members of KernelBackend (engine/kernel_backend.h), included by the translation unit of each
// device after it has defined its Device and chosen its kernel build: engine/emu_backend.cpp (the
// emulator) and engine/cuda/backend.cpp (nvcc's kernels, cuBLASLt). A Device provides
//
//   allocate(bytes) / release(p)               device memory (256-byte aligned)
//   upload / download / copy / zero            on the device's stream; upload and download wait for it
//   stream()                                   what the kernels launch on
//   gemm<In, Out>(c, ldc, a, lda, b, ldb, bias, M, N, K, trans_a, trans_b, accumulate[, alpha])
//       row-major C (M, N) = alpha op(A) (M, K) . op(B) (K, N) [+ C] [+ bias (N)], inputs In, fp32
//       accumulation, one rounding to Out; op(X) = X^T when trans_x (X then stored (K, M) / (N, K));
//       lda, ldb, ldc the row strides in elements of A, B, C as stored (engine/device_gemm.h)
//   kGemmWorkspaceBytes                        the GEMM's own workspace, allocated once
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/base/error.h"
#include "engine/kernel_backend.h"
#include "engine/params.h"
#include "kernels/kernels.h"

namespace ift {

// Internal linkage: this file is compiled once per device, and each copy's helpers see that device's
// kernel types (an inline function returning an ift::emu type in one translation unit and the
// ift::cuda one in the other would share a mangled name).
namespace kernel_backend_detail {
namespace {

constexpr size_t kScalarBytes = 256;  // the workspace's first bytes: the loss and the grad-norm sum

size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Floats of scratch that AdamW's device decay mask of `runs` runs takes: int64 ends, then byte flags.
size_t decay_mask_floats(size_t runs) { return (runs * (sizeof(int64_t) + 1) + sizeof(float) - 1) / sizeof(float); }

}  // namespace
}  // namespace kernel_backend_detail

template <class S, class Device>
KernelBackend<S, Device>::KernelBackend() : device_(std::make_unique<Device>()) {
  if (Device::kGemmWorkspaceBytes > 0) {
    device_->gemm_workspace = allocate(Device::kGemmWorkspaceBytes, MemoryPart::workspace);
    device_->gemm_workspace_bytes = Device::kGemmWorkspaceBytes;
  }
}

template <class S, class Device>
KernelBackend<S, Device>::~KernelBackend() {
  if (workspace_) release(workspace_, workspace_bytes_, MemoryPart::workspace);
  if (device_->gemm_workspace) release(device_->gemm_workspace, Device::kGemmWorkspaceBytes, MemoryPart::workspace);
}

template <class S, class Device>
void* KernelBackend<S, Device>::allocate(size_t bytes, MemoryPart part) {
  void* p = device_->allocate(std::max<size_t>(bytes, 1));
  live_[part] += static_cast<int64_t>(bytes), ++live_.allocations;
  return p;
}

template <class S, class Device>
void KernelBackend<S, Device>::release(void* p, size_t bytes, MemoryPart part) {
  device_->release(p);
  live_[part] -= static_cast<int64_t>(bytes), --live_.allocations;
}

template <class S, class Device>
void KernelBackend<S, Device>::upload(void* dst, const void* src, size_t bytes) {
  device_->upload(dst, src, bytes);
}

template <class S, class Device>
void KernelBackend<S, Device>::download(void* dst, const void* src, size_t bytes) {
  device_->download(dst, src, bytes);
}

template <class S, class Device>
void KernelBackend<S, Device>::zero(void* dst, size_t bytes) {
  device_->zero(dst, bytes);
}

// The conversions run through the workspace-free cast kernel when S is bf16; fp32 is a copy.
template <class S, class Device>
void KernelBackend<S, Device>::to_act(S* out, const float* in, size_t n) {
  if constexpr (std::is_same_v<S, float>)
    device_->copy(out, in, n * sizeof(float));
  else
    cast(out, in, static_cast<int64_t>(n), device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::to_float(float* out, const S* in, size_t n) {
  if constexpr (std::is_same_v<S, float>)
    device_->copy(out, in, n * sizeof(float));
  else
    cast(out, in, static_cast<int64_t>(n), device_->stream());
}

// The scratch region: the largest of what any one op needs at this batch shape, after the scalars.
template <class S, class Device>
size_t KernelBackend<S, Device>::scratch_bytes(const ModelConfig& c, int N) {
  const int up_width = c.up_dim();
  const int64_t params = static_cast<int64_t>(ParamLayout::build(c).total);
  size_t floats = size_t(N) * c.n_heads;  // attention backward's delta
  floats = std::max(floats, layernorm_backward_scratch_floats(N, c.hidden));
  floats = std::max(floats, rmsnorm_backward_scratch_floats(N, c.hidden));
  for (int O : {c.qkv_dim(), c.hidden, up_width}) floats = std::max(floats, bias_backward_scratch_floats(N, O));
  floats = std::max(floats, sum_of_squares_scratch_floats(params));
  floats = std::max(floats, embedding_buckets_ints(N));  // int32s, as many as floats
  // AdamW's decay mask: a group's runs never outnumber the storage tensors (each run is one or more)
  floats = std::max(floats, kernel_backend_detail::decay_mask_floats(ParamLayout::build(c).storage.size() + 1));
  const size_t bytes = std::max(floats * sizeof(float), cross_entropy_scratch_bytes(N, c.vocab_size));
  return kernel_backend_detail::kScalarBytes + kernel_backend_detail::round_up(bytes);
}

template <class S, class Device>
size_t KernelBackend<S, Device>::workspace_bytes(const ModelConfig& c, int N) {
  return scratch_bytes(c, N) + Device::kGemmWorkspaceBytes;
}

template <class S, class Device>
void KernelBackend<S, Device>::reserve_workspace(const ModelConfig& config, int N) {
  const size_t want = scratch_bytes(config, N);
  if (want <= workspace_bytes_) return;
  if (workspace_) release(workspace_, workspace_bytes_, MemoryPart::workspace);
  workspace_ = nullptr, workspace_bytes_ = 0;
  workspace_ = allocate(want, MemoryPart::workspace);
  workspace_bytes_ = want;
}

template <class S, class Device>
float* KernelBackend<S, Device>::scratch(size_t floats) {
  const size_t have = workspace_bytes_ > kernel_backend_detail::kScalarBytes
                          ? (workspace_bytes_ - kernel_backend_detail::kScalarBytes) / sizeof(float)
                          : 0;
  IFT_CHECK(floats <= have, "kernel backend: the op needs ", floats, " floats of workspace, ", have,
            " are reserved (reserve_workspace was not called for this batch shape)");
  return reinterpret_cast<float*>(static_cast<char*>(workspace_) + kernel_backend_detail::kScalarBytes);
}

// ---- ops ------------------------------------------------------------------------------------------

template <class S, class Device>
void KernelBackend<S, Device>::embedding_forward(S* out, const int32_t* tokens, const int32_t* positions, const S* wte,
                                                 const S* wpe, const EmbeddingArgs& a) {
  ift::embedding_forward(out, tokens, wpe ? positions : nullptr, wte, wpe, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::embedding_backward(float* dwte, float* dwpe, const S* dout, const int32_t* tokens,
                                                  const int32_t* positions, const EmbeddingArgs& a) {
  // The ids come back to the host (download waits for the stream), are grouped by id there, and the
  // groups go to the scratch region (an upload, which waits too: no earlier op still reads it).
  const size_t n = size_t(a.N);
  std::vector<int32_t> ids(dwpe ? 2 * n : n), buckets(embedding_buckets_ints(a.N));
  download(ids.data(), tokens, n * sizeof(int32_t));
  if (dwpe) download(ids.data() + n, positions, n * sizeof(int32_t));
  embedding_buckets(buckets.data(), ids.data(), dwpe ? ids.data() + n : nullptr, a);
  auto* device_buckets = reinterpret_cast<int32_t*>(scratch(buckets.size()));
  upload(device_buckets, buckets.data(), buckets.size() * sizeof(int32_t));
  ift::embedding_backward(dwte, dwpe, dout, device_buckets, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::layernorm_forward(S* out, float* mean, float* rstd, const S* x, const S* w, const S* b,
                                                 const NormArgs& a) {
  ift::layernorm_forward(out, mean, rstd, x, w, b, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::layernorm_backward(S* dx, float* dw, float* db, const S* dres, const S* dout,
                                                  const S* x, const S* w, const float* mean, const float* rstd,
                                                  const NormArgs& a) {
  const size_t n = layernorm_backward_scratch_floats(a.N, a.C);
  ift::layernorm_backward(dx, dw, db, dres, dout, x, w, mean, rstd, a, scratch(n), n, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::rmsnorm_forward(S* out, float* rstd, const S* x, const S* w, const NormArgs& a) {
  ift::rmsnorm_forward(out, rstd, x, w, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::layernorm_residual_forward(S* residual_out, S* out, float* mean, float* rstd, const S* x,
                                                          const S* residual, const S* w, const S* b,
                                                          const NormArgs& a) {
  ift::layernorm_residual_forward(residual_out, out, mean, rstd, x, residual, w, b, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::rmsnorm_residual_forward(S* residual_out, S* out, float* rstd, const S* x,
                                                        const S* residual, const S* w, const NormArgs& a) {
  ift::rmsnorm_residual_forward(residual_out, out, rstd, x, residual, w, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::rmsnorm_backward(S* dx, float* dw, const S* dres, const S* dout, const S* x,
                                                const S* w, const float* rstd, const NormArgs& a) {
  const size_t n = rmsnorm_backward_scratch_floats(a.N, a.C);
  ift::rmsnorm_backward(dx, dw, dres, dout, x, w, rstd, a, scratch(n), n, device_->stream());
}

// out (N, O) = inp (N, I) . w^T + b: one GEMM with the bias in its epilogue.
template <class S, class Device>
void KernelBackend<S, Device>::matmul_forward(S* out, const S* inp, const S* w, const S* b, const MatmulArgs& a) {
  const int N = a.N, I = a.I, O = a.O;
  device_->template gemm<S, S>(out, O, inp, I, w, I, b, N, O, I, false, true, false);
}

// dinp (N, I) = dout . w; dw (O, I) += dout^T . inp into the fp32 gradient; db by the bias kernel.
template <class S, class Device>
void KernelBackend<S, Device>::matmul_backward(S* dinp, float* dw, float* db, const S* dout, const S* inp, const S* w,
                                               const MatmulArgs& a) {
  const int N = a.N, I = a.I, O = a.O;
  if (dinp) device_->template gemm<S, S>(dinp, I, dout, O, w, I, nullptr, N, I, O, false, false, false);
  if (dw) device_->template gemm<S, float>(dw, I, dout, O, inp, I, nullptr, O, I, N, true, false, true);
  if (db) {
    const size_t n = bias_backward_scratch_floats(N, O);
    bias_backward(db, dout, N, O, scratch(n), n, device_->stream());
  }
}

template <class S, class Device>
template <class Out>
void KernelBackend<S, Device>::gemm(Out* c, const S* a, const S* b, const GemmArgs& g) {
  device_->template gemm<S, Out>(c, g.ldc, a, g.lda, b, g.ldb, nullptr, g.M, g.N, g.K, g.trans_a, g.trans_b,
                                 g.accumulate, g.alpha);
}

template <class S, class Device>
void KernelBackend<S, Device>::attention_forward(S* out, float* lse, const S* qkv, const AttentionArgs& a) {
  if constexpr (kind == BackendKind::cuda && std::is_same_v<S, __nv_bfloat16>) {
    if (attention_ == AttentionPath::cudnn) return device_->cudnn().forward(out, lse, qkv, a);
  }
  ift::attention_forward(out, lse, qkv, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::attention_backward(S* dqkv, const S* dout, const S* qkv, const S* out, const float* lse,
                                                  const AttentionArgs& a) {
  if constexpr (kind == BackendKind::cuda && std::is_same_v<S, __nv_bfloat16>) {
    if (attention_ == AttentionPath::cudnn) return device_->cudnn().backward(dqkv, dout, qkv, out, lse, a);
  }
  float* delta = scratch(size_t(a.N) * a.H);
  ift::attention_backward(dqkv, delta, dout, qkv, out, lse, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::set_attention_path(AttentionPath path) {
  check_attention_path(path, kind, std::is_same_v<S, float> ? Precision::fp32 : Precision::bf16);
  if constexpr (kind == BackendKind::cuda && std::is_same_v<S, __nv_bfloat16>) {
    if (path == AttentionPath::cudnn) device_->cudnn();  // the handle now, so a missing library fails here
  }
  attention_ = path;
}

template <class S, class Device>
void KernelBackend<S, Device>::rope_forward(S* x, const int32_t* positions, const float* table, const RopeArgs& a) {
  ift::rope_forward(x, positions, table, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::rope_backward(S* dx, const int32_t* positions, const float* table, const RopeArgs& a) {
  ift::rope_backward(dx, positions, table, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::gelu_forward(S* out, const S* inp, size_t n) {
  ift::gelu_forward(out, inp, static_cast<int64_t>(n), device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::gelu_backward(S* dinp, const S* inp, const S* dout, size_t n) {
  ift::gelu_backward(dinp, inp, dout, static_cast<int64_t>(n), device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::glu_forward(S* out, const S* inp, const GluArgs& a) {
  ift::glu_forward(out, inp, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::glu_backward(S* dinp, const S* inp, const S* dout, const GluArgs& a) {
  ift::glu_backward(dinp, inp, dout, a, device_->stream());
}

// One device copy per row: decoding copies a handful of rows (the new tokens' keys and values).
template <class S, class Device>
void KernelBackend<S, Device>::copy_rows(S* dst, int ld_dst, const S* src, int ld_src, int rows, int cols) {
  for (int r = 0; r < rows; ++r)
    device_->copy(dst + int64_t(r) * ld_dst, src + int64_t(r) * ld_src, size_t(cols) * sizeof(S));
}

template <class S, class Device>
void KernelBackend<S, Device>::attention_decode(S* out, const S* q, const S* k_cache, const S* v_cache,
                                                const DecodeAttentionArgs& a) {
  ift::attention_decode(out, q, k_cache, v_cache, a, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::residual_forward(S* out, const S* a, const S* b, size_t n) {
  ift::residual_forward(out, a, b, static_cast<int64_t>(n), device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::dropout(S* out, const S* in, const DropoutArgs& args) {
  ift::dropout(out, in, args, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::neftune_forward(S* x, const int32_t* cu_seqlens, const NeftuneArgs& args) {
  ift::neftune_forward(x, cu_seqlens, args, device_->stream());
}

template <class S, class Device>
void KernelBackend<S, Device>::nf4_dequantize(S* out, const uint8_t* codes, const float* absmax, const Nf4Args& args) {
  ift::nf4_dequantize(out, codes, absmax, args, device_->stream());
}

// The loss is summed on the device (fp32, fixed order) and read back: one small synchronous copy.
template <class S, class Device>
double KernelBackend<S, Device>::cross_entropy(S* dlogits, const S* logits, const int32_t* targets,
                                               const CrossEntropyArgs& a) {
  const size_t bytes = cross_entropy_scratch_bytes(a.N, a.V);
  float* loss = static_cast<float*>(workspace_);
  ift::cross_entropy_forward(a, loss, dlogits, logits, targets, scratch((bytes + sizeof(float) - 1) / sizeof(float)),
                             bytes, device_->stream());
  float host = 0;
  download(&host, loss, sizeof(float));
  return host;
}

template <class S, class Device>
double KernelBackend<S, Device>::sum_of_squares(const float* g, size_t n) {
  const size_t floats = sum_of_squares_scratch_floats(static_cast<int64_t>(n));
  float* out = static_cast<float*>(workspace_) + 1;
  ift::sum_of_squares(out, g, static_cast<int64_t>(n), scratch(floats), floats, device_->stream());
  float host = 0;
  download(&host, out, sizeof(float));
  return host;
}

// One launch over the whole buffer: the decay runs go to the device as the kernel's run arrays (ends,
// then flags), uploaded into the scratch region for this call (a few hundred bytes; the upload waits
// for the stream, so no earlier op still reads the scratch). Bitwise what one launch per run gave:
// a run that does not decay has the decay factor 1 either way.
template <class S, class Device>
void KernelBackend<S, Device>::adamw(float* master, S* params, const float* grads, float* m, float* v,
                                     const AdamWArgs& a) {
  if constexpr (!std::is_same_v<S, float>)
    IFT_CHECK(master != nullptr, "kernel backend: bf16 parameters need fp32 master weights");
  const size_t count = static_cast<size_t>(a.runs);
  IFT_ASSERT(a.runs >= 0 && (count == 0 ? a.n == 0 : a.run_ends[count - 1] == a.n));
  if (a.n == 0) return;
  auto* ends = reinterpret_cast<int64_t*>(scratch(kernel_backend_detail::decay_mask_floats(count)));
  auto* decays = reinterpret_cast<uint8_t*>(ends + count);
  upload(ends, a.run_ends, count * sizeof(int64_t));
  upload(decays, a.run_decays, count);
  AdamWArgs d = a;
  d.run_ends = ends, d.run_decays = decays;
  if constexpr (std::is_same_v<S, float>)
    adamw_update(d, master ? master : params, m, v, nullptr, grads, device_->stream());
  else
    adamw_update(d, master, m, v, params, grads, device_->stream());
}

}  // namespace ift
