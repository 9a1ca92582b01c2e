// How the LoRA adapters run (engine/lora.h has the data): four backend GEMMs forward and backward
// per adapter, beside the frozen base GEMM they add to. With s the scale, x (N, in) the base GEMM's
// input and y (N, ldy) its output, an adapter writing output columns [col, col + out):
//
//   forward   t = x A^T                       (N, r), kept for the backward pass
//             y[:, col:col+out] += s t B^T    in place, through y's row stride (a slice of qkv or gate/up)
//   backward  dB += s dy[:, slice]^T t        (out, r)  parameter gradients accumulate
//             dt  = s dy[:, slice] B          (N, r)
//             dA += dt^T x                    (r, in)
//             dx += dt A                      (N, in)   on top of the base's dx = dy W
//
// Adapter dropout (PEFT's lora_dropout, in training passes only: set_pass) replaces the adapter's x
// by d(x) = dropout(x), the base GEMM still reading x: t = d(x) A^T, dA += dt^T d(x), and dx gets
// d(dt A) (the same mask on the gradient), added to the base's dx. The mask is the counter hash of
// (seed, pass, kLoraDropoutSite + adapter index, element) (kernels/dropout.h): each adapter draws its
// own, none is stored, and backward regenerates d(x) from x into one (N, max in) scratch.
//
// The base's dW is never computed (it is a frozen group: GradMap has no run for it). Memory: r N
// values per adapter kept (activations), one (N, r) dt shared by all (activation gradients), and
// with dropout the (N, max in) scratch (workspace).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "engine/backend.h"
#include "engine/buffer.h"
#include "engine/params.h"

namespace ift {

// The dropout sites of the adapters: kLoraDropoutSite + adapter index, apart from the residual
// dropout's 2 l + sublayer (engine/transformer.inl) and NEFTune's kNeftuneSite.
inline constexpr uint32_t kLoraDropoutSite = 0x40000000u;

template <class B>
class LoraPath {
 public:
  using act_t = typename B::act_t;
  using grad_t = typename B::grad_t;

  // dropout: the drop probability of every adapter's input in training passes (lora.dropout).
  void init(const ParamLayout& layout, double dropout) {
    adapters_ = layout.adapters;
    dropout_ = static_cast<float>(dropout);
    r_ = layout.lora_r;
    scale_ = static_cast<float>(layout.lora_scale);
    by_slot_.assign(layout.layers.size(), {});
    for (size_t i = 0; i < adapters_.size(); ++i)
      by_slot_[adapters_[i].layer][static_cast<int>(adapters_[i].slot)].push_back(i);
  }
  bool empty() const { return adapters_.empty(); }

  // Values of the kept products and of the shared gradient, for a batch of N tokens (the plan).
  static int64_t kept_values(const ParamLayout& layout, int N) {
    return int64_t(layout.adapters.size()) * layout.lora_r * N;
  }
  static int64_t grad_values(const ParamLayout& layout, int N) {
    return layout.adapters.empty() ? 0 : int64_t(layout.lora_r) * N;
  }
  // The dropout scratch: d(x) of the widest adapter input, when lora.dropout > 0.
  static int64_t scratch_values(const ParamLayout& layout, double dropout, int N) {
    int64_t in = 0;
    for (const LoraAdapter& a : layout.adapters) in = std::max<int64_t>(in, a.in);
    return dropout > 0 ? in * N : 0;
  }
  void reserve(B& be, int N, const ParamLayout& layout) {
    kept_.clear(), dt_ = {}, dropped_ = {};
    if (empty()) return;
    for (size_t i = 0; i < adapters_.size(); ++i) kept_.emplace_back(be, size_t(r_) * N, MemoryPart::activations);
    dt_ = Buffer<B, act_t>(be, size_t(r_) * N, MemoryPart::activation_grads);
    if (const int64_t n = scratch_values(layout, dropout_, N))
      dropped_ = Buffer<B, act_t>(be, size_t(n), MemoryPart::workspace);
  }
  // The pass the next forward (and its backward) belongs to: training (dropout on, if lora.dropout
  // > 0) or not (evaluation, `ift dump`).
  void set_pass(bool training, uint64_t seed, uint64_t pass) {
    dropping_ = training && dropout_ > 0 && !empty();
    seed_ = seed, pass_ = pass;
  }

