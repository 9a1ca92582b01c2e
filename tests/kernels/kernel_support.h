// Helpers shared by the kernel tests (tests/kernels/test_*.cpp): conversions between fp32 and the
// bf16 storage type, error measures, and the two accuracy rules most kernel tests state at their
// top (each test file keeps its own statement of the rules it applies):
//   fp32 storage: |got - ref| <= 1e-5 * |ref| + 1e-5 * max|ref| element by element, against the
//     CPU reference run in double on the same inputs (require_fp32_close).
//   bf16 storage (FlashAttention's rule): max|got - ref| <= 2 * max|naive - ref| + 1e-5 * max|ref|,
//     where naive is the same reference run in float on the same inputs with its outputs rounded to
//     bf16 (require_storage_close<bf16>).
// Tests with other tolerances use the measures here and state their own rule.
//
// Each test file is compiled twice: over the emulated kernels (ift::emu, one test binary per kernel
// file) and, where CUDA is built, against nvcc's kernels (ift::cuda, IFT_TEST_GPU=1, all files in the
// one binary test_kernels_gpu). Buffers a kernel reads or writes are KernelVector: a plain
// std::vector in the emulator, CUDA managed memory on the GPU (launches synchronise there, so the
// host reads results as soon as a kernel function returns). Cases that only the emulator can run
// (its schedules, its fault checks) sit inside `#if IFT_TEST_EMULATED`.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_bf16.h>

#if IFT_TEST_GPU
#include <cuda_runtime_api.h>

#include "engine/base/error.h"
#endif

#include "tests/support.h"

#if IFT_TEST_GPU
#define IFT_TEST_EMULATED 0
#else
#define IFT_TEST_EMULATED 1
#endif

namespace ift::test {

using bf16 = __nv_bfloat16;

#if IFT_TEST_GPU || IFT_TEST_KERNEL_VECTOR_TYPE
#if IFT_TEST_GPU
// cudaMallocManaged memory: the same pointer is valid on the host and on the device.
template <class T>
struct ManagedAllocator {
  using value_type = T;
  ManagedAllocator() = default;
  template <class U>
  ManagedAllocator(const ManagedAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = nullptr;
    const cudaError_t e = cudaMallocManaged(&p, std::max<size_t>(n, 1) * sizeof(T));
    if (e != cudaSuccess) fail("cudaMallocManaged(", n * sizeof(T), " bytes) failed: ", cudaGetErrorString(e));
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { cudaFree(p); }  // the result is ignored: it may run after the runtime shut down
  template <class U>
  bool operator==(const ManagedAllocator<U>&) const {
    return true;
  }
};
#else
// IFT_TEST_KERNEL_VECTOR_TYPE: the GPU build's types over plain host memory, so that the emulator
// runs the test code exactly as test_kernels_gpu compiles it (test_kernels_gpu_types).
template <class T>
struct ManagedAllocator : std::allocator<T> {
  ManagedAllocator() = default;
  template <class U>
  ManagedAllocator(const ManagedAllocator<U>&) {}
  template <class U>
  struct rebind {
    using other = ManagedAllocator<U>;
  };
};
#endif

// A std::vector in managed memory, converting to and from plain vectors (copies), so that the tests
// read the same in both builds.
template <class T>
class KernelVector : public std::vector<T, ManagedAllocator<T>> {
  using Base = std::vector<T, ManagedAllocator<T>>;

