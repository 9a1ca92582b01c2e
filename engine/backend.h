// The one interface the model runs on: memory, copies, GEMM and the ops. Three implementations:
//
//   cpu   CpuBackend<T> (engine/cpu/backend.h): the CPU reference ops, fp32 (and double for the
//         finite-difference checks). Memory is host memory.
//   emu   EmuBackend<S> (engine/kernel_backend.h): the CUDA kernels compiled by the host compiler
//         over the SIMT emulator (ift::emu), with a CPU loop GEMM standing in for cuBLASLt.
//   cuda  CudaBackend<S>: the same kernels built by nvcc (ift::cuda), cuBLASLt GEMMs (bf16 or fp32
//         inputs, fp32 accumulation), one stream, device memory.
//
// The interface is static (a class with the members below, checked by the Backend concept): the
// model is a template over its backend, so an op call is a direct call and the element types are
// known at compile time. Model<B> (engine/model.h) is the same forward and backward on all three.
//
// Types of a backend:
//   act_t    weights and activations: float or double (cpu), float or bf16 (emu, cuda)
//   grad_t   parameter gradients: act_t on cpu, always float on emu/cuda (accumulating micro-batch
//            gradients in bf16 would round them away)
//   stat_t   saved per-row statistics (norm mean/rstd, attention log-sum-exp): act_t on cpu, float
//            on emu/cuda
//
// Conventions are those of the ops (engine/cpu/ops.h): activation gradients are written (=),
// parameter gradients accumulate (+=). Every pointer an op takes is backend memory.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/config.h"
#include "kernels/args.h"

