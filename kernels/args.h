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

// ---- gemm (engine/backend.h `gemm`: the LoRA adapters' products, engine/lora_path.h) ----------

// Row-major C (M, N) = alpha op(A) (M, K) op(B) (K, N) [+ C], the products of engine/device_gemm.h
// with leading dimensions, so a column slice of a fused buffer (q of qkv, up of gate/up) is read
// and written in place.
struct GemmArgs {
  int M = 0, N = 0, K = 0;                // the product's shape
  int lda = 0, ldb = 0, ldc = 0;          // row strides (elements) of A, B, C as stored
  bool trans_a = false, trans_b = false;  // op(X) = X^T: A is then stored (K, M), B (N, K)
  bool accumulate = false;                // C += alpha op(A) op(B) instead of C =
  float alpha = 1.0f;                     // scale of the product
};

}  // namespace ift
