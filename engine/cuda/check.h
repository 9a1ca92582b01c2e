// The check macros for the CUDA runtime and cuBLAS(Lt): a failing call throws ift::Error naming the
// call, the file and line, and the library's own description of the status.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "engine/base/error.h"

#define IFT_CUDA_CHECK(call)                                                                              \
  do {                                                                                                    \
    const cudaError_t ift_status_ = (call);                                                               \
    if (ift_status_ != cudaSuccess)                                                                       \
      ::ift::fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ", cudaGetErrorString(ift_status_)); \
  } while (0)

#define IFT_CUBLAS_CHECK(call)                                                                               \
  do {                                                                                                       \
    const cublasStatus_t ift_status_ = (call);                                                               \
    if (ift_status_ != CUBLAS_STATUS_SUCCESS)                                                                \
      ::ift::fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ", cublasLtGetStatusString(ift_status_)); \
  } while (0)

// NCCL (engine/dist/nccl.cpp), where nccl.h has been included before this header.
#ifdef NCCL_H_
#define IFT_NCCL_CHECK(call)                                                                                \
  do {                                                                                                      \
    const ncclResult_t ift_status_ = (call);                                                                \
    if (ift_status_ != ncclSuccess)                                                                         \
      ::ift::fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ", ncclGetErrorString(ift_status_),      \
                  " (", ncclGetLastError(nullptr), ")");                                                    \
  } while (0)
#endif