namespace ift {

enum class BackendKind { cpu, emu, cuda };
enum class Precision { fp32, bf16 };

BackendKind parse_backend(std::string_view name);      // "cpu" | "emu" | "cuda", else ift::Error
Precision parse_precision(std::string_view name);      // "fp32" | "bf16", else ift::Error
const char* name_of(BackendKind kind);
const char* name_of(Precision precision);
bool cuda_built();  // whether this build has the cuda backend (CUDA compiled in)

// Which kernels run attention (`attention:` in the training config, `--attention` on ift dump):
// ift's own (kernels/attention.h), or cuDNN's fused attention (engine/cuda/cudnn_attention.h).
enum class AttentionPath { ift, cudnn };
AttentionPath parse_attention_path(std::string_view name);  // "ift" | "cudnn", else ift::Error naming `attention`
const char* name_of(AttentionPath path);
bool cudnn_built();                        // whether this build links cuDNN (a cuda build that found it)
bool cudnn_head_dim_supported(int head_dim);  // the head dims the cuDNN path takes: multiples of 8 up to 128
// Refuses, with an ift::Error naming `attention` and the reason, a path this backend, precision and
// head dim cannot run: cudnn needs backend cuda, precision bf16, a build with cuDNN and a head dim it takes.
// head_dim 0: not checked (not known yet).
void check_attention_path(AttentionPath path, BackendKind kind, Precision precision, int head_dim = 0);

// What the model's memory is for. Every allocation names its part, so the plan (what a batch shape
// needs, computed from formulas) can be compared with what was actually allocated.
enum class MemoryPart { params, grads, master, optimizer, activations, activation_grads, batch, workspace };
inline constexpr int kMemoryParts = 8;
const char* name_of(MemoryPart part);

// Bytes per part. Used both for a plan and for the tally of live allocations.
struct MemoryBytes {
  std::array<int64_t, kMemoryParts> bytes{};
  int64_t allocations = 0;  // live allocations (a tally; a plan leaves it 0)
  int64_t& operator[](MemoryPart p) { return bytes[static_cast<int>(p)]; }
  int64_t operator[](MemoryPart p) const { return bytes[static_cast<int>(p)]; }
  int64_t total() const;
  std::string table() const;  // one line per non-empty part, then the total, in MiB and bytes
};

// The static interface. `b` is a backend, pointers are typed by its act_t/grad_t/stat_t.
template <class B>
concept Backend = requires(B& b, typename B::act_t* a, const typename B::act_t* ca, typename B::grad_t* g,
                           const typename B::grad_t* cg, typename B::stat_t* s, const typename B::stat_t* cs,
                           const int32_t* ids, float* f, const float* cf, void* p, const void* cp, size_t n,
                           int i, float x, const AttentionArgs& dims, const DecodeAttentionArgs& dec,
                           const AdamWArgs& adamw, const ModelConfig& config,
                           const EmbeddingArgs& emb, const NormArgs& norm, const GluArgs& glu,
                           const DropoutArgs& drop, const NeftuneArgs& neft,
                           const GemmArgs& gemm, const MatmulArgs& mm, const CrossEntropyArgs& ce,
                           const uint8_t* codes, const Nf4Args& nf4, const RopeArgs& rope) {
  typename B::act_t;
  typename B::grad_t;
  typename B::stat_t;
  { B::kind } -> std::convertible_to<BackendKind>;
  { B::host_memory } -> std::convertible_to<bool>;  // true: buffers are readable on the host
  // memory: counted by part (MemoryBytes), released with release()
  { b.allocate(n, MemoryPart::params) } -> std::same_as<void*>;
  b.release(p, n, MemoryPart::params);
  { b.allocated() } -> std::convertible_to<MemoryBytes>;
  b.upload(p, cp, n);    // host -> backend, bytes
  b.download(p, cp, n);  // backend -> host, bytes
  b.zero(p, n);
  b.to_act(a, cf, n);    // fp32 -> act_t (rounding to nearest even for bf16)
  b.to_float(f, ca, n);  // act_t -> fp32
  // scratch for a batch of N tokens of this model (MemoryPart::workspace); workspace_bytes says how
  // much that is, for the memory plan
  b.reserve_workspace(config, i);
  { B::workspace_bytes(config, i) } -> std::convertible_to<size_t>;
  // the ops of engine/cpu/ops.h over backend memory
  b.embedding_forward(a, ids, ids, ca, ca, emb);
  b.embedding_backward(g, g, ca, ids, ids, emb);
  b.layernorm_forward(a, s, s, ca, ca, ca, norm);
  b.layernorm_backward(a, g, g, ca, ca, ca, ca, cs, cs, norm);
  b.rmsnorm_forward(a, s, ca, ca, norm);
  // residual_out = x + residual (may alias x), then the norm of it: one pass over the residual stream
  b.layernorm_residual_forward(a, a, s, s, ca, ca, ca, ca, norm);
  b.rmsnorm_residual_forward(a, a, s, ca, ca, ca, norm);
  b.rmsnorm_backward(a, g, ca, ca, ca, ca, cs, norm);
  b.matmul_forward(a, ca, ca, ca, mm);
  b.matmul_backward(a, g, g, ca, ca, ca, mm);
  // C (act_t or grad_t) = / += alpha op(A) op(B) with leading dimensions (kernels/args.h GemmArgs)
  b.gemm(a, ca, ca, gemm);
  b.gemm(g, ca, ca, gemm);
  b.attention_forward(a, s, ca, dims);
  b.attention_backward(a, ca, ca, ca, cs, dims);
  // decoding: copy a (rows, cols) block between strided row-major buffers; attention of n new
  // query rows (row stride ldq) over the cache's first start + n keys and values (kv_dim a row)
  b.copy_rows(a, i, ca, i, i, i);
  b.attention_decode(a, ca, ca, ca, dec);
  // RoPE with the cos/sin table (fp32, backend memory, cpu::rope_table's values) of RopeArgs
  b.rope_forward(a, ids, cf, rope);
  b.rope_backward(a, ids, cf, rope);
  b.gelu_forward(a, ca, n);
  b.gelu_backward(a, ca, ca, n);
  b.glu_forward(a, ca, glu);
  b.glu_backward(a, ca, ca, glu);
  b.residual_forward(a, ca, ca, n);
  // dropout with a regenerated mask (kernels/args.h): the backward pass is the same call on the
  // gradient; out may alias in
  b.dropout(a, ca, drop);
  // NEFTune's noise added in place to the embeddings (rows segmented by cu_seqlens, backend memory)
  b.neftune_forward(a, ids, neft);
  // an NF4 tensor (packed codes, fp32 absmax per 64; backend memory) dequantized into act_t: what an
  // NF4 base's projection becomes before its GEMM
  b.nf4_dequantize(a, codes, cf, nf4);
  // loss (returned to the host) and, when dlogits is not null, its gradient, in place allowed
  // over the first V columns of rows of stride ld (the classifier is padded to a multiple of 128)
  { b.cross_entropy(a, ca, ids, ce) } -> std::convertible_to<double>;
  // optimizer: sum of squares of n gradients (host double; an (in, n) reduction, so no struct),
  // and one AdamW step (master, params, grads, m, v; AdamWArgs: its run arrays in host memory).
  // With a master (fp32, not null) the step updates it and writes the rounded act_t params; with a
  // null master it updates the params in place (act_t float, or double on cpu). Moments are fp32.
  { b.sum_of_squares(cg, n) } -> std::convertible_to<double>;
  b.adamw(f, a, cg, f, f, adamw);
};

}  // namespace ift
