// The GEMM every Device of KernelBackend provides (engine/kernel_backend.inl), and the check of its
// shape both devices run before computing anything:
//
//   gemm<In, Out>(c, ldc, a, lda, b, ldb, bias, M, N, K, trans_a, trans_b, accumulate[, alpha])
//       row-major C (M, N) = alpha op(A) (M, K) . op(B) (K, N) [+ C] [+ bias (N)]; In inputs, fp32
//       accumulation, one rounding to Out. op(X) = X^T when trans_x: A is then stored (K, M), B (N, K).
//       lda, ldb, ldc are the row strides in elements of A, B, C as stored (>= their stored widths),
//       so a column slice of a wider buffer (a fused QKV or gate/up projection) is multiplied in
//       place; elements of C outside its (M, N) window are never written.
#pragma once

#include "engine/base/error.h"

namespace ift {

// Throws ift::Error naming the operand whose leading dimension is shorter than its stored row.
inline void check_gemm_shape(int M, int N, int K, int lda, int ldb, int ldc, bool trans_a, bool trans_b) {
  IFT_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M ", M, " N ", N, " K ", K);
  const int a_width = trans_a ? M : K, b_width = trans_b ? K : N;
  IFT_CHECK(lda >= a_width && lda >= 1, "gemm: lda ", lda, " is shorter than A's stored row of ", a_width,
            " (M ", M, " K ", K, ", trans_a ", trans_a, ")");
  IFT_CHECK(ldb >= b_width && ldb >= 1, "gemm: ldb ", ldb, " is shorter than B's stored row of ", b_width,
            " (K ", K, " N ", N, ", trans_b ", trans_b, ")");
  IFT_CHECK(ldc >= N && ldc >= 1, "gemm: ldc ", ldc, " is shorter than C's row of ", N, " (M ", M, ")");
}

}  // namespace ift
