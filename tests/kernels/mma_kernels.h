// Host API of the tensor-core test kernels (tests/kernels/mma_kernels.cu). Pointers are device
// pointers (KernelVector data in the tests); one warp a launch unless a function says otherwise.
// Each throws ift::Error when the launch fails, which is how the fault cases are seen.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/target.h"

IFT_KERNELS_BEGIN
namespace mma_test {

enum class LdmatrixVariant : int { x1, x2, x4, x1_trans, x2_trans, x4_trans };

// Lane l loads a[4l..4l+3], b[2l..2l+1], c[4l..4l+3], runs mma_m16n8k16_bf16 and stores d[4l..].
// A block of `threads`; lanes >= `lanes` return first (a fault when lanes < 32 or threads < 32).
void mma_lanes(const uint32_t* a, const uint32_t* b, const float* c, float* d, int threads, int lanes);
// tile (rows <= 64, 8 bf16 a row) to shared memory; lane l runs ldmatrix `variant` with the address
// of tile row offsets[l], shifted by byte_shift bytes (from the global tile itself when from_global);
// out (32, 4) the registers, unused ones 0.
void ldmatrix_lanes(const __nv_bfloat16* tile, int rows, const int* offsets, LdmatrixVariant variant, int byte_shift,
                    bool from_global, uint32_t* out);
// S = q k^T (q, k: 16 x 16 row-major) and o = bf16(S) v (v: 16 x 8) through ldmatrix and mma as the
// attention kernels do; s (16, 16) and o (16, 8) fp32.
void attention_core(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, float* s, float* o);
// cp.async of in (threads * 8 floats) into shared memory, 16 bytes at a time in two groups (odd
// threads zero-fill the second), read back into out (4 slots of threads * 8 floats): 0 before any
// wait, 1 after wait_group 1, 2 after wait_group 0, 3 (mode 1) the next thread's data after a
// barrier. mode 2 exits with a group pending, 3 misaligns the destination, 4 points it at global
// memory: each an error.
void cp_async_run(const float* in, float* out, int threads, int mode);

}  // namespace mma_test
IFT_KERNELS_END
