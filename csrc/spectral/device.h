// Per-device library handles and the current-device guard.
#pragma once

#include <cublas_v2.h>
#include <cusolverDn.h>

#include <mutex>

namespace fastspec {
namespace spectral {

// Makes `device` current for this thread and restores the previous device on exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// One cuBLAS and one cuSOLVER handle per device, made on first use and kept for the life of
// the process (creating them costs milliseconds; destroying them at exit races the driver's
// own teardown). A handle is not safe for concurrent use, so callers hold `mutex`.
struct DeviceHandles {
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;
  cusolverDnParams_t solver_params = nullptr;
  std::mutex mutex;
};

// The handles of `device`, which must be the current device.
DeviceHandles& handles_for(int device);

}  // namespace spectral
}  // namespace fastspec
