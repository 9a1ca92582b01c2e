// Thin wrappers over the tensor-core and asynchronous-copy instructions of sm_80+: real inline PTX
// under nvcc, the emulated twins of kernels/simt/tensor_core.h in the emulator (which check what the
// hardware requires, see there). Include after kernels/common.cuh.
//
// Fragments (PTX ISA 9.7.14.5.8; docs/emulator.md draws them): with g = lane / 4, t = lane % 4,
//   A 16x16 bf16, 4 registers: a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
//   B 16x8 (K x N) bf16, 2 registers: b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8.., n g)
//   C 16x8 fp32, 4 registers: c[0], c[1] = (g, 2t), (g, 2t+1); c[2], c[3] = (g+8, 2t), (g+8, 2t+1)
// A register holding two bf16 has the element of the lower column (or k) in its low 16 bits.
#pragma once

#include <cstdint>
#include <cstring>

#if IFT_EMULATED
#include <source_location>

#include "kernels/simt/tensor_core.h"
// The emulated wrappers take the caller's source location, so that the twins' checks name the line.
#define IFT_TC_SITE , const std::source_location& site = std::source_location::current()
#else
#define IFT_TC_SITE
#endif

IFT_KERNELS_BEGIN

// Two floats as the bf16 pair of one register (lo in the low half), rounding to nearest even.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat16 l = __float2bfloat16(lo), h = __float2bfloat16(hi);
  uint16_t lb, hb;
  memcpy(&lb, &l, 2);
  memcpy(&hb, &h, 2);
  return uint32_t{lb} | uint32_t{hb} << 16;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: d = a * b + c over the warp (all 32 lanes).
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4] IFT_TC_SITE) {
#if IFT_EMULATED
  simt::mma_m16n8k16_bf16(d, a, b, c, site);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

#if !IFT_EMULATED
__device__ __forceinline__ unsigned shared_address(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
#endif

// ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16: lane 8*j + r gives the address of row r
// (8 bf16, 16-byte aligned, in shared memory) of matrix j; register j receives the lane's two
// elements of matrix j (transposed with .trans). Every lane of the warp calls it.
__device__ __forceinline__ void ldmatrix_x1(uint32_t (&r)[1], const void* row IFT_TC_SITE) {
#if IFT_EMULATED
  simt::ldmatrix<1, false>(r, row, site);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(shared_address(row)));
#endif
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row IFT_TC_SITE) {
#if IFT_EMULATED
  simt::ldmatrix<2, false>(r, row, site);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(shared_address(row)));
#endif
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row IFT_TC_SITE) {
#if IFT_EMULATED
  simt::ldmatrix<4, false>(r, row, site);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
#endif
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t (&r)[1], const void* row IFT_TC_SITE) {
#if IFT_EMULATED
  simt::ldmatrix<1, true>(r, row, site);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(shared_address(row)));
#endif
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row IFT_TC_SITE) {
#if IFT_EMULATED
  simt::ldmatrix<2, true>(r, row, site);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(row)));
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row IFT_TC_SITE) {
#if IFT_EMULATED
  simt::ldmatrix<4, true>(r, row, site);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
#endif
}

// cp.async.cg.shared.global 16 bytes: dst (shared) and src (global) 16-byte aligned; when !valid,
// nothing is read and dst receives zeros (src must still be a mapped address: pass the tensor's base).
// The data may be read only after the cp_async_wait that completes its group, and by other threads
// only after a barrier that follows it.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid IFT_TC_SITE) {
#if IFT_EMULATED
  simt::cp_async_16(dst, src, valid, site);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src), "r"(valid ? 16 : 0));
#endif
}

// cp.async.commit_group: the copies this thread issued since the last commit become one group.
__device__ __forceinline__ void cp_async_commit() {
#if IFT_EMULATED
  simt::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// cp.async.wait_group N: waits until at most the newest N committed groups of this thread are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if IFT_EMULATED
  simt::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

IFT_KERNELS_END
