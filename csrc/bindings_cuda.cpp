// Python binding of the CUDA spectral engine, fastspec._C_cuda.
//
// A module of its own, not part of fastspec._C, so that the CPU module never depends on the
// CUDA libraries: on a machine without a driver (or without the cuBLAS/cuSOLVER wheels) this
// one fails to import or reports why, and `import fastspec` still works (DESIGN.md).
//
// Like csrc/bindings.cpp it is the only place of its module that knows Python. Pointers,
// sizes, strides, dtype codes and streams arrive as integers (torch's data_ptr() and
// current_stream().cuda_stream); arguments are checked with the GIL held (bad ones raise
// ValueError on any machine, before any CUDA call), then the GIL is released for the work.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <utility>

#include "spectral/errors.h"
#include "spectral/spectral.h"

namespace py = pybind11;
using fastspec::spectral::DType;

namespace {

DType dtype_from_code(int code, const char* arg) {
  if (code < 0 || code > 3) {
    throw std::invalid_argument(std::string(arg) + ": unknown dtype code " + std::to_string(code) +
                                " (0 float32, 1 float16, 2 bfloat16, 3 float64)");
  }
  return static_cast<DType>(code);
}

template <typename T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

cudaStream_t stream_of(std::uintptr_t address) { return reinterpret_cast<cudaStream_t>(address); }

std::string version_string(int major, int minor, int patch) {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

// What this module was built with and which libraries it loaded. Needs no device or driver.
py::dict build_info() {
  py::dict info;
  info["cuda_runtime_compiled"] =
      version_string(CUDART_VERSION / 1000, (CUDART_VERSION % 1000) / 10, 0);
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) {
    info["cuda_runtime"] = version_string(runtime / 1000, (runtime % 1000) / 10, 0);
  }
  int driver = 0;  // 0 when no driver is installed
  cudaDriverGetVersion(&driver);
  info["cuda_driver"] = driver ? version_string(driver / 1000, (driver % 1000) / 10, 0) : "none";
  info["cublas_compiled"] = version_string(CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR, CUBLAS_VER_PATCH);
  info["cusolver_compiled"] =
      version_string(CUSOLVER_VER_MAJOR, CUSOLVER_VER_MINOR, CUSOLVER_VER_PATCH);
  int major = 0, minor = 0, patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(MINOR_VERSION, &minor) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(PATCH_LEVEL, &patch) == CUBLAS_STATUS_SUCCESS) {
    info["cublas"] = version_string(major, minor, patch);
  }
  if (cusolverGetProperty(MAJOR_VERSION, &major) == CUSOLVER_STATUS_SUCCESS &&
      cusolverGetProperty(MINOR_VERSION, &minor) == CUSOLVER_STATUS_SUCCESS &&
      cusolverGetProperty(PATCH_LEVEL, &patch) == CUSOLVER_STATUS_SUCCESS) {
    info["cusolver"] = version_string(major, minor, patch);
  }
  info["architectures"] = FASTSPEC_CUDA_ARCHITECTURES;
  info["accumulation"] =
      "fused centring kernels + cuBLAS SSYRK (IEEE float32, one triangle; or 3xTF32 GEMMs over "
      "the upper block columns) + fused Chan merge into float64";
  info["eigensolver"] = "cuSOLVER cusolverDnXsyevd (values, and vectors when asked, one call)";
  return info;
}

int device_count() {
  int count = 0;
  fastspec::check_cuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  return count;
}

void centre_and_gram(std::uintptr_t x, int dtype, int64_t rows, int64_t cols, int64_t row_stride,
                     int products, std::uintptr_t y, std::uintptr_t gram, std::uintptr_t col_sum,
                     std::uintptr_t resid, std::uintptr_t blas_workspace,
                     std::size_t blas_workspace_bytes, int device, std::uintptr_t stream) {
  fastspec::spectral::ChunkParams p;
  p.x = ptr<const void>(x);
  p.dtype = dtype_from_code(dtype, "centre_and_gram");
  p.products = static_cast<fastspec::spectral::Products>(products);  // validate() checks it
  p.rows = rows;
  p.cols = cols;
  p.row_stride = row_stride;
  p.y = ptr<float>(y);
  p.gram = ptr<float>(gram);
  p.col_sum = ptr<double>(col_sum);
  p.resid = ptr<double>(resid);
  p.blas_workspace = ptr<void>(blas_workspace);
  p.blas_workspace_bytes = blas_workspace_bytes;
  p.device = device;
  fastspec::spectral::validate(p);
  py::gil_scoped_release release;
  fastspec::spectral::centre_and_gram(p, stream_of(stream));
}

void chan_merge(std::uintptr_t gram, std::uintptr_t col_sum, std::uintptr_t resid, int64_t rows,
                int64_t cols, int64_t n_before, std::uintptr_t mean, std::uintptr_t m2,
                int64_t m2_ld, std::uintptr_t delta, int device, std::uintptr_t stream) {
  fastspec::spectral::MergeParams p;
  p.gram = ptr<const float>(gram);
  p.col_sum = ptr<const double>(col_sum);
  p.resid = ptr<const double>(resid);
  p.rows = rows;
  p.cols = cols;
  p.n_before = n_before;
  p.mean = ptr<double>(mean);
  p.m2 = ptr<double>(m2);
  p.m2_ld = m2_ld;
  p.delta = ptr<double>(delta);
  p.device = device;
  fastspec::spectral::validate(p);
  py::gil_scoped_release release;
  fastspec::spectral::chan_merge(p, stream_of(stream));
}

