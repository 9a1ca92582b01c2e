// The emulated twins of the tensor-core wrappers of kernels/mma.cuh: mma.sync m16n8k16 (bf16 in,
// fp32 accumulate), ldmatrix m8n8 (.x1/.x2/.x4, .trans) and cp.async.cg 16 bytes with its
// commit/wait groups. Included by kernels/mma.cuh in the emulated build only; kernels call the
// wrappers, never these.
//
// Each twin states the PTX ISA's per-lane layout in one place (the *_coord functions below, PTX ISA
// 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating point type" and 9.7.14.5.15 "Warp-level
// matrix load instruction: ldmatrix") and checks what the hardware requires:
//   mma       a warp collective of all 32 lanes (a missing, exited or diverged lane is an error);
//   ldmatrix  all 32 lanes, the same variant in every lane, and row addresses (lanes 0..8*count-1)
//             that are 16-byte aligned and lie in the block's shared memory;
//   cp.async  a 16-byte-aligned shared destination and global source; the destination holds a
//             poison pattern (0xff bytes: NaN as fp32 and as bf16) from the issue until the
//             cp.async.wait_group that completes it, and the data is written then, by the issuing
//             thread, so that a reader in another thread without a barrier after that wait is a
//             data race for ThreadSanitizer. A thread that exits with copies pending is an error.
// tests/kernels/test_mma.cpp checks the layouts against the PTX ISA's tables written out as data,
// the cross-identities between the operations, and one fault per requirement.
#pragma once

#include <cstdint>
#include <cstring>
#include <source_location>

#include <cuda_bf16.h>

#include "kernels/simt/runtime.h"

namespace ift::simt {

// Where element i of a lane's fragment sits in its matrix, per the PTX ISA. groupID = lane / 4,
// threadID_in_group = lane % 4. Element i is half (i % 2) of register i / 2 (the low half first).
struct MatrixCoord {
  int row, col;
};
// A (16 x 16, row-major operand), elements a0..a7 in registers {a0,a1} {a2,a3} {a4,a5} {a6,a7}:
// row groupID (+8 for a2, a3, a6, a7), col 2*threadID_in_group + (i % 2) (+8 for a4..a7).
constexpr MatrixCoord mma_a_coord(int lane, int i) {
  return {lane / 4 + 8 * ((i / 2) % 2), 2 * (lane % 4) + i % 2 + 8 * (i / 4)};
}
// B (16 x 8, "col": K x N), b0..b3 in {b0,b1} {b2,b3}: row (k) 2*threadID_in_group + (i % 2)
// (+8 for b2, b3), col (n) groupID.
constexpr MatrixCoord mma_b_coord(int lane, int i) { return {2 * (lane % 4) + i % 2 + 8 * (i / 2), lane / 4}; }
// C and D (16 x 8, fp32), c0..c3 one register each: row groupID (+8 for c2, c3), col
// 2*threadID_in_group + (i % 2).
constexpr MatrixCoord mma_c_coord(int lane, int i) { return {lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2}; }
// ldmatrix m8n8.b16, each 8 x 8 matrix j in register j: lane holds elements (lane / 4, 2*(lane % 4)
// + i) for i = 0, 1; with .trans, elements (2*(lane % 4) + i, lane / 4). Row r of matrix j is read
// from the address that lane 8*j + r gave.
constexpr MatrixCoord ldmatrix_coord(int lane, int i, bool trans) {
  return trans ? MatrixCoord{2 * (lane % 4) + i, lane / 4} : MatrixCoord{lane / 4, 2 * (lane % 4) + i};
}

namespace detail {

inline float bf16_half(uint32_t reg, int half) {
  const uint16_t bits = static_cast<uint16_t>(half == 0 ? reg & 0xffffu : reg >> 16);
  return __bfloat162float(__nv_bfloat16_raw{bits});
}

[[noreturn]] inline void tc_fail(const std::string& what, const std::source_location& site) {
  kernel_fail(what.c_str(), site);
}

}  // namespace detail

// d = a * b + c for the warp's 16 x 8 tile. The products of bf16 values are exact in fp32; they are
// summed in double and rounded once, which bounds but does not reproduce the tensor core's own
// (unspecified) summation order and internal precision.
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                              const std::source_location& site) {
  using detail::LaneWords;
  LaneWords ga[32], gb[32];
  detail::warp_gather(detail::WarpOp::mma_sync, 0xffffffffu, LaneWords{{a[0], a[1], a[2], a[3]}}, ga, site);
  detail::warp_gather(detail::WarpOp::mma_sync, 0xffffffffu, LaneWords{{b[0], b[1], 0, 0}}, gb, site);
  // Every lane's fragments decoded into the two matrices by the layout above.
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 8; ++i) {
      const MatrixCoord x = mma_a_coord(l, i);
      A[x.row][x.col] = detail::bf16_half(ga[l].w[i / 2], i % 2);
    }
    for (int i = 0; i < 4; ++i) {
      const MatrixCoord x = mma_b_coord(l, i);
      B[x.row][x.col] = detail::bf16_half(gb[l].w[i / 2], i % 2);
    }
  }
  const int lane = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32;
  for (int i = 0; i < 4; ++i) {
    const MatrixCoord x = mma_c_coord(lane, i);
    double sum = c[i];
    for (int k = 0; k < 16; ++k) sum += static_cast<double>(A[x.row][k]) * B[k][x.col];
    d[i] = static_cast<float>(sum);
  }
}

