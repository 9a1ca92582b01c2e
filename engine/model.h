// The transformer over a backend: forward, explicit backward, AdamW, both families.
//
//   embed -> [norm1 -> qkv -> (RoPE) -> attention -> o -> +residual
//             -> norm2 -> up -> GELU | SwiGLU -> down -> +residual] x L -> normf -> lm_head -> CE
//
// Model<B> is the same code on every backend (engine/backend.h): CpuModel<float> is the cpu
// backend's model, CpuModel<double> what the whole-model finite-difference checks run, and
// Model<EmuBackend<S>> / Model<CudaBackend<S>> run the kernels in fp32 (S = float) or mixed
// precision (S = bf16). Parameter gradients accumulate (+=) across backward calls, so gradient
// accumulation over micro-batches is zero_grads() once per step.
//
// Memory is planned: plan() gives, from formulas, the bytes of each part (parameters, gradients,
// master weights, optimizer moments, activations, their gradients, the batch, the workspace) for a
// batch of N tokens, and the model allocates exactly that, once, on the first forward of that size
// (allocated() tallies it). Nothing is allocated inside a training step after that.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "engine/backend.h"
#include "engine/config.h"
#include "engine/cpu/backend.h"
#include "engine/base/error.h"
#include "engine/kernel_backend.h"
#include "engine/optimizer.h"
#include "engine/params.h"

namespace ift {

// One micro-batch, flattened to N = B*T rows. Samples never attend to each other: cu_seqlens splits
// the rows into segments (every packed sample, and every row of the batch, is its own segment).
struct BatchView {
  int N = 0;                            // tokens in the batch (B*T)
  std::span<const int32_t> tokens;      // (N)
  std::span<const int32_t> targets;     // (N) next-token target of each row; negative = not trained
  std::span<const int32_t> positions;   // (N) position ids, restarting at 0 in every segment
  std::span<const int32_t> cu_seqlens;  // (S + 1) segment boundaries, 0 ... N

