// NF4 dequantize (declared in kernels/nf4.h): a grid-stride map over packs of K values. The code book
// goes to shared memory once per block; each value is a table lookup and one fp32 multiply by its
// block's absmax. K = 8 reads the 8 codes as one 32-bit word and writes 16-byte vectors (n a multiple
// of 8, aligned pointers); K = 1 is the path for any size and alignment. Both compute the same
// product per element, so the result does not depend on the path or the launch shape.
#include "kernels/common.cuh"
#include "kernels/nf4.h"

#include <algorithm>

IFT_KERNELS_BEGIN

// ---- kernels ------------------------------------------------------------------------------------

// The code book by value (kernel arguments), so that the kernel reads no host constant.
struct Nf4Book {
  float v[16];
};

template <int K, class T>
static __global__ void nf4_dequantize_kernel(T* g_out, const uint8_t* g_codes, const float* g_absmax, Nf4Args args,
                                             Nf4Book book) {
  IFT_SHARED(float[16], s_book);
  if (threadIdx.x < 16) s_book[threadIdx.x] = book.v[threadIdx.x];
  __syncthreads();
  const int64_t n_packs = args.n / K, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_packs; i += stride) {
    if constexpr (K == 1) {
      const uint8_t r_byte = g_codes[i / 2];
      const int code = i % 2 ? r_byte & 0x0f : r_byte >> 4;
      g_out[i] = from_float<T>(s_book[code] * g_absmax[i / kNf4Block]);
    } else {
      static_assert(K == 8 && kNf4Block % 8 == 0, "a pack of 8 values: 4 code bytes, one block");
      // Byte k of the little-endian word holds values 2k (high nibble) and 2k + 1 (low nibble).
      const uint32_t r_word = reinterpret_cast<const uint32_t*>(g_codes)[i];
      const float r_scale = g_absmax[i * K / kNf4Block];
      float r_v[K];
      for (int k = 0; k < 4; ++k) {
        r_v[2 * k] = s_book[(r_word >> (8 * k + 4)) & 0x0f] * r_scale;
        r_v[2 * k + 1] = s_book[(r_word >> (8 * k)) & 0x0f] * r_scale;
      }
      store_floats(g_out + i * K, r_v);
    }
  }
}

// ---- launchers ----------------------------------------------------------------------------------

template <class T>
static void nf4_dequantize_impl(T* out, const uint8_t* codes, const float* absmax, const Nf4Args& args,
                                cudaStream_t stream) {
  IFT_CHECK(args.n >= 0, "nf4_dequantize: negative element count n = ", args.n);
  if (args.n == 0) return;
  IFT_CHECK(out && codes && absmax, "nf4_dequantize: out, codes and absmax must not be null");
  constexpr int kThreads = 256;
  Nf4Book book;
  std::copy(kNf4CodeBook, kNf4CodeBook + 16, book.v);
  const auto grid = [](int64_t items) {
    return static_cast<unsigned>(std::clamp<int64_t>((items + kThreads - 1) / kThreads, 1, 16384));
  };
  if (args.n % 8 == 0 && aligned16(out) && reinterpret_cast<uintptr_t>(codes) % 4 == 0)
    launch_kernel(nf4_dequantize_kernel<8, T>, grid(args.n / 8), kThreads, 0, stream, out, codes, absmax, args, book);
  else
    launch_kernel(nf4_dequantize_kernel<1, T>, grid(args.n), kThreads, 0, stream, out, codes, absmax, args, book);
}

void nf4_dequantize(float* out, const uint8_t* codes, const float* absmax, const Nf4Args& args, cudaStream_t stream) {
  nf4_dequantize_impl(out, codes, absmax, args, stream);
}
void nf4_dequantize(bf16* out, const uint8_t* codes, const float* absmax, const Nf4Args& args, cudaStream_t stream) {
  nf4_dequantize_impl(out, codes, absmax, args, stream);
}

IFT_KERNELS_END
