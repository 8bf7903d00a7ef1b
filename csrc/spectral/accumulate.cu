// Streaming covariance of one chunk: centring kernels, cuBLAS SSYRK, and Chan's merge.
// See spectral.h for the algorithm and why it is built around cuBLAS.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "device.h"
#include "errors.h"
#include "spectral.h"

namespace fastspec {
namespace spectral {
namespace {

constexpr int kColumnThreads = 256;  // one thread per column, a warp reads a row segment
constexpr int64_t kRowsPerBlock = 64;
constexpr int64_t kMaxGridY = 65535;
constexpr int kTile = 32;       // chan_merge: 32 x 32 tiles of the d x d state
constexpr int kTileRows = 8;    // ... by 32 x 8 threads

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// The float32 shift of column c: its mean rounded to float32. centre and merge must compute
// exactly the same value, so both call this.
__device__ __forceinline__ float shift_of(const double* col_sum, int64_t c, int64_t rows) {
  return __double2float_rn(col_sum[c] / static_cast<double>(rows));
}

struct RowSplit {
  int64_t rows_per_block;
  unsigned grid_y;
};

RowSplit split_rows(int64_t rows) {
  int64_t per = kRowsPerBlock;
  if ((rows + per - 1) / per > kMaxGridY) per = (rows + kMaxGridY - 1) / kMaxGridY;
  return {per, static_cast<unsigned>((rows + per - 1) / per)};
}

template <typename T>
__global__ void column_sums_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                   int64_t row_stride, int64_t rows_per_block,
                                   double* __restrict__ col_sum) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  const int64_t r1 = min(rows, r0 + rows_per_block);
  double acc = 0.0;
  for (int64_t r = r0; r < r1; ++r) acc += static_cast<double>(load(x + r * row_stride + c));
  atomicAdd(col_sum + c, acc);
}

// x rounded to TF32 (10 explicit mantissa bits), to nearest with ties away from zero: the
// value the tensor cores then read exactly. Emulated on the CPU by fastspec's tests as
// (bits + 0x1000) & ~0x1fff.
//
// The mask: the PTX ISA gives a .tf32 result as a .b32 register and does not promise that its
// 13 low mantissa bits are zero, while the tensor cores ignore them. Were any left set, hi
// would not be the value the GEMM reads, and lo = y - hi (exact only when hi has 10 mantissa
// bits) would not carry what the GEMM drops: 3xTF32 would lose up to 2^-11 relative, with no
// error anywhere. Zeroing them makes hi exact whatever the hardware leaves there (and costs
// one AND, which the compiler may already emit for the conversion).
__device__ __forceinline__ float to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return __uint_as_float(r & 0xffffe000u);
}

// y = x - shift (float32, exact for values near the mean), and s = sum_r y in float64. With
// SPLIT (Products::kTf32x3) y is written as hi = tf32(y) at y[r, c] and lo = tf32(y - hi) at
// y[rows + r, c]; s is still the sum of the unsplit float32 y.
template <typename T, bool SPLIT>
__global__ void centre_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                              int64_t row_stride, int64_t rows_per_block,
                              const double* __restrict__ col_sum, float* __restrict__ y,
                              double* __restrict__ resid) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const float shift = shift_of(col_sum, c, rows);
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  const int64_t r1 = min(rows, r0 + rows_per_block);
  double acc = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const float v = load(x + r * row_stride + c) - shift;
    if (SPLIT) {
      const float hi = to_tf32(v);
      y[r * cols + c] = hi;
      y[(rows + r) * cols + c] = to_tf32(v - hi);
    } else {
      y[r * cols + c] = v;
    }
    acc += static_cast<double>(v);
  }
  atomicAdd(resid + c, acc);
}

// delta = mean_chunk - mean (0 for the first chunk), then mean += delta * b / n. The chunk's
// mean is shift + s / b: the shift is exact, s / b the small remainder.
__global__ void update_mean_kernel(const double* __restrict__ col_sum,
                                   const double* __restrict__ resid, int64_t rows, int64_t cols,
                                   int64_t n_before, double* __restrict__ mean,
                                   double* __restrict__ delta) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const double b = static_cast<double>(rows);
  const double chunk_mean =
      static_cast<double>(shift_of(col_sum, c, rows)) + resid[c] / b;
  if (n_before == 0) {
    delta[c] = 0.0;
    mean[c] = chunk_mean;
    return;
  }
  const double dc = chunk_mean - mean[c];
  delta[c] = dc;
  mean[c] += dc * (b / (static_cast<double>(n_before) + b));
}

