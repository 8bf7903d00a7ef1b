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

// The bounds of an index range; unused by cuSOLVER for CUSOLVER_EIG_RANGE_I but passed as
// pointers of the matrix's type.
struct Bounds {
  double d[2] = {0.0, 0.0};
  float f[2] = {0.0f, 0.0f};
  void* lower(DType t) { return t == DType::kFloat64 ? static_cast<void*>(&d[0]) : &f[0]; }
  void* upper(DType t) { return t == DType::kFloat64 ? static_cast<void*>(&d[1]) : &f[1]; }
};

}  // namespace

void validate(const EigParams& p, bool need_buffers) {
  const char* call = p.top_k > 0 ? "cusolverDnXsyevdx" : "cusolverDnXsyevd";
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
  if (p.top_k == 0) {
    check_cusolver(cusolverDnXsyevd_bufferSize(h.solver, h.solver_params, CUSOLVER_EIG_MODE_NOVECTOR,
                                               CUBLAS_FILL_MODE_LOWER, p.n, t, p.a, p.lda, t, p.w, t,
                                               &size.device_bytes, &size.host_bytes),
                   "cusolverDnXsyevd_bufferSize");
  } else {
    Bounds bounds;
    int64_t found = 0;
    check_cusolver(cusolverDnXsyevdx_bufferSize(
                       h.solver, h.solver_params, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                       CUBLAS_FILL_MODE_LOWER, p.n, t, p.a, p.lda, bounds.lower(p.dtype),
                       bounds.upper(p.dtype), p.n - p.top_k + 1, p.n, &found, t, p.w, t,
                       &size.device_bytes, &size.host_bytes),
                   "cusolverDnXsyevdx_bufferSize");
  }
  return size;
}

int64_t eig(const EigParams& p, cudaStream_t stream) {
  validate(p, true);
  const char* call = p.top_k > 0 ? "cusolverDnXsyevdx" : "cusolverDnXsyevd";
  DeviceGuard guard(p.device);
  DeviceHandles& h = handles_for(p.device);
  std::lock_guard<std::mutex> lock(h.mutex);
  // The caller's buffers must be as large as cuSOLVER asks for this problem; checking here
  // turns a too-small buffer (a caller's bug) into an error instead of a memory fault.
  const cudaDataType t = data_type(p.dtype);
  size_t need_device = 0, need_host = 0;
  int64_t found = p.n;
  Bounds bounds;
  if (p.top_k == 0) {
    check_cusolver(cusolverDnXsyevd_bufferSize(h.solver, h.solver_params, CUSOLVER_EIG_MODE_NOVECTOR,
                                               CUBLAS_FILL_MODE_LOWER, p.n, t, p.a, p.lda, t, p.w, t,
                                               &need_device, &need_host),
                   "cusolverDnXsyevd_bufferSize");
  } else {
    check_cusolver(cusolverDnXsyevdx_bufferSize(
                       h.solver, h.solver_params, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                       CUBLAS_FILL_MODE_LOWER, p.n, t, p.a, p.lda, bounds.lower(p.dtype),
                       bounds.upper(p.dtype), p.n - p.top_k + 1, p.n, &found, t, p.w, t,
                       &need_device, &need_host),
                   "cusolverDnXsyevdx_bufferSize");
  }
  if (p.work_bytes < need_device || p.host_work_bytes < need_host) {
    throw std::invalid_argument(std::string(call) + ": workspace too small: " +
                                std::to_string(p.work_bytes) + " device bytes and " +
                                std::to_string(p.host_work_bytes) + " host bytes given, " +
                                std::to_string(need_device) + " and " + std::to_string(need_host) +
                                " needed");
  }
  check_cusolver(cusolverDnSetStream(h.solver, stream), "cusolverDnSetStream");
  if (p.top_k == 0) {
    check_cusolver(cusolverDnXsyevd(h.solver, h.solver_params, CUSOLVER_EIG_MODE_NOVECTOR,
                                    CUBLAS_FILL_MODE_LOWER, p.n, t, p.a, p.lda, t, p.w, t, p.work,
                                    p.work_bytes, p.host_work, p.host_work_bytes, p.info),
                   call);
  } else {
    check_cusolver(cusolverDnXsyevdx(h.solver, h.solver_params, CUSOLVER_EIG_MODE_VECTOR,
                                     CUSOLVER_EIG_RANGE_I, CUBLAS_FILL_MODE_LOWER, p.n, t, p.a,
                                     p.lda, bounds.lower(p.dtype), bounds.upper(p.dtype),
                                     p.n - p.top_k + 1, p.n, &found, t, p.w, t, p.work,
                                     p.work_bytes, p.host_work, p.host_work_bytes, p.info),
                   call);
  }
  int info = 0;
  check_cuda(cudaMemcpyAsync(&info, p.info, sizeof(int), cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (info > 0) {
    throw CudaError(std::string(call) + " did not converge: info = " + std::to_string(info) +
                    " (off-diagonal elements of an intermediate tridiagonal form did not converge "
                    "to zero; the matrix may hold NaN or Inf, or be extremely badly scaled)");
  }
  if (info < 0) {
    throw CudaError(std::string(call) + " rejected parameter " + std::to_string(-info) +
                    " (info = " + std::to_string(info) + "): a bug in fastspec, please report it");
  }
  if (p.top_k > 0 && found != p.top_k) {
    throw CudaError(std::string(call) + " returned " + std::to_string(found) +
                    " eigenvalues where " + std::to_string(p.top_k) + " were asked for");
  }
  return found;
}

}  // namespace spectral
}  // namespace fastspec
