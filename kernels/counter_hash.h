// A counter-based random stream, shared bit for bit by the CPU reference (engine/cpu/ops.cpp) and the
// kernels (kernels/dropout.cu): the value drawn for element i of a stream is a pure function of
// (seed, step, site, i), so nothing random is stored between a forward and its backward, nothing
// depends on the launch's schedule, and a resumed run draws exactly what the uninterrupted one drew.
//
// The stream is SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
// OOPSLA 2014): its i-th output from state `key` is mix64(key + (i + 1) * golden), so any element is
// drawn directly, without stepping through the ones before. The key is the mix of seed, step and
// site, each folded through mix64 so that neighbouring steps or sites give unrelated streams.
//
// Plain C++ (no CUDA headers): __host__ __device__ under nvcc, ordinary inline functions elsewhere
// (the emulator's host compiler and the CPU reference).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define IFT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define IFT_HOST_DEVICE inline
#endif

namespace ift {

IFT_HOST_DEVICE uint64_t counter_mix64(uint64_t z) {  // SplitMix64's finaliser: a bijection of 64 bits
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The state of the stream of one (seed, step, site).
IFT_HOST_DEVICE uint64_t counter_key(uint64_t seed, uint64_t step, uint32_t site) {
  return counter_mix64(counter_mix64(counter_mix64(seed) ^ step) + site);
}

// 32 random bits for element `index` of the stream `key` (the high half of SplitMix64's output).
IFT_HOST_DEVICE uint32_t counter_bits(uint64_t key, uint64_t index) {
  return static_cast<uint32_t>(counter_mix64(key + (index + 1) * 0x9e3779b97f4a7c15ull) >> 32);
}

// Element i is kept when counter_bits >= this threshold: floor(p * 2^32), so it is dropped with
// probability p to within 2^-32. Computed in double, exactly alike on the host and the device.
IFT_HOST_DEVICE uint32_t dropout_threshold(float p) {
  const double t = static_cast<double>(p) * 4294967296.0;
  return t >= 4294967295.0 ? 4294967295u : static_cast<uint32_t>(t);
}

// The factor kept elements are multiplied by: 1 / (1 - p), one IEEE fp32 division.
IFT_HOST_DEVICE float dropout_scale(float p) { return 1.0f / (1.0f - p); }

// A uniform value in [-1, 1) from 32 random bits: 24 of them, scaled exactly (every value is a
// multiple of 2^-23, so no rounding happens on either side).
IFT_HOST_DEVICE float counter_uniform_pm1(uint32_t bits) {
  return static_cast<float>(bits >> 8) * (1.0f / 8388608.0f) - 1.0f;
}

}  // namespace ift