// Upper triangle (i <= j) of M2 (+)= G - s s^T / b + coef * delta delta^T, coef = n_a b / n.
// Tiles wholly below the diagonal exit at once; x threads walk a row, so reads of G and
// reads/writes of M2 are coalesced.
__global__ void chan_merge_kernel(const float* __restrict__ gram, const double* __restrict__ resid,
                                  const double* __restrict__ delta, int64_t d, int64_t m2_ld,
                                  double inv_b, double coef, bool first, double* __restrict__ m2) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTile;
  if (i0 > static_cast<int64_t>(blockIdx.x) * kTile + (kTile - 1)) return;
  if (j >= d) return;
  const double sj = resid[j] * inv_b;
  const double dj = delta[j] * coef;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int64_t i = i0 + k;
    if (i > j) break;
    const double v = static_cast<double>(gram[i * d + j]) - resid[i] * sj + delta[i] * dj;
    double* out = m2 + i * m2_ld + j;
    *out = first ? v : *out + v;
  }
}

template <typename T>
void launch_centre(const ChunkParams& p, cudaStream_t stream) {
  const T* x = static_cast<const T*>(p.x);
  const RowSplit split = split_rows(p.rows);
  const dim3 grid(static_cast<unsigned>((p.cols + kColumnThreads - 1) / kColumnThreads), split.grid_y);
  column_sums_kernel<T><<<grid, kColumnThreads, 0, stream>>>(x, p.rows, p.cols, p.row_stride,
                                                             split.rows_per_block, p.col_sum);
  check_launch("column_sums_kernel");
  if (p.products == Products::kTf32x3) {
    centre_kernel<T, true><<<grid, kColumnThreads, 0, stream>>>(
        x, p.rows, p.cols, p.row_stride, split.rows_per_block, p.col_sum, p.y, p.resid);
  } else {
    centre_kernel<T, false><<<grid, kColumnThreads, 0, stream>>>(
        x, p.rows, p.cols, p.row_stride, split.rows_per_block, p.col_sum, p.y, p.resid);
  }
  check_launch("centre_kernel");
}

constexpr int64_t kTf32BlockCols = 512;  // width of the upper block columns of the 3xTF32 path

// 3xTF32: G = hi hi^T + hi lo^T + lo hi^T, block column by block column of the column-major
// lower triangle (= the row-major upper one). In cuBLAS's terms the row-major rows x cols
// parts are column-major cols x rows matrices H and L (ld = cols); for the block column
// [j0, j1) the rows j0..cols of G are H[j0:] H[j0:j1]^T + H[j0:] L[j0:j1]^T + L[j0:] H[j0:j1]^T.
void tf32x3_gram(cublasHandle_t blas, const ChunkParams& p) {
  const int n = static_cast<int>(p.cols), k = static_cast<int>(p.rows);
  const float* hi = p.y;
  const float* lo = p.y + p.rows * p.cols;
  const float one = 1.0f, zero = 0.0f;
  for (int64_t j0 = 0; j0 < p.cols; j0 += kTf32BlockCols) {
    const int m = static_cast<int>(p.cols - j0);
    const int w = static_cast<int>(std::min<int64_t>(kTf32BlockCols, p.cols - j0));
    float* c = p.gram + j0 * p.cols + j0;
    const float* terms[3][2] = {{hi, hi}, {hi, lo}, {lo, hi}};
    for (int t = 0; t < 3; ++t) {
      check_cublas(cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_T, m, w, k, &one, terms[t][0] + j0,
                                CUDA_R_32F, n, terms[t][1] + j0, CUDA_R_32F, n, t == 0 ? &zero : &one,
                                c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT),
                   "cublasGemmEx (3xTF32)");
    }
  }
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat64: return "float64";
  }
  return "unknown";
}

void validate(const ChunkParams& p) {
  require(p.x != nullptr, "centre_and_gram: x is a null pointer");
  require(p.y != nullptr && p.gram != nullptr && p.col_sum != nullptr && p.resid != nullptr,
          "centre_and_gram: a workspace pointer (y, gram, col_sum, resid) is null");
  require(p.products == Products::kFloat32 || p.products == Products::kTf32x3,
          "centre_and_gram: products must be 0 (float32 SSYRK) or 1 (3xTF32), got " +
              std::to_string(static_cast<int>(p.products)));
  require(p.dtype == DType::kFloat32 || p.dtype == DType::kFloat16 || p.dtype == DType::kBFloat16,
          std::string("centre_and_gram: input dtype must be float32, float16 or bfloat16, got ") +
              dtype_name(p.dtype));
  require(p.rows >= 1, "centre_and_gram: rows must be >= 1, got " + std::to_string(p.rows));
  require(p.cols >= 1, "centre_and_gram: cols must be >= 1, got " + std::to_string(p.cols));
  // cuBLAS's SYRK takes int sizes.
  require(p.rows <= INT_MAX && p.cols <= INT_MAX,
          "centre_and_gram: rows and cols must each be below 2^31 (a chunk of " +
              std::to_string(p.rows) + " x " + std::to_string(p.cols) + ")");
  require(p.row_stride >= p.cols || p.rows == 1,
          "centre_and_gram: row_stride (" + std::to_string(p.row_stride) +
              ") must be >= cols (" + std::to_string(p.cols) + "): rows may not overlap");
  require((p.blas_workspace == nullptr) == (p.blas_workspace_bytes == 0),
          "centre_and_gram: blas_workspace and blas_workspace_bytes must be given together");
  require(p.device >= 0, "centre_and_gram: device must be >= 0");
}