fastspec::spectral::EigParams eig_params(std::uintptr_t a, int64_t n, int64_t lda, int dtype,
                                         std::uintptr_t w, int64_t top_k, int device) {
  fastspec::spectral::EigParams p;
  p.a = ptr<void>(a);
  p.n = n;
  p.lda = lda;
  p.dtype = dtype_from_code(dtype, "cusolverDnXsyevd");
  p.w = ptr<void>(w);
  p.top_k = top_k;
  p.device = device;
  return p;
}

std::pair<std::size_t, std::size_t> eig_workspace_size(std::uintptr_t a, int64_t n, int64_t lda,
                                                       int dtype, std::uintptr_t w, int64_t top_k,
                                                       int device) {
  auto p = eig_params(a, n, lda, dtype, w, top_k, device);
  fastspec::spectral::validate(p, false);
  py::gil_scoped_release release;
  auto size = fastspec::spectral::eig_workspace_size(p);
  return {size.device_bytes, size.host_bytes};
}

int64_t eig(std::uintptr_t a, int64_t n, int64_t lda, int dtype, std::uintptr_t w, int64_t top_k,
            std::uintptr_t work, std::size_t work_bytes, std::uintptr_t host_work,
            std::size_t host_work_bytes, std::uintptr_t info, int device, std::uintptr_t stream) {
  auto p = eig_params(a, n, lda, dtype, w, top_k, device);
  p.work = ptr<void>(work);
  p.work_bytes = work_bytes;
  p.host_work = ptr<void>(host_work);
  p.host_work_bytes = host_work_bytes;
  p.info = ptr<int>(info);
  fastspec::spectral::validate(p, true);
  py::gil_scoped_release release;
  return fastspec::spectral::eig(p, stream_of(stream));
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "fastspec's CUDA spectral kernels (private; use the fastspec package)";
  // RuntimeError and MemoryError subclasses, so callers can catch the builtin types.
  auto cuda_error = py::register_exception<fastspec::CudaError>(m, "CudaError", PyExc_RuntimeError);
  py::register_exception<fastspec::SolverFailed>(m, "EigensolverError", cuda_error.ptr());
  py::register_exception<fastspec::DeviceOutOfMemory>(m, "DeviceOutOfMemory", PyExc_MemoryError);

  m.def("build_info", &build_info,
        "Versions this module was compiled with and loaded, and its GPU architectures.");
  m.def("device_count", &device_count,
        "cudaGetDeviceCount; raises RuntimeError naming the status when there is no usable "
        "driver or device.");
  m.def("centre_and_gram", &centre_and_gram, py::arg("x"), py::arg("dtype"), py::arg("rows"),
        py::arg("cols"), py::arg("row_stride"), py::arg("products"), py::arg("y"), py::arg("gram"), py::arg("col_sum"),
        py::arg("resid"), py::arg("blas_workspace"), py::arg("blas_workspace_bytes"),
        py::arg("device"), py::arg("stream"),
        "Column sums of a rows x cols chunk (row stride in elements), its float32 shift to the "
        "mean, the shifted chunk y, its column sums, and the upper triangle of y^T y (products "
        "0: cuBLAS SSYRK, IEEE float32; 1: 3xTF32 GEMMs, y then 2 x rows x cols). "
        "Asynchronous on `stream`.");
  m.def("chan_merge", &chan_merge, py::arg("gram"), py::arg("col_sum"), py::arg("resid"),
        py::arg("rows"), py::arg("cols"), py::arg("n_before"), py::arg("mean"), py::arg("m2"),
        py::arg("m2_ld"), py::arg("delta"), py::arg("device"), py::arg("stream"),
        "Merge a chunk left by centre_and_gram into float64 (mean, M2), upper triangle "
        "(Chan, Golub and LeVeque). Asynchronous on `stream`.");
  m.def("eig_workspace_size", &eig_workspace_size, py::arg("a"), py::arg("n"), py::arg("lda"),
        py::arg("dtype"), py::arg("w"), py::arg("top_k"), py::arg("device"),
        "(device_bytes, host_bytes) that eig needs for this problem.");
  m.def("eig", &eig, py::arg("a"), py::arg("n"), py::arg("lda"), py::arg("dtype"), py::arg("w"),
        py::arg("top_k"), py::arg("work"), py::arg("work_bytes"), py::arg("host_work"),
        py::arg("host_work_bytes"), py::arg("info"), py::arg("device"), py::arg("stream"),
        "All eigenvalues (ascending) of the symmetric matrix whose row-major upper triangle is "
        "`a`, and with top_k > 0 all eigenvectors too, in a's column-major columns (one "
        "cusolverDnXsyevd call; a is destroyed). Returns n; waits for the stream. Raises "
        "EigensolverError when the solver fails on this matrix.");
}
