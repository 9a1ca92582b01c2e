// NEFTune (declared in kernels/neftune.h): one block per row finds the row's segment by binary
// search over cu_seqlens, then strides over its columns adding the row's noise scale times a
// uniform draw of the counter hash (kernels/counter_hash.h) of the element's index.
#include "kernels/common.cuh"
#include "kernels/counter_hash.h"
#include "kernels/neftune.h"

#include <algorithm>
#include <cmath>

IFT_KERNELS_BEGIN

// ---- kernels ------------------------------------------------------------------------------------

template <class T>
static __global__ void neftune_kernel(T* g_x, const int32_t* g_cu_seqlens, NeftuneArgs args) {
  const int n = blockIdx.x;
  int lo = 0, hi = args.S;  // the segment s with cu[s] <= n < cu[s + 1]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (g_cu_seqlens[mid] <= n) lo = mid; else hi = mid;
  }
  const int length = g_cu_seqlens[lo + 1] - g_cu_seqlens[lo];
  const float scale = args.alpha / sqrtf(static_cast<float>(length) * static_cast<float>(args.C));
  const uint64_t key = counter_key(args.seed, args.step, kNeftuneSite);
  T* g_row = g_x + static_cast<int64_t>(n) * args.C;
  for (int c = threadIdx.x; c < args.C; c += blockDim.x) {
    const float u = counter_uniform_pm1(counter_bits(key, static_cast<uint64_t>(n) * args.C + c));
    g_row[c] = from_float<T>(fmaf(scale, u, to_float(g_row[c])));
  }
}

// ---- launchers ----------------------------------------------------------------------------------

template <class T>
static void neftune_impl(T* x, const int32_t* cu_seqlens, const NeftuneArgs& args, cudaStream_t stream) {
  IFT_CHECK(args.N > 0 && args.C > 0 && args.S > 0 && args.S <= args.N, "neftune_forward: bad shape N = ", args.N,
            ", C = ", args.C, ", S = ", args.S);
  IFT_CHECK(args.alpha >= 0 && std::isfinite(args.alpha), "neftune_forward: alpha = ", args.alpha,
            " must be finite and >= 0");
  IFT_CHECK(x && cu_seqlens, "neftune_forward: x and cu_seqlens must not be null");
  const int threads = std::clamp((args.C + 31) / 32 * 32, 32, 256);
  launch_kernel(neftune_kernel<T>, args.N, threads, 0, stream, x, cu_seqlens, args);
}

void neftune_forward(float* x, const int32_t* cu_seqlens, const NeftuneArgs& args, cudaStream_t stream) {
  neftune_impl(x, cu_seqlens, args, stream);
}
void neftune_forward(bf16* x, const int32_t* cu_seqlens, const NeftuneArgs& args, cudaStream_t stream) {
  neftune_impl(x, cu_seqlens, args, stream);
}

IFT_KERNELS_END
