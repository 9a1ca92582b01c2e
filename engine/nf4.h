// NF4, the 4-bit NormalFloat storage of QLoRA (Dettmers et al. 2023): blocks of 64 consecutive
// values, one fp32 absmax per block, each value the index (0..15) of the code-book entry nearest
// x / absmax, two codes per byte (the even element in the high nibble, as bitsandbytes packs them).
// Dequantized, a value is code_book[code] * absmax. This is the CPU reference quantizer; with
// `lora.quantize: nf4` the model stores the four projections of every layer this way (quantized once,
// when the weights are loaded: Transformer::load_params) and dequantizes one into a scratch before
// each of its GEMMs (cpu::nf4_dequantize, the kernel of kernels/nf4.h; Nf4Args in kernels/args.h).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/args.h"  // Nf4Args, kNf4Block, kNf4CodeBook

namespace ift {

// The 16 NF4 values, ascending (the QLoRA paper's appendix E; bitsandbytes' table).
const std::array<float, 16>& nf4_code_book();

struct Nf4Tensor {
  size_t n = 0;                  // values
  std::vector<uint8_t> packed;   // (ceil(n / 2)) two codes per byte
  std::vector<float> absmax;     // (ceil(n / 64)) max |x| of each block
  uint8_t code(size_t i) const { return i % 2 ? packed[i / 2] & 0x0f : packed[i / 2] >> 4; }
};

// Nearest code of x / absmax (fp32 division; ties to the lower code). An all-zero block has absmax 0
// and every code the code of 0.0.
Nf4Tensor nf4_quantize(std::span<const float> x);
// out[i] = code_book[code(i)] * absmax[i / 64], in fp32.
void nf4_dequantize(const Nf4Tensor& q, std::span<float> out);
// Bytes of an NF4 tensor of n values: codes and fp32 scales (the memory plan's figure).
inline size_t nf4_bytes(size_t n) { return (n + 1) / 2 + (n + kNf4Block - 1) / kNf4Block * 4; }

}  // namespace ift
