// Host API of the kernels that test the SIMT emulator (tests/kernels/simt_kernels.cu). Pointers
// are device pointers; in the emulated build device memory is host memory, so tests pass vectors.
// Each function launches on the null stream and throws ift::Error when the launch fails.
#pragma once

#include <cuda_runtime_api.h>
#include <vector_types.h>

namespace ift::test {

// ---- builtins against plain loops -----------------------------------------------------------
// Every thread of the grid writes 12 ints at its global linear index:
// threadIdx.xyz, blockIdx.xyz, blockDim.xyz, gridDim.xyz.
void simt_write_indices(dim3 grid, dim3 block, int* out);

enum class ShuffleKind { idx, up, down, xor_ };
// out[i] = the shuffle of in[] over the full mask with `arg` and `width`; blocks of `block` threads.
void simt_shuffle(ShuffleKind kind, const int* in, int* out, int n, int block, int arg, int width);
// Per thread: ballot, any, all of pred[i] != 0 over the full warp, and __popc / __ffs of the ballot.
void simt_vote(const int* pred, unsigned* ballot, int* any, int* all, int* popc, int* ffs, int n, int block);
// Block b reduces in[b * per_block, (b + 1) * per_block) with a block of `block` threads (strided
// loop, then block_reduce_sum / block_reduce_max), writing sums[b] and maxes[b].
void simt_block_reduce(const float* in, float* sums, float* maxes, int per_block, int blocks, dim3 block);
// Histogram over 16 bins of keys[i] (in [0, 16)): sums of vals by atomicAdd(float), counts by
// atomicAdd(int), the largest key by atomicMax, and the largest val by an atomicCAS loop on its bits.
void simt_atomics(const int* keys, const float* vals, int n, float* sums, int* counts, int* max_key, float* max_val);
// Each block reverses one row of `cols` floats through `cols` floats of dynamic shared memory.
void simt_reverse_rows(const float* in, float* out, int rows, int cols);
// Fast-math intrinsics and bf16 conversions: out holds 14 values per input.
void simt_math(const float* in, float* out, int n);
// out[i] = in[i] + in[i-1] (0 for i = 0 in a block) through shared memory; `with_barrier` false
// leaves out the __syncthreads between the writes and the reads: a race the schedule order exposes.
void simt_neighbour_sum(const int* in, int* out, int n, int block, bool with_barrier);

// ---- broken kernels, each caught by one check ------------------------------------------------
void simt_divergent_barrier(int* out);       // threads < 16 reach one __syncthreads, the others another
void simt_exit_before_barrier(int* out);     // thread 0 returns before the __syncthreads the others reach
void simt_shuffle_mask_mismatch(int* out);   // lanes < 16 pass mask 0xffff, the others 0xffffffff
void simt_barrier_in_warp_divergence(int* out);  // lane 0 waits at __syncthreads, lanes 1-31 in a shuffle
void simt_shuffle_outside_mask(int* out);    // mask 0xffff, but lane 3 reads lane 20
void simt_misaligned_load(const float* in, float* out);  // load128 from in + 1
// Launches with a block of `threads` threads.
void simt_launch_block(int threads, int* out);

// ---- a real kernel, for speed: numerically stable softmax over each row -----------------------
void softmax_rows(const float* in, float* out, int rows, int cols, cudaStream_t stream);

}  // namespace ift::test