 public:
  using Base::Base;
  KernelVector() = default;
  template <class A>
  KernelVector(const std::vector<T, A>& v) : Base(v.begin(), v.end()) {}
  template <class A>
  operator std::vector<T, A>() const {
    return std::vector<T, A>(this->begin(), this->end());
  }
};
#else
template <class T>
using KernelVector = std::vector<T>;
#endif

inline float to_f(float x) { return x; }
inline float to_f(bf16 x) { return __bfloat162float(x); }

template <class T>
T from_f(float x) {
  if constexpr (std::is_same_v<T, bf16>)
    return __float2bfloat16(x);
  else
    return x;
}

template <class T>
const char* type_name() {
  return std::is_same_v<T, bf16> ? "bf16" : "float";
}

// Values converted to storage type T (rounded to nearest even for bf16).
// (In kernel-visible memory: inputs of kernels are made this way.)
template <class T, class A>
KernelVector<T> to_storage(const std::vector<float, A>& v) {
  KernelVector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = from_f<T>(v[i]);
  return out;
}

template <class T, class A>
std::vector<double> to_double(const std::vector<T, A>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(to_f(v[i]));
  return out;
}

template <class T, class A>
std::vector<float> to_floats(const std::vector<T, A>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_f(v[i]);
  return out;
}

// What a value computed in float (or better) looks like once stored as T.
template <class T, class A>
std::vector<double> stored_as(const std::vector<float, A>& v) {
  return to_double(to_storage<T>(v));
}

// max|v| of float or double values.
template <class T, class A>
double max_abs(const std::vector<T, A>& v) {
  double m = 0;
  for (T x : v) m = std::max(m, std::abs(static_cast<double>(x)));
  return m;
}

// max|got - ref|; got holds float or double values.
template <class A>
double max_error(const A& got, const std::vector<double>& ref) {
  double m = 0;
  for (size_t i = 0; i < ref.size(); ++i) m = std::max(m, std::abs(static_cast<double>(got[i]) - ref[i]));
  return m;
}

template <class T, class A, class B>
bool bitwise_equal(const std::vector<T, A>& a, const std::vector<T, B>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Prints a measured value when IFT_TEST_VERBOSE=1 (for reports; no assertion depends on it).
inline void report(const std::string& what, double value) {
  const char* v = std::getenv("IFT_TEST_VERBOSE");
  if (v && v[0] == '1') std::printf("  %-60s %.3e\n", what.c_str(), value);
}

// Prints measured errors when IFT_TEST_PRINT_ERRORS is set (how the numbers in reports are made).
inline void print_error(const std::string& what, double err, double scale, double naive_err = -1) {
  if (!std::getenv("IFT_TEST_PRINT_ERRORS")) return;
  if (naive_err >= 0)
    std::printf("%-60s max err %.3e (naive bf16 %.3e), max|ref| %.3e\n", what.c_str(), err, naive_err, scale);
  else
    std::printf("%-60s max err %.3e (rel to max|ref| %.3e)\n", what.c_str(), err, scale > 0 ? err / scale : err);
}

// The fp32 rule (see the top of this file).
inline void require_fp32_close(const std::string& what, const std::vector<double>& got, const std::vector<double>& ref) {
  const double scale = max_abs(ref);
  print_error(what, max_error(got, ref), scale);
  require_close(what, got, ref, 1e-5 * scale, 1e-5);
}

// The rule of the storage type T: fp32 for float, FlashAttention's for bf16 (naive: the float
// reference's outputs, before rounding to bf16).
template <class T, class A>
void require_storage_close(const std::string& what, const std::vector<T, A>& got, const std::vector<double>& ref,
                           const std::vector<float>& naive_unrounded) {
  const std::vector<double> g = to_double(got);
  if constexpr (std::is_same_v<T, float>) {
    require_fp32_close(what, g, ref);
  } else {
    const std::vector<double> naive = stored_as<bf16>(naive_unrounded);
    const double scale = max_abs(ref), err = max_error(g, ref), naive_err = max_error(naive, ref);
    print_error(what, err, scale, naive_err);
    INFO(what << ": max error " << err << " vs naive bf16 " << naive_err << " (max|ref| " << scale << ")");
    CHECK(err <= 2 * naive_err + 1e-5 * scale);
    size_t nonfinite = 0;
    for (double x : g) nonfinite += !std::isfinite(x);
    CHECK(nonfinite == 0);
  }
}

}  // namespace ift::test
