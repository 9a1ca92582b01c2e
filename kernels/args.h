// One argument struct per op, shared by every layer that runs it: the CPU reference
// (engine/cpu/ops.h), the kernel launchers (kernels/<op>.h), the backend interface
// (engine/backend.h) and the device kernels, which take it by value. Each field is commented once,
// here. The structs are plain C++ in namespace ift (not the kernels' inline namespace), so the emu
// and cuda builds of the kernels and the CPU reference all see one type.
//
// Pointers are not part of an op's arguments: they are passed beside the struct, typed by the
// backend's element types. Pure elementwise ops of (out, in, n) have no struct.
#pragma once

#include <cstdint>

namespace ift {

// ---- dropout (kernels/dropout.h, cpu::dropout) ------------------------------------------------------
// out[i] = keep(i) ? in[i] / (1 - p) : 0, with keep(i) a pure function of (seed, step, site, i)
// (kernels/counter_hash.h): the mask is never stored, the backward pass regenerates it by calling the
// same op on the gradient with the same arguments.
struct DropoutArgs {
  uint64_t seed = 0;   // the run's seed
  uint64_t step = 0;   // which forward pass: the caller folds the optimizer step and micro-batch in
  uint32_t site = 0;   // which dropout site of that pass (layer and place), so sites draw apart
  float p = 0;         // drop probability, in [0, 1); 0 is the identity
  int64_t n = 0;       // elements; element i of the buffer draws counter i
};

// ---- NEFTune (kernels/neftune.h, cpu::neftune_forward) ---------------------------------------------
// Noisy embeddings (Jain et al., 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning",
// Algorithm 1): x (N, C) += alpha / sqrt(L * C) * u, u uniform in [-1, 1), where L is the length of
// the packed segment (sample) the row belongs to. u for element n * C + c is drawn from the counter
// hash of (seed, step, kNeftuneSite) (kernels/counter_hash.h): float(bits >> 8) * 2^-23 - 1, added
// with one fused multiply-add, so the CPU reference and the kernel agree bit for bit.
struct NeftuneArgs {
  uint64_t seed = 0;   // the run's seed
  uint64_t step = 0;   // which forward pass (as DropoutArgs::step)
  float alpha = 0;     // the noise scale; 0 adds nothing
  int N = 0;           // rows of x
  int C = 0;           // channels of a row (the embedding width d)
  int S = 0;           // segments: cu_seqlens holds S + 1 boundaries, 0 ... N
};
// The site NEFTune draws from, apart from every dropout site.
inline constexpr uint32_t kNeftuneSite = 0xfffffffeu;

}  // namespace ift
