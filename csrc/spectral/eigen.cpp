// Eigenvalues (and, when asked, the top-k eigenvectors) with cuSOLVER's 64-bit API.
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "device.h"
#include "errors.h"
#include "spectral.h"

namespace fastspec {
namespace spectral {
namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

cudaDataType data_type(DType dtype) { return dtype == DType::kFloat64 ? CUDA_R_64F : CUDA_R_32F; }

cusolverEigMode_t mode_of(const EigParams& p) {
  return p.top_k > 0 ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
}

}  // namespace

void validate(const EigParams& p, bool need_buffers) {
  const char* call = "cusolverDnXsyevd";
  require(p.dtype == DType::kFloat32 || p.dtype == DType::kFloat64,
          std::string(call) + ": dtype must be float32 or float64, got " + dtype_name(p.dtype));
  require(p.n >= 1, std::string(call) + ": n must be >= 1, got " + std::to_string(p.n));
  require(p.lda >= p.n, std::string(call) + ": lda (" + std::to_string(p.lda) +
                            ") must be >= n (" + std::to_string(p.n) + ")");
  require(p.top_k >= 0 && p.top_k <= p.n, std::string(call) + ": top_k must be in [0, n = " +
                                              std::to_string(p.n) + "], got " +
                                              std::to_string(p.top_k));
  require(p.a != nullptr && p.w != nullptr, std::string(call) + ": a or w is a null pointer");
  require(p.device >= 0, std::string(call) + ": device must be >= 0");
  if (need_buffers) {
    require(p.info != nullptr, std::string(call) + ": info is a null pointer");
    require(p.work != nullptr || p.work_bytes == 0,
            std::string(call) + ": work is null but work_bytes is " + std::to_string(p.work_bytes));
    require(p.host_work != nullptr || p.host_work_bytes == 0,
            std::string(call) + ": host_work is null but host_work_bytes is " +
                std::to_string(p.host_work_bytes));
  }
}

WorkspaceSize eig_workspace_size(const EigParams& p) {
  validate(p, false);
  DeviceGuard guard(p.device);
  DeviceHandles& h = handles_for(p.device);
  std::lock_guard<std::mutex> lock(h.mutex);
  const cudaDataType t = data_type(p.dtype);
  WorkspaceSize size;
  check_cusolver(cusolverDnXsyevd_bufferSize(h.solver, h.solver_params, mode_of(p),
                                             CUBLAS_FILL_MODE_LOWER, p.n, t, p.a, p.lda, t, p.w, t,
                                             &size.device_bytes, &size.host_bytes),
                 "cusolverDnXsyevd_bufferSize");
  return size;
}

int64_t eig(const EigParams& p, cudaStream_t stream) {
  validate(p, true);
  const char* call = "cusolverDnXsyevd";
  DeviceGuard guard(p.device);
  DeviceHandles& h = handles_for(p.device);
  std::lock_guard<std::mutex> lock(h.mutex);
  // The caller's buffers must be as large as cuSOLVER asks for this problem; checking here
  // turns a too-small buffer (a caller's bug) into an error instead of a memory fault.
  const cudaDataType t = data_type(p.dtype);
  size_t need_device = 0, need_host = 0;
  check_cusolver(cusolverDnXsyevd_bufferSize(h.solver, h.solver_params, mode_of(p),
                                             CUBLAS_FILL_MODE_LOWER, p.n, t, p.a, p.lda, t, p.w, t,
                                             &need_device, &need_host),
                 "cusolverDnXsyevd_bufferSize");
  if (p.work_bytes < need_device || p.host_work_bytes < need_host) {
    throw std::invalid_argument(std::string(call) + ": workspace too small: " +
                                std::to_string(p.work_bytes) + " device bytes and " +
                                std::to_string(p.host_work_bytes) + " host bytes given, " +
                                std::to_string(need_device) + " and " + std::to_string(need_host) +
                                " needed");
  }
  check_cusolver(cusolverDnSetStream(h.solver, stream), "cusolverDnSetStream");
  const cusolverStatus_t status =
      cusolverDnXsyevd(h.solver, h.solver_params, mode_of(p), CUBLAS_FILL_MODE_LOWER, p.n, t, p.a,
                       p.lda, t, p.w, t, p.work, p.work_bytes, p.host_work, p.host_work_bytes,
                       p.info);
  if (status == CUSOLVER_STATUS_EXECUTION_FAILED) {
    throw SolverFailed(std::string(call) + " failed: CUSOLVER_STATUS_EXECUTION_FAILED (" +
                       std::to_string(static_cast<int>(status)) + ")");
  }
  check_cusolver(status, call);
  int info = 0;
  check_cuda(cudaMemcpyAsync(&info, p.info, sizeof(int), cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (info > 0) {
    throw SolverFailed(std::string(call) + " did not converge: info = " + std::to_string(info) +
                       " (off-diagonal elements of an intermediate tridiagonal form did not "
                       "converge to zero; the matrix may hold NaN or Inf, or be extremely badly "
                       "scaled or rank-deficient in this precision)");
  }
  if (info < 0) {
    throw CudaError(std::string(call) + " rejected parameter " + std::to_string(-info) +
                    " (info = " + std::to_string(info) + "): a bug in fastspec, please report it");
  }
  return p.n;
}

}  // namespace spectral
}  // namespace fastspec
