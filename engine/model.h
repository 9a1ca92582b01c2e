// A trainable model: a Transformer<B> (forward, backward, decoding; engine/transformer.h) and its
// Optimizer<B> (parameter groups, gradients, master weights, AdamW; engine/optimizer.h), on one
// backend. The commands and tests that want "a model" hold this; the trainer sequences the pieces:
//
//   zero_grads -> (forward -> backward) x micro-batches -> gradient hook (all-reduce) -> step
//                                                           (global-norm clip, then AdamW per group)
//
// Parameter gradients accumulate (+=) across backward calls, so gradient accumulation over
// micro-batches is zero_grads() once per step. CpuModel<float> is the cpu backend's model,
// CpuModel<double> what the whole-model finite-difference checks run, and Model<EmuBackend<S>> /
// Model<CudaBackend<S>> run the kernels in fp32 (S = float) or mixed precision (S = bf16).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/base/error.h"
#include "engine/buffer.h"
#include "engine/config.h"
#include "engine/cpu/backend.h"
#include "engine/kernel_backend.h"
#include "engine/optimizer.h"
#include "engine/params.h"
#include "engine/transformer.h"

namespace ift {

template <class B>
class Model {
 public:
  using act_t = typename B::act_t;
  using grad_t = typename B::grad_t;
  using stat_t = typename B::stat_t;
  static constexpr bool kHasMaster = Optimizer<B>::kHasMaster;

  // `groups`: how the parameters are grouped (engine/optimizer.h); none: one trainable group.
  explicit Model(const ModelConfig& config, ModelOptions options = {}, std::vector<ParamGroupSpec> groups = {});
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) = delete;

  Transformer<B>& net() { return net_; }
  const Transformer<B>& net() const { return net_; }
  Optimizer<B>& optimizer() { return opt_; }
  const Optimizer<B>& optimizer() const { return opt_; }
  const ModelConfig& config() const { return net_.config(); }
  const ParamLayout& layout() const { return net_.layout(); }

  Buffer<B, act_t>& params() { return net_.params; }  // (layout().total)
  const Buffer<B, act_t>& params() const { return net_.params; }
  // The gradient buffer of the one group that covers the whole layout (models without groups).
  Buffer<B, grad_t>& grads();

  // The bytes each part takes for a batch of N tokens, from the shapes alone. `optimizer`: with
  // AdamW moments (enable_optimizer) or without (inference, gradients only).
  static MemoryBytes plan(const ModelConfig& config, int N, ModelOptions options, bool optimizer,
                          const std::vector<ParamGroupSpec>& groups = {});
  // What is allocated now, by part.
  const MemoryBytes& allocated() const { return net_.backend().allocated(); }

  // Initialisation for training from scratch, as GPT-2 does: N(0, std) for matrices and
  // embeddings, residual output projections scaled by 1/sqrt(2 L), ones for norm weights, zeros for
  // biases. Deterministic for a seed, and the same values on every backend (then rounded to act_t).
  void init_random(uint64_t seed, double std = 0.02);
  // Sets every parameter (and the master weights) from fp32 values in the flat layout.
  void load_params(std::span<const float> values);
  std::vector<float> params_to_host() const;  // the master weights where there are, else the params
  std::vector<float> grads_to_host() const { return opt_.grads_to_host(); }
  void zero_grads() { opt_.zero_grads(); }

  // Residual dropout, NEFTune and LoRA dropout for the forward passes from now on; TrainNoise{} turns
  // them off.
  void set_train_noise(TrainNoise noise) { net_.set_train_noise(std::move(noise)); }
  double forward(const BatchView& batch, double loss_norm) { return net_.forward(batch, loss_norm); }
  void backward() { net_.backward(opt_.grad_map()); }
  std::vector<float> logits_to_host() const { return net_.logits_to_host(); }
  std::vector<act_t> logits() const { return net_.logits(); }

  void enable_optimizer(const AdamWConfig& config) { opt_.enable(config); }
  // Global-norm clip across the groups, then AdamW per group; returns the norm before clipping.
  double step(float lr) { return opt_.step(net_, lr); }
  int64_t steps() const { return opt_.steps(); }
  OptimizerState optimizer_state() const { return opt_.state(); }
  void set_optimizer_state(const OptimizerState& state) { opt_.set_state(state); }

  KVCache<B> make_cache(int capacity) const { return net_.make_cache(capacity); }
  std::vector<float> decode(std::span<const int32_t> tokens, KVCache<B>& cache) const {
    return net_.decode(tokens, cache);
  }

 private:
  Transformer<B> net_;  // first: it owns the backend every buffer of the optimizer is released through
  Optimizer<B> opt_;
};

template <class T>
using CpuModel = Model<CpuBackend<T>>;

extern template class Transformer<CpuBackend<float>>;
extern template class Optimizer<CpuBackend<float>>;
extern template class Model<CpuBackend<float>>;
extern template class Transformer<CpuBackend<double>>;
extern template class Optimizer<CpuBackend<double>>;
extern template class Model<CpuBackend<double>>;
extern template class Transformer<EmuBackend<float>>;
extern template class Optimizer<EmuBackend<float>>;
extern template class Model<EmuBackend<float>>;
extern template class Transformer<EmuBackend<__nv_bfloat16>>;
extern template class Optimizer<EmuBackend<__nv_bfloat16>>;
extern template class Model<EmuBackend<__nv_bfloat16>>;
#if IFT_HAVE_CUDA
extern template class Transformer<CudaBackend<float>>;
extern template class Optimizer<CudaBackend<float>>;
extern template class Model<CudaBackend<float>>;
extern template class Transformer<CudaBackend<__nv_bfloat16>>;
extern template class Optimizer<CudaBackend<__nv_bfloat16>>;
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