  // y += the adapters of (layer, slot). scratch (r N): where t goes when it is not kept (decoding,
  // which never drops); null: the kept buffers of reserve(), with dropout in a training pass.
  void forward(B& be, const act_t* params, int layer, LoraSlot slot, act_t* y, int ldy, const act_t* x, int N,
               act_t* scratch = nullptr) const {
    for (size_t i : adapters_of(layer, slot)) {
      const LoraAdapter& a = adapters_[i];
      act_t* t = scratch ? scratch : kept_[i].data();
      const act_t* in = x;
      if (!scratch && dropping_) be.dropout(dropped_.data(), x, dropout_args(i, N)), in = dropped_.data();
      be.gemm(t, in, params + a.a, gemm(N, r_, a.in, a.in, a.in, r_, false, true, false, 1.0f));
      be.gemm(y + a.col, t, params + a.b, gemm(N, a.out, r_, r_, r_, ldy, false, true, true, scale_));
    }
  }
  // dx += the adapters' input gradient; dA, dB += theirs where `grads` (a GradMap) maps them.
  template <class Grads>
  void backward(B& be, const act_t* params, int layer, LoraSlot slot, act_t* dx, const act_t* dy, int ldy,
                const act_t* x, int N, const Grads& grads) {
    for (size_t i : adapters_of(layer, slot)) {
      const LoraAdapter& a = adapters_[i];
      const act_t* t = kept_[i].data();
      act_t* dt = dt_.data();
      if (grad_t* dB = grads.at(a.b))
        be.gemm(dB, dy + a.col, t, gemm(a.out, r_, N, ldy, r_, r_, true, false, true, scale_));
      be.gemm(dt, dy + a.col, params + a.b, gemm(N, r_, a.out, ldy, r_, r_, false, false, false, scale_));
      if (!dropping_) {
        if (grad_t* dA = grads.at(a.a)) be.gemm(dA, dt, x, gemm(r_, a.in, N, r_, a.in, a.in, true, false, true, 1.0f));
        be.gemm(dx, dt, params + a.a, gemm(N, a.in, r_, r_, a.in, a.in, false, false, true, 1.0f));
        continue;
      }
      // Through the dropout: d(x) regenerated for dA, then dx += d(dt A), the scratch reused.
      const DropoutArgs d = dropout_args(i, N);
      act_t* s = dropped_.data();
      if (grad_t* dA = grads.at(a.a)) {
        be.dropout(s, x, d);
        be.gemm(dA, dt, s, gemm(r_, a.in, N, r_, a.in, a.in, true, false, true, 1.0f));
      }
      be.gemm(s, dt, params + a.a, gemm(N, a.in, r_, r_, a.in, a.in, false, false, false, 1.0f));
      be.dropout(s, s, d);
      be.residual_forward(dx, dx, s, size_t(N) * a.in);
    }
  }

 private:
  const std::vector<size_t>& adapters_of(int layer, LoraSlot slot) const {
    static const std::vector<size_t> none;
    return by_slot_.empty() ? none : by_slot_[layer][static_cast<int>(slot)];
  }
  DropoutArgs dropout_args(size_t adapter, int N) const {
    DropoutArgs d;
    d.seed = seed_, d.step = pass_, d.site = kLoraDropoutSite + static_cast<uint32_t>(adapter);
    d.p = dropout_, d.n = int64_t(N) * adapters_[adapter].in;
    return d;
  }
  static GemmArgs gemm(int M, int N, int K, int lda, int ldb, int ldc, bool ta, bool tb, bool acc, float alpha) {
    GemmArgs g;
    g.M = M, g.N = N, g.K = K, g.lda = lda, g.ldb = ldb, g.ldc = ldc;
    g.trans_a = ta, g.trans_b = tb, g.accumulate = acc, g.alpha = alpha;
    return g;
  }

  std::vector<LoraAdapter> adapters_;
  std::vector<std::array<std::vector<size_t>, kLoraSlots>> by_slot_;  // (layers) adapter indices per slot
  int r_ = 0;
  float scale_ = 0;
  // (adapters) x (N, r): t = x A^T of the last forward. Mutable: decoding (a const pass) runs the
  // same forward() with its own scratch and never touches them.
  mutable std::vector<Buffer<B, act_t>> kept_;
  Buffer<B, act_t> dt_;                 // (N, r) shared by every adapter's backward
  float dropout_ = 0;                   // lora.dropout
  bool dropping_ = false;               // the last forward was a training pass with dropout
  uint64_t seed_ = 0, pass_ = 0;        // its mask's seed and pass
  mutable Buffer<B, act_t> dropped_;    // (N, max in) d(x), then d(dt A); empty without dropout
};

}  // namespace ift
