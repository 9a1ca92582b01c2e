// Segment bounds of packed samples for the attention kernels (kernels/attention.cu, the SIMT ones,
// and kernels/attention_tc.cu, the tensor-core ones): device code over ift::AttentionArgs.
// Include after kernels/common.cuh.
#pragma once

#include <cstdint>

#include "kernels/args.h"

IFT_KERNELS_BEGIN

// int min/max that both builds have (the emulator's host environment has no device min/max).
__device__ __forceinline__ int min_int(int x, int y) { return x < y ? x : y; }
__device__ __forceinline__ int max_int(int x, int y) { return x > y ? x : y; }

// The segment holding row i: the largest s with cu[s] <= i, by binary search over the S + 1 bounds.
__device__ __forceinline__ int segment_of(const int32_t* __restrict__ g_cu, int S, int i) {
  int lo = 0, hi = S;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (g_cu[mid] <= i) lo = mid;
    else hi = mid;
  }
  return lo;
}

// First row of row i's segment; clamped to [0, i] so that a malformed cu_seqlens cannot send a
// kernel out of bounds (the host checks it when it has a copy).
__device__ __forceinline__ int segment_begin(const AttentionArgs& a, int i) {
  return min_int(max_int(a.cu_seqlens[segment_of(a.cu_seqlens, a.S, i)], 0), i);
}

// One past the last row of row i's segment, clamped to [i + 1, N].
__device__ __forceinline__ int segment_end(const AttentionArgs& a, int i) {
  return max_int(min_int(a.cu_seqlens[segment_of(a.cu_seqlens, a.S, i) + 1], a.N), i + 1);
}

IFT_KERNELS_END
