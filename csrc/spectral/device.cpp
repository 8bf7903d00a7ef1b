#include "device.h"

#include <cuda_runtime_api.h>

#include <map>
#include <memory>

#include "errors.h"

namespace fastspec {
namespace spectral {

DeviceGuard::DeviceGuard(int device) {
  check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
  if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
}

DeviceGuard::~DeviceGuard() {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
}

DeviceHandles& handles_for(int device) {
  static std::mutex registry_mutex;
  static auto* registry = new std::map<int, std::unique_ptr<DeviceHandles>>();  // never freed
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto& slot = (*registry)[device];
  if (!slot) {
    auto handles = std::make_unique<DeviceHandles>();
    check_cublas(cublasCreate(&handles->blas), "cublasCreate");
    check_cusolver(cusolverDnCreate(&handles->solver), "cusolverDnCreate");
    check_cusolver(cusolverDnCreateParams(&handles->solver_params), "cusolverDnCreateParams");
    slot = std::move(handles);  // only a fully made set is kept; a failure retries next time
  }
  return *slot;
}

}  // namespace spectral
}  // namespace fastspec