// ldmatrix.sync.aligned.m8n8.x{kCount}[.trans].shared.b16: register j of every lane receives its two
// elements of matrix j, whose 8 rows of 8 bf16 (16 bytes) start at the addresses lanes 8*j..8*j+7
// gave. Lanes past 8*kCount pass an address that is not used (not checked).
template <int kCount, bool kTrans>
inline void ldmatrix(uint32_t (&r)[kCount], const void* row, const std::source_location& site) {
  static_assert(kCount == 1 || kCount == 2 || kCount == 4, "ldmatrix loads 1, 2 or 4 matrices");
  using detail::LaneWords;
  const int lane = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32;
  const auto address = reinterpret_cast<uintptr_t>(row);
  if (lane < 8 * kCount) {
    if (address % 16 != 0)
      detail::tc_fail("ldmatrix: lane " + std::to_string(lane) + " gives a row address that is not 16-byte aligned", site);
    if (!detail::in_shared(row, 16))
      detail::tc_fail("ldmatrix: lane " + std::to_string(lane) +
                          " gives a row address outside the block's shared memory (ldmatrix reads shared memory only)",
                      site);
  }
  const uint32_t variant = kCount | (kTrans ? 0x100u : 0u);
  LaneWords g[32];
  detail::warp_gather(detail::WarpOp::ldmatrix, 0xffffffffu,
                      LaneWords{{static_cast<uint32_t>(address), static_cast<uint32_t>(address >> 32), variant, 0}}, g, site);
  for (int l = 0; l < 32; ++l)
    if (g[l].w[2] != variant)
      detail::tc_fail("ldmatrix: lane " + std::to_string(l) + " calls another variant (.x" + std::to_string(g[l].w[2] & 0xff) +
                          ((g[l].w[2] & 0x100) ? ".trans" : "") + ") than this lane (.x" + std::to_string(kCount) +
                          (kTrans ? ".trans" : "") + ")",
                      site);
  for (int j = 0; j < kCount; ++j) {
    uint16_t half[2];
    for (int i = 0; i < 2; ++i) {
      const MatrixCoord x = ldmatrix_coord(lane, i, kTrans);
      const LaneWords& from = g[8 * j + x.row];
      const auto* row_bytes = reinterpret_cast<const unsigned char*>(static_cast<uintptr_t>(from.w[0]) | uint64_t{from.w[1]} << 32);
      std::memcpy(&half[i], row_bytes + 2 * x.col, 2);
    }
    r[j] = uint32_t{half[0]} | uint32_t{half[1]} << 16;
  }
}

// cp.async.cg.shared.global [dst], [src], 16, src_bytes with src_bytes 16 (valid) or 0 (zero-fill):
// src is not read when !valid.
inline void cp_async_16(void* dst, const void* src, bool valid, const std::source_location& site) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 != 0) detail::tc_fail("cp.async: the shared destination is not 16-byte aligned", site);
  if (!detail::in_shared(dst, 16)) detail::tc_fail("cp.async: the destination is not in the block's shared memory", site);
  if (valid && reinterpret_cast<uintptr_t>(src) % 16 != 0) detail::tc_fail("cp.async: the global source is not 16-byte aligned", site);
  if (valid && detail::in_shared(src, 16)) detail::tc_fail("cp.async: the source is in shared memory (cp.async reads global memory)", site);
  detail::CpAsyncCopy& copy = detail::cp_async_push();
  copy.dst = dst;
  copy.group = detail::cp_async_queue().committed;
  if (valid) std::memcpy(copy.data, src, 16);
  else std::memset(copy.data, 0, 16);
  std::memset(dst, 0xff, 16);  // not visible before its wait: poison until then
}

// cp.async.commit_group: the copies issued since the last commit form one group.
inline void cp_async_commit() { ++detail::cp_async_queue().committed; }

// cp.async.wait_group n: completes every committed group but the newest n (the copies land now, in
// this thread). Copies not committed yet stay pending.
inline void cp_async_wait(int newest_pending) {
  detail::CpAsyncQueue& q = detail::cp_async_queue();
  const int64_t done_below = static_cast<int64_t>(q.committed) - newest_pending;  // groups < this complete
  int kept = 0;
  for (int k = 0; k < q.count; ++k) {
    detail::CpAsyncCopy& copy = q.pending[k];
    if (static_cast<int64_t>(copy.group) < done_below) std::memcpy(copy.dst, copy.data, 16);
    else q.pending[kept++] = copy;
  }
  q.count = kept;
}

}  // namespace ift::simt