  int64_t trained_tokens() const;
};

struct ModelOptions {
  // Keep only the inputs of the cheap ops (the norms' inputs and statistics, the MLP's
  // pre-activation) and recompute their outputs in the backward pass, as llm.c does: saves
  // (2 C + F) N values per layer for one extra norm pair and activation per layer.
  bool recompute = false;
};

// A typed array of backend memory, released through the backend that allocated it. Host code may
// read it through data()/begin()/end() only when the backend's memory is host memory.
template <class B, class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(B& backend, size_t n, MemoryPart part)
      : backend_(&backend), data_(static_cast<T*>(backend.allocate(n * sizeof(T), part))), n_(n), part_(part) {}
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = o.backend_, data_ = o.data_, n_ = o.n_, part_ = o.part_;
      o.data_ = nullptr, o.n_ = 0;
    }
    return *this;
  }
  ~Buffer() { reset(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return n_; }
  T* begin() { return data_; }
  T* end() { return data_ + n_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + n_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  void reset() {
    if (data_) backend_->release(data_, n_ * sizeof(T), part_);
    data_ = nullptr, n_ = 0;
  }
  B* backend_ = nullptr;
  T* data_ = nullptr;
  size_t n_ = 0;
  MemoryPart part_ = MemoryPart::params;
};

// Keys and values of every position decoded so far, per layer, for incremental generation.
template <class T>
struct KVCache {
  int capacity = 0;                // positions it can hold
  int length = 0;                  // positions held
  std::vector<std::vector<T>> k, v;  // (layers) x (capacity, kv_dim), keys after RoPE
};

// The AdamW state as checkpoints hold it: fp32 moments over the flat buffer, and the step count.
struct OptimizerState {
  std::vector<float> m, v;
  int64_t steps = 0;
};

template <class B>
class Model {
  static_assert(Backend<B>, "Model<B>: B lacks a member of the Backend interface (engine/backend.h)");
  std::unique_ptr<B> backend_;  // first: every buffer below is released through it, so it goes last

 public:
  using act_t = typename B::act_t;
  using grad_t = typename B::grad_t;
  using stat_t = typename B::stat_t;
  // bf16 weights are a rounded copy of fp32 master weights, which the optimizer updates.
  static constexpr bool kHasMaster = !std::is_same_v<act_t, float> && !std::is_same_v<act_t, double>;

  explicit Model(const ModelConfig& config, ModelOptions options = {});
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) = delete;  // buffers point at the backend: move-construct instead

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }

  Buffer<B, act_t> params;  // (layout().total) every weight, addressed through layout()
  Buffer<B, grad_t> grads;  // (layout().total) accumulated by backward()

  // The bytes each part takes for a batch of N tokens, from the shapes alone. `optimizer`: with
  // AdamW moments (enable_optimizer) or without (inference, gradients only).
  static MemoryBytes plan(const ModelConfig& config, int N, ModelOptions options, bool optimizer);
  // What is allocated now, by part.
  const MemoryBytes& allocated() const { return backend_->allocated(); }

  // Initialisation for training from scratch, as GPT-2 does: N(0, std) for matrices and
  // embeddings, residual output projections scaled by 1/sqrt(2 L), ones for norm weights, zeros for
  // biases. Deterministic for a seed, and the same values on every backend (then rounded to act_t).
  void init_random(uint64_t seed, double std = 0.02);
  // Sets every parameter (and the master weights) from fp32 values in the flat layout.
  void load_params(std::span<const float> values);
  std::vector<float> params_to_host() const;  // the master weights when there are, else the params
  std::vector<float> grads_to_host() const;
  void zero_grads();

  // Runs the batch and keeps what backward needs. Returns sum over trained rows of the token loss,
  // divided by loss_norm (the trained tokens of the whole optimizer step, so micro-batches add up).
  double forward(const BatchView& batch, double loss_norm);
  // grads += d(loss of the last forward)/d(params). Overwrites the logits with their gradient.
  void backward();
  // (N, V) of the last forward, until backward() runs.
  std::vector<float> logits_to_host() const;
  std::span<const act_t> logits() const requires(B::host_memory) { return {logits_.data(), size_t(N_) * config_.vocab_size}; }

  // AdamW. enable_optimizer allocates the moments; step() clips the global gradient norm, updates
  // the parameters and returns the norm before clipping. A non-finite norm leaves parameters and
  // moments untouched (the caller counts the skipped step).
  void enable_optimizer(const AdamWConfig& config);
  double step(float lr);
  int64_t steps() const { return t_; }
  OptimizerState optimizer_state() const;
  void set_optimizer_state(const OptimizerState& state);

  // Incremental decoding on the cpu backend (generation, chat, task evaluation).
  KVCache<act_t> make_cache(int capacity) const requires(B::kind == BackendKind::cpu);
  // Runs `tokens` as the positions after those already in `cache`, appends their keys and values,
  // and returns the logits (V) of the last token. Touches nothing forward() keeps, so it can run
  // between training steps.
  std::vector<act_t> decode(std::span<const int32_t> tokens, KVCache<act_t>& cache) const
      requires(B::kind == BackendKind::cpu);

 private:
  struct LayerActs {
    act_t *x, *norm1, *qkv, *att, *mid, *norm2, *up, *act;  // (N, C) (N, C) (N, QKV) (N, Q) (N, C) (N, C) (N, up) (N, F)
    stat_t *mean1, *rstd1, *lse, *mean2, *rstd2;             // (N) (N) (N, H) (N) (N); means only for LayerNorm
  };

  void reserve(int N);  // allocates activations, their gradients, the batch and the workspace for N tokens
  void norm_forward(act_t* out, stat_t* mean, stat_t* rstd, const act_t* x, size_t w, size_t b, int N);
  void norm_backward(act_t* dx, const act_t* dres, const act_t* dout, const act_t* x, size_t w, size_t b,
                     const stat_t* mean, const stat_t* rstd, int N);
  void mlp_activation(act_t* act, const act_t* up, int N);
  const act_t* p(size_t offset) const { return offset == kNoParam ? nullptr : params.data() + offset; }
  grad_t* g(size_t offset) { return offset == kNoParam ? nullptr : grads.data() + offset; }
  AttentionDims attention_dims() const;

  ModelConfig config_;
  ModelOptions options_;
  ParamLayout layout_;
  Buffer<B, float> master_;     // (total) fp32 master weights when act_t is bf16
  Buffer<B, float> m_, v_;      // (total) AdamW moments, after enable_optimizer
  AdamWConfig adamw_;
  DecayRuns decay_runs_;
  int64_t t_ = 0;

  int capacity_ = 0;            // tokens the activation buffers hold
  int N_ = 0;                   // tokens of the last forward
  double loss_norm_ = 1;
  std::vector<int32_t> cu_seqlens_host_;
  Buffer<B, int32_t> tokens_, targets_, positions_, cu_seqlens_;  // (N) (N) (N) (N + 1)
  std::vector<Buffer<B, act_t>> act_buffers_;
  std::vector<Buffer<B, stat_t>> stat_buffers_;
  std::vector<LayerActs> acts_;
  act_t *xf_ = nullptr, *normf_ = nullptr;  // (N, C) the final residual, its norm
  stat_t *meanf_ = nullptr, *rstdf_ = nullptr;
  Buffer<B, act_t> logits_;                 // (N, V); the gradient in place after backward
  act_t *dres_ = nullptr, *dnorm_ = nullptr, *dqkv_ = nullptr, *datt_ = nullptr, *dup_ = nullptr, *dact_ = nullptr;
};

template <class T>
using CpuModel = Model<CpuBackend<T>>;

extern template class Model<CpuBackend<float>>;
extern template class Model<CpuBackend<double>>;
extern template class Model<EmuBackend<float>>;
extern template class Model<EmuBackend<__nv_bfloat16>>;
#if IFT_HAVE_CUDA
extern template class Model<CudaBackend<float>>;
extern template class Model<CudaBackend<__nv_bfloat16>>;
#endif

// Runs f.template operator()<B>() with the backend type that a run-time choice names, for the
// commands that take --backend and --precision. The cpu backend is fp32 only.
template <class F>
decltype(auto) with_backend(BackendKind kind, Precision precision, F&& f) {
  const bool fp32 = precision == Precision::fp32;
  switch (kind) {
    case BackendKind::cpu:
      IFT_CHECK(fp32, "backend cpu computes in fp32 only (use --backend emu or cuda for bf16)");
      return f.template operator()<CpuBackend<float>>();
    case BackendKind::emu:
      if (fp32) return f.template operator()<EmuBackend<float>>();
      return f.template operator()<EmuBackend<__nv_bfloat16>>();
    case BackendKind::cuda:
#if IFT_HAVE_CUDA
      if (fp32) return f.template operator()<CudaBackend<float>>();
      return f.template operator()<CudaBackend<__nv_bfloat16>>();
#else
      break;
#endif
  }
  fail("backend ", name_of(kind), " is not in this build (configure with -DIFT_CUDA=ON where nvcc exists)");
}

}  // namespace ift
