// Dropout (declared in kernels/dropout.h): a grid-stride map whose mask is the counter hash of the
// element's index (kernels/counter_hash.h), so it is regenerated, never stored, and independent of
// the launch's shape: thread and element are unrelated. Storage float or bf16, arithmetic fp32.
#include "kernels/common.cuh"
#include "kernels/counter_hash.h"
#include "kernels/dropout.h"

#include <algorithm>

IFT_KERNELS_BEGIN

// ---- kernels ------------------------------------------------------------------------------------

// Packs of K elements; element index i * K + k draws counter i * K + k. out may alias in (each
// value is read and then written by one thread).
template <int K, class T>
static __global__ void dropout_kernel(T* g_out, const T* g_in, DropoutArgs args, int64_t n_packs) {
  const uint64_t key = counter_key(args.seed, args.step, args.site);
  const uint32_t threshold = dropout_threshold(args.p);
  const float scale = dropout_scale(args.p);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_packs; i += stride) {
    float r_v[K];
    load_floats(r_v, g_in + i * K);
    for (int k = 0; k < K; ++k) {
      const bool keep = counter_bits(key, static_cast<uint64_t>(i * K + k)) >= threshold;
      r_v[k] = keep ? r_v[k] * scale : 0.0f;
    }
    store_floats(g_out + i * K, r_v);
  }
}

// ---- launchers ----------------------------------------------------------------------------------

template <class T>
static void dropout_impl(T* out, const T* in, const DropoutArgs& args, cudaStream_t stream) {
  IFT_CHECK(args.n >= 0, "dropout: negative element count n = ", args.n);
  IFT_CHECK(args.p >= 0.0f && args.p < 1.0f, "dropout: probability p = ", args.p, " is outside [0, 1)");
  if (args.n == 0) return;
  IFT_CHECK(out && in, "dropout: out and in must not be null");
  constexpr int kThreads = 256;
  constexpr int K = Pack128<T>::kSize;
  const auto grid = [](int64_t items) {
    return static_cast<unsigned>(std::clamp<int64_t>((items + kThreads - 1) / kThreads, 1, 16384));
  };
  if (args.n % K == 0 && aligned16(out) && aligned16(in))
    launch_kernel(dropout_kernel<K, T>, grid(args.n / K), kThreads, 0, stream, out, in, args, args.n / K);
  else
    launch_kernel(dropout_kernel<1, T>, grid(args.n), kThreads, 0, stream, out, in, args, args.n);
}

void dropout(float* out, const float* in, const DropoutArgs& args, cudaStream_t stream) {
  dropout_impl(out, in, args, stream);
}
void dropout(bf16* out, const bf16* in, const DropoutArgs& args, cudaStream_t stream) {
  dropout_impl(out, in, args, stream);
}

IFT_KERNELS_END
