// The emu backend: the kernels built over the SIMT emulator (ift::emu), host memory, and a plain CPU
// GEMM in the place of cuBLASLt. It exists so that the kernel path of the whole model (the same
// calls, buffers, workspace and precision as on a GPU) runs, and is tested, on a machine without one.
#include <cstring>
#include <new>

#include "engine/kernel_backend.inl"
#include "engine/model.inl"

namespace ift {

struct EmuDevice {
  static constexpr size_t kGemmWorkspaceBytes = 0;
  void* gemm_workspace = nullptr;
  size_t gemm_workspace_bytes = 0;

  // 256-byte aligned, as cudaMalloc is; filled with a NaN pattern (0xff bytes), so that a buffer
  // read before it is written shows up in the results instead of passing as zeros.
  void* allocate(size_t bytes) {
    void* p = ::operator new(bytes, std::align_val_t{256});
    std::memset(p, 0xff, bytes);
    return p;
  }
  void release(void* p) { ::operator delete(p, std::align_val_t{256}); }
  void upload(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }
  void zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }
  cudaStream_t stream() { return nullptr; }

  // What a cuBLASLt call computes: In inputs widened to fp32, fp32 accumulation (in k order here),
  // the bias added in fp32, one rounding to Out. Unblocked: the emu backend runs small models.
  template <class In, class Out>
  void gemm(Out* c, const In* a, const In* b, const In* bias, int M, int N, int K, bool trans_a, bool trans_b,
            bool accumulate) {
    const auto f = [](auto x) { return static_cast<float>(x); };
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        float acc = 0;
        for (int k = 0; k < K; ++k) {
          const float x = f(trans_a ? a[size_t(k) * M + i] : a[size_t(i) * K + k]);
          const float y = f(trans_b ? b[size_t(j) * K + k] : b[size_t(k) * N + j]);
          acc += x * y;
        }
        if (bias) acc += f(bias[j]);
        Out& out = c[size_t(i) * N + j];
        out = static_cast<Out>(accumulate ? f(out) + acc : acc);
      }
  }
};

template class KernelBackend<float, EmuDevice>;
template class KernelBackend<__nv_bfloat16, EmuDevice>;
template class Transformer<EmuBackend<float>>;
template class Optimizer<EmuBackend<float>>;
template class Model<EmuBackend<float>>;
template class Transformer<EmuBackend<__nv_bfloat16>>;
template class Optimizer<EmuBackend<__nv_bfloat16>>;
template class Model<EmuBackend<__nv_bfloat16>>;

}  // namespace ift
