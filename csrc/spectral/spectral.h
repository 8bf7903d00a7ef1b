// fastspec's CUDA spectral engine: streaming covariance accumulation and eigenvalues.
//
// Plain structs of pointers, int64 sizes and strides (flash-attention style); every
// launcher is (const Params&, cudaStream_t) and runs asynchronously on the caller's stream,
// except where it must read a result back (the solver's info). Nothing here allocates
// device memory: the caller hands every buffer in (fastspec passes torch tensors' pointers),
// and asks eig_workspace_size() how large the solver's buffers must be.
//
// Accumulation of one chunk of rows (DESIGN.md, numerical conventions):
//   1. centre_and_gram: column sums of x (upcast on load, float64 sums), shift = float32(mean);
//      y = x - shift in float32 into the caller's workspace, and the residual column sums
//      s = sum_r y (float64); then the upper triangle of y^T y, by one of two product paths:
//      - Products::kFloat32: cuBLAS SSYRK in IEEE float32 (CUBLAS_PEDANTIC_MATH: no TF32),
//        one triangle only;
//      - Products::kTf32x3: the centring kernel splits y into hi = tf32(y) and
//        lo = tf32(y - hi) (round to nearest, ties away), and cuBLAS GEMMs with
//        CUBLAS_COMPUTE_32F_FAST_TF32 (tensor cores, float32 accumulation) sum
//        hi hi^T + hi lo^T + lo hi^T over the upper block columns. The dropped lo lo^T is
//        2^-22 of y y^T, below float32 accumulation error; 1xTF32 alone would cost ~1e-5.
//   2. chan_merge: one pass over the upper triangle of the float64 state,
//        M2 += y^T y - s s^T / b + (n_a b / n) delta delta^T,   delta = mean_chunk - mean_a,
//      i.e. exact centring of the chunk fused with Chan, Golub and LeVeque's pairwise update,
//      and mean += delta b / n.
// Between the two, the caller can check the chunk's products for overflow before anything
// touches the state (fastspec redoes such a chunk in float64).
//
// Why cuBLAS rather than an own tiled kernel: the issue asks for whichever of the two wins
// the benchmark. No GPU was available when this was written, so nothing could be measured,
// and the lower-risk design was built: fused memory-bound pre/post kernels around the
// vendor's SYRK. An own kernel fusing centring into the GEMM's loads would save one write
// and one read of the chunk; it was not built because its benefit could not be measured.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace fastspec {
namespace spectral {

// Element types of the input (and, for eig, of the matrix). Codes are part of the binding's
// interface: fastspec/_cuda.py uses the same numbers.
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

const char* dtype_name(DType dtype);

// How a chunk's products are formed (codes shared with fastspec/spectral/kernels.py).
enum class Products : int { kFloat32 = 0, kTf32x3 = 1 };

struct ChunkParams {
  // Input: rows x cols, row r at x + r * row_stride elements, columns contiguous.
  const void* x = nullptr;
  DType dtype = DType::kFloat32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  Products products = Products::kFloat32;
  // Workspaces (device memory, caller-owned):
  float* y = nullptr;         // rows x cols, row-major, contiguous: the shifted chunk; with
                              // kTf32x3, 2 x rows x cols: its TF32 hi part, then lo part
  float* gram = nullptr;      // cols x cols, row-major: upper triangle (i <= j) := y^T y;
                              // the strict lower triangle is not meaningful (not read)
  double* col_sum = nullptr;  // cols: sum_r x[r, c]
  double* resid = nullptr;    // cols: sum_r y[r, c]
  void* blas_workspace = nullptr;  // optional cuBLAS workspace (cublasSetWorkspace)
  size_t blas_workspace_bytes = 0;
  int device = 0;
};

struct MergeParams {
  // The chunk, as centre_and_gram left it:
  const float* gram = nullptr;     // cols x cols, upper triangle authoritative
  const double* col_sum = nullptr;
  const double* resid = nullptr;
  int64_t rows = 0;  // b, rows in the chunk
  int64_t cols = 0;  // d
  // The state (float64, device): n_before rows so far; mean (d), m2 (d x d, row-major with
  // leading dimension m2_ld, upper triangle authoritative; the lower one is not touched).
  // With n_before == 0 the state's previous contents are not read (they may be garbage).
  int64_t n_before = 0;
  double* mean = nullptr;
  double* m2 = nullptr;
  int64_t m2_ld = 0;
  double* delta = nullptr;  // workspace, cols doubles
  int device = 0;
};

// Symmetric eigenproblem of an n x n matrix whose upper triangle (row-major, i <= j) defines
// it; in cuSOLVER's column-major terms that is the lower triangle. The matrix is destroyed.
// One cusolverDnXsyevd call either way: all eigenvalues, ascending, into w[0..n), and
//   top_k  > 0: the eigenvectors too, in the columns of a (column-major; rows of the
//               row-major view), column m for w[m]: the top_k are the last top_k columns.
//               One solve for values and vectors (not syevd and then syevdx, which would
//               reduce the matrix to tridiagonal form twice).
struct EigParams {
  void* a = nullptr;
  int64_t n = 0;
  int64_t lda = 0;
  DType dtype = DType::kFloat64;  // kFloat32 or kFloat64: matrix, eigenvalues and compute
  void* w = nullptr;              // n elements of dtype
  int64_t top_k = 0;
  void* work = nullptr;  // device workspace of at least eig_workspace_size().device_bytes
  size_t work_bytes = 0;
  void* host_work = nullptr;  // host workspace of at least .host_bytes (may be null if 0)
  size_t host_work_bytes = 0;
  int* info = nullptr;  // one int of device memory
  int device = 0;
};

struct WorkspaceSize {
  size_t device_bytes = 0;
  size_t host_bytes = 0;
};

void centre_and_gram(const ChunkParams& params, cudaStream_t stream);
void chan_merge(const MergeParams& params, cudaStream_t stream);
WorkspaceSize eig_workspace_size(const EigParams& params);
// Returns the number of eigenvalues computed (n). Synchronises the stream to read the
// solver's info; info > 0 (no convergence) and CUSOLVER_STATUS_EXECUTION_FAILED throw
// SolverFailed (the caller may retry in float64 or on the CPU), info < 0 throws CudaError.
int64_t eig(const EigParams& params, cudaStream_t stream);

// Argument checks that need no device (the binding calls them before releasing the GIL, so
// bad arguments are ValueErrors on any machine). They throw std::invalid_argument.
void validate(const ChunkParams& params);
void validate(const MergeParams& params);
void validate(const EigParams& params, bool need_buffers);

}  // namespace spectral
}  // namespace fastspec