void validate(const MergeParams& p) {
  require(p.gram != nullptr && p.col_sum != nullptr && p.resid != nullptr && p.delta != nullptr,
          "chan_merge: a chunk pointer (gram, col_sum, resid, delta) is null");
  require(p.mean != nullptr && p.m2 != nullptr, "chan_merge: mean or m2 is a null pointer");
  require(p.rows >= 1, "chan_merge: rows must be >= 1, got " + std::to_string(p.rows));
  require(p.cols >= 1, "chan_merge: cols must be >= 1, got " + std::to_string(p.cols));
  require(p.n_before >= 0, "chan_merge: n_before must be >= 0, got " + std::to_string(p.n_before));
  require(p.m2_ld >= p.cols, "chan_merge: m2_ld (" + std::to_string(p.m2_ld) +
                                 ") must be >= cols (" + std::to_string(p.cols) + ")");
  require(p.cols <= (int64_t{kMaxGridY} * kTile), "chan_merge: cols too large for the grid");
  require(p.device >= 0, "chan_merge: device must be >= 0");
}

void centre_and_gram(const ChunkParams& p, cudaStream_t stream) {
  validate(p);
  DeviceGuard guard(p.device);
  check_cuda(cudaMemsetAsync(p.col_sum, 0, sizeof(double) * p.cols, stream), "cudaMemsetAsync");
  check_cuda(cudaMemsetAsync(p.resid, 0, sizeof(double) * p.cols, stream), "cudaMemsetAsync");
  switch (p.dtype) {
    case DType::kFloat32: launch_centre<float>(p, stream); break;
    case DType::kFloat16: launch_centre<__half>(p, stream); break;
    case DType::kBFloat16: launch_centre<__nv_bfloat16>(p, stream); break;
    default: throw std::invalid_argument("centre_and_gram: unsupported dtype");
  }
  // G = y^T y. cuBLAS is column-major: the row-major rows x cols chunk is the column-major
  // cols x rows matrix Y = y^T (ld = cols), so G = Y Y^T, and cuBLAS's lower triangle is the
  // row-major upper one. PEDANTIC math keeps true float32 products (1xTF32 would cost about
  // 1e-5 on RankMe, README "Precision"), whatever NVIDIA_TF32_OVERRIDE or torch say; the
  // 3xTF32 path asks for TF32 by its compute type, and recovers float32 accuracy by the split.
  DeviceHandles& h = handles_for(p.device);
  std::lock_guard<std::mutex> lock(h.mutex);
  check_cublas(cublasSetStream(h.blas, stream), "cublasSetStream");
  if (p.blas_workspace != nullptr) {
    check_cublas(cublasSetWorkspace(h.blas, p.blas_workspace, p.blas_workspace_bytes),
                 "cublasSetWorkspace");
  }
  if (p.products == Products::kTf32x3) {
    check_cublas(cublasSetMathMode(h.blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    tf32x3_gram(h.blas, p);
    return;
  }
  check_cublas(cublasSetMathMode(h.blas, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
  const float one = 1.0f, zero = 0.0f;
  const int n = static_cast<int>(p.cols), k = static_cast<int>(p.rows);
  check_cublas(cublasSsyrk(h.blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one, p.y, n, &zero,
                           p.gram, n),
               "cublasSsyrk");
}

void chan_merge(const MergeParams& p, cudaStream_t stream) {
  validate(p);
  DeviceGuard guard(p.device);
  const unsigned vec_blocks = static_cast<unsigned>((p.cols + kColumnThreads - 1) / kColumnThreads);
  update_mean_kernel<<<vec_blocks, kColumnThreads, 0, stream>>>(p.col_sum, p.resid, p.rows, p.cols,
                                                                p.n_before, p.mean, p.delta);
  check_launch("update_mean_kernel");
  const unsigned tiles = static_cast<unsigned>((p.cols + kTile - 1) / kTile);
  const double b = static_cast<double>(p.rows);
  const double n_a = static_cast<double>(p.n_before);
  const double coef = p.n_before == 0 ? 0.0 : n_a * b / (n_a + b);
  chan_merge_kernel<<<dim3(tiles, tiles), dim3(kTile, kTileRows), 0, stream>>>(
      p.gram, p.resid, p.delta, p.cols, p.m2_ld, 1.0 / b, coef, p.n_before == 0, p.m2);
  check_launch("chan_merge_kernel");
}

}  // namespace spectral
}  // namespace fastspec
