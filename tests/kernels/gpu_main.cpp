// Catch2 main of test_kernels_gpu: the kernel tests (tests/kernels/test_*.cpp) against nvcc's build
// of the kernels on the GPU. Without a usable CUDA device it prints one line and exits with 1 before
// any test runs (--list-tests and the like work without one). Every launch synchronises its stream (sync_after_launch), so a fault is reported
// at the kernel that caused it and managed buffers are readable on the host when a call returns.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>

#include <cuda_runtime_api.h>

#define IFT_KERNELS_CUDA 1
#include "kernels/kernels.h"

int main(int argc, char** argv) {
  // Listing needs no device (a build check can see what the binary holds).
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--list", 6) == 0) return Catch::Session().run(argc, argv);
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "test_kernels_gpu: no CUDA device (cudaGetDeviceCount: %s)\n",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 1;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("test_kernels_gpu: device 0 is %s (sm_%d%d), %d device(s)\n", prop.name, prop.major, prop.minor, devices);
  ift::cuda::set_sync_after_launch(true);
  return Catch::Session().run(argc, argv);
}
