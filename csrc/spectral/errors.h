// Failures of CUDA, cuBLAS and cuSOLVER calls, as C++ exceptions that the binding turns into
// Python ones: CudaError -> RuntimeError, SolverFailed -> EigensolverError (a CudaError),
// DeviceOutOfMemory -> MemoryError. Every message
// names the call and the status, so a user can tell what failed without a debugger.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace fastspec {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The eigensolver ran and failed on this matrix (no convergence, or cuSOLVER's execution
// failure): a property of the input and the precision, which a retry can get past.
class SolverFailed : public CudaError {
 public:
  using CudaError::CudaError;
};

class DeviceOutOfMemory : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

const char* cublas_status_name(cublasStatus_t status);
const char* cusolver_status_name(cusolverStatus_t status);

// Throw (CudaError, or DeviceOutOfMemory for allocation failures) unless status is success.
// `call` names the API function, e.g. "cusolverDnXsyevd".
void check_cuda(cudaError_t status, const char* call);
void check_cublas(cublasStatus_t status, const char* call);
void check_cusolver(cusolverStatus_t status, const char* call);

// Check the launch of a kernel (a bad configuration is reported here, not at the next sync).
void check_launch(const char* kernel);

}  // namespace fastspec
