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

// cuDNN (engine/cuda/cudnn_attention.cpp), where cudnn_graph.h has been included before this header:
// cuDNN's status string and its last error message, which says which attribute or shape it refused.
#ifdef CUDNN_VERSION
#define IFT_CUDNN_CHECK(call)                                                                                 \
  do {                                                                                                        \
    const cudnnStatus_t ift_status_ = (call);                                                                 \
    if (ift_status_ != CUDNN_STATUS_SUCCESS) {                                                                \
      char ift_last_[512] = {};                                                                               \
      cudnnGetLastErrorString(ift_last_, sizeof ift_last_);                                                   \
      ::ift::fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ", cudnnGetErrorString(ift_status_), " (", \
                  ift_last_, ")");                                                                            \
    }                                                                                                         \
  } while (0)
#endif
