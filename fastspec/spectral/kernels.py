"""fastspec's CUDA kernels (``fastspec._C_cuda``) from Python: whether they can run here, and
the two jobs they do, streaming accumulation of a chunk and the symmetric eigensolve.

The extension never sees torch (DESIGN.md): this module hands it ``data_ptr()``s, sizes,
strides, a dtype code and torch's current stream on the tensor's device, and allocates every
buffer the kernels need as a torch tensor, so torch's caching allocator serves them and an
out-of-memory error names the bytes asked for.

Numerics (the same contract as the torch path, moments.py): each chunk is shifted by its
float32 column means (input upcast as it is read), its products are formed in IEEE float32
(``products="fp32"``: cuBLAS SSYRK, one triangle, no TF32; or ``"tf32x3"``: the centred
values split into a TF32 high part and a TF32 remainder, hi·hiᵀ + hi·loᵀ + lo·hiᵀ on the
tensor cores, float32 accumulation), and it is merged into float64 state with Chan, Golub
and LeVeque's update; eigenvalues (and, when asked, eigenvectors, in the same call) are
computed in float64 by cuSOLVER's ``cusolverDnXsyevd``.

Safe defaults. The first time the kernels are asked to run on a device, a canary
(:func:`canary`: a small matrix with large-mean columns, through both product paths and the
eigensolver, against the torch path in float64 on that device) must agree, or the device is
left to the torch path with a warning, and ``fastspec.backends()`` says why. An eigensolve
that cuSOLVER fails (``info > 0``, ``CUSOLVER_STATUS_EXECUTION_FAILED``) is retried in
float64, and then on the CPU (:meth:`CudaOps.eigh`), with a warning.
Workspaces are kept per (device, stream), so two streams of one device never share one.

:class:`CudaOps` is this path as an ops object (:class:`fastspec.spectral.moments.Ops`), with
the torch path under it for what the kernels do not take (float64 rows, a float32 overflow,
a matrix cuSOLVER fails on).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import torch

from .. import _C
from .moments import MIN_FLUSH_ROWS, TORCH, Moments

#: dtype codes of the binding (csrc/spectral/spectral.h, enum DType).
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
#: Input dtypes the accumulation kernels read (float64 input stays on the torch path, which
#: forms its products in float64).
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Product paths of the accumulation kernels and their codes (csrc/spectral/spectral.h, enum
#: Products). "fp32" is the default until a GPU run shows "tf32x3" faster at the accuracy
#: contract (benchmarks/gpu.sh times both).
PRODUCTS = {"fp32": 0, "tf32x3": 1}
#: cuBLAS workspace handed to each handle (NVIDIA's recommendation for Hopper is 32 MiB).
BLAS_WORKSPACE_BYTES = 32 << 20
# A chunk is larger than the torch path's (moments._CHUNK_BYTES), so that the O(d²) merge
# after each SYRK stays a few percent of it (at d = 8192: 8192 rows, a 256 MiB float32 workspace).
_CHUNK_BYTES = 256 << 20

# Keyed by (device index, stream): work queued on one stream never shares a buffer with
# work queued on another (the handles' mutex orders the calls, not the kernels they launch).
_blas_workspaces: dict[tuple[int, int], torch.Tensor] = {}
_solver_workspaces: dict[tuple[int, int], tuple[torch.Tensor, np.ndarray, torch.Tensor]] = {}


class EigensolverFailed(RuntimeError):
    """cuSOLVER failed on a matrix in every precision tried on its device."""


@functools.lru_cache(maxsize=None)
def status() -> tuple[bool, str]:
    """``(usable, detail)``: whether the kernels can run in this process, and what they are
    built with or why they cannot run. Cached: it asks the driver once."""
    info = _C.build_info()["cuda_kernels"]
    if not info["built"]:
        return False, info["reason"]
    built = info["detail"]
    try:
        from .. import _C_cuda
    except ImportError as err:
        return False, f"fastspec._C_cuda was built ({built}) but does not import: {err}"
    lib = _C_cuda.build_info()
    libs = f"cuBLAS {lib.get('cublas', '?')}, cuSOLVER {lib.get('cusolver', '?')}, driver {lib['cuda_driver']}"
    if torch.version.cuda is None:
        return False, (f"built ({built}; {libs}), but torch {torch.__version__} was built without CUDA, "
                       "so no tensor can be on a GPU")
    try:
        count = _C_cuda.device_count()
    except RuntimeError as err:
        return False, f"built ({built}; {libs}), but no device can run them: {err}"
    if count == 0:
        return False, f"built ({built}; {libs}), but no CUDA device is visible"
    return True, f"{built}; {libs}; {count} device(s)"


@functools.lru_cache(maxsize=None)
def _device_status(index: int) -> tuple[bool, str]:
    """Whether the kernels run, and run right, on CUDA device ``index``: they are built for
    compute capability 8.0 and up (CMAKE_CUDA_ARCHITECTURES, default 80-real;90), and must
    pass the :func:`canary` there. Once per device and process."""
    major, minor = torch.cuda.get_device_capability(index)
    name = torch.cuda.get_device_name(index)
    if major < 8:
        return False, f"device {index} ({name}) has compute capability {major}.{minor}; the kernels need 8.0 or newer"
    try:
        problem = canary(torch.device("cuda", index))
    except Exception as err:  # a kernel that fails outright fails the canary too
        problem = f"{type(err).__name__}: {err}"
    if problem:
        warnings.warn(f"fastspec's CUDA kernels disagree with the torch path on device {index} ({name}): {problem}. "
                      "Work on this device uses the torch path instead (fastspec.backends() reports it).",
                      RuntimeWarning, stacklevel=2)
        return False, f"device {index} ({name}) failed the kernels' canary, so its work uses the torch path: {problem}"
    return True, ""


def device_report() -> dict[int, str]:
    """Per visible CUDA device: "ok" or why the kernels are not used there (runs the canary)."""
    if not status()[0]:
        return {}
    return {i: _device_status(i)[1] or "ok" for i in range(torch.cuda.device_count())}


def available(device: torch.device | None = None) -> bool:
    """Whether the kernels can run here (and on ``device``, a CUDA device, when given)."""
    if not status()[0]:
        return False
    return device is None or _device_status(_index(device))[0]


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def require(what: str, device: torch.device | None = None) -> None:
    """Raise NotImplementedError saying why, unless the kernels can run here (on ``device``)."""
    ok, why = status()
    if ok and device is not None:
        ok, why = _device_status(_index(device))
    if not ok:
        raise NotImplementedError(
            f"{what}: fastspec's CUDA kernels are not available: {why}. "
            "backend='torch' computes on any torch device, CUDA included."
        )


def _stream(device: torch.device) -> int:
    return int(torch.cuda.current_stream(device).cuda_stream)


def _empty(shape: Any, dtype: torch.dtype, device: torch.device, what: str) -> torch.Tensor:
    """torch.empty, with an out-of-memory error that says what the buffer was for."""
    try:
        return torch.empty(shape, dtype=dtype, device=device)
    except torch.OutOfMemoryError as err:
        raise torch.OutOfMemoryError(f"fastspec CUDA kernels: no room for the {what} on {device}: {err}") from err


def _blas_workspace(device: torch.device, stream: int) -> torch.Tensor:
    ws = _blas_workspaces.get((device.index, stream))
    if ws is None:  # kept for the life of the process, like the cuBLAS handle it serves
        ws = _blas_workspaces[(device.index, stream)] = _empty(BLAS_WORKSPACE_BYTES, torch.uint8, device,
                                                               "cuBLAS workspace")
    return ws


def check_products(products: str) -> str:
    if products not in PRODUCTS:
        raise ValueError(f"products must be one of {tuple(PRODUCTS)}, got {products!r}")
    return products


def add_chunk(moments: Moments, x: torch.Tensor) -> bool:
    """Add the rows of ``x`` (CUDA; bfloat16, float16 or float32) to ``moments`` (on the same
    device; its ops' ``products`` picks the product path) with the kernels.

    Returns False, changing nothing, when the chunk's products or sums are not finite (a
    non-finite input, or float32 overflow); the caller tells the two apart, as on the torch
    path. Asynchronous but for that one check.
    """
    from .. import _C_cuda

    b, d = x.shape
    if x.stride(1) != 1 or (b > 1 and x.stride(0) < d):
        x = x.contiguous()  # the kernels read rows with a stride, columns contiguous
    device = x.device
    stream = _stream(device)
    products = PRODUCTS[check_products(moments.ops.products)]
    parts = 2 if products else 1  # 3×TF32: the hi parts, then the lo parts
    y = _empty((parts, b, d), torch.float32, device, f"centred chunk ({parts}×{b}×{d} float32)")
    gram = _empty((d, d), torch.float32, device, f"chunk product ({d}×{d} float32)")
    vecs = _empty((3, d), torch.float64, device, "column sums")  # Σx, Σy, δ
    ws = _blas_workspace(device, stream)
    _C_cuda.centre_and_gram(x.data_ptr(), DTYPE_CODES[x.dtype], b, d, x.stride(0), products, y.data_ptr(),
                            gram.data_ptr(), vecs[0].data_ptr(), vecs[1].data_ptr(), ws.data_ptr(),
                            ws.numel(), device.index, stream)
    del y  # its block returns to torch's cache in stream order, after the SYRK that reads it
    if not bool(torch.isfinite(gram.diagonal()).all() & torch.isfinite(vecs[1]).all()):
        return False

    def merge(n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:  # exact centring and Chan's merge, fused
        _C_cuda.chan_merge(gram.data_ptr(), vecs[0].data_ptr(), vecs[1].data_ptr(), b, d, n,
                           mean.data_ptr(), m2.data_ptr(), m2.stride(0), vecs[2].data_ptr(), device.index, stream)

    moments.add_merged(b, merge)
    return True


def _solver_buffers(device: torch.device, stream: int, work_bytes: int,
                   host_bytes: int) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """The cuSOLVER workspaces of (``device``, ``stream``), reused while large enough."""
    key = (device.index, stream)
    cached = _solver_workspaces.get(key)
    if cached is not None and cached[0].numel() >= work_bytes and cached[1].size >= host_bytes:
        return cached
    _solver_workspaces.pop(key, None)  # free the old one before asking for more
    work = _empty(max(work_bytes, 1), torch.uint8, device, f"cuSOLVER workspace ({work_bytes} bytes)")
    host = np.empty(max(host_bytes, 1), dtype=np.uint8)
    info = _empty(1, torch.int32, device, "cuSOLVER info")
    _solver_workspaces[key] = (work, host, info)
    return work, host, info


def solve(a: torch.Tensor, w: torch.Tensor, vectors: bool = False) -> int:
    """cuSOLVER's ``cusolverDnXsyevd`` on the contiguous float32/float64 matrix ``a`` (upper
    triangle authoritative; destroyed): all eigenvalues into ``w`` (ascending), and with
    ``vectors`` all eigenvectors into ``a`` (column-major columns: rows of ``a``)."""
    from .. import _C_cuda

    n = a.shape[0]
    device = a.device
    stream = _stream(device)
    code = DTYPE_CODES[a.dtype]
    top_k = n if vectors else 0
    need_dev, need_host = _C_cuda.eig_workspace_size(a.data_ptr(), n, a.stride(0), code, w.data_ptr(), top_k, device.index)
    work, host, info = _solver_buffers(device, stream, need_dev, need_host)
    return _C_cuda.eig(a.data_ptr(), n, a.stride(0), code, w.data_ptr(), top_k, work.data_ptr(), work.numel(),
                       host.ctypes.data, host.size, info.data_ptr(), device.index, stream)


def _eigh_once(sym: torch.Tensor, k: int, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray | None]:
    n = sym.shape[0]
    a = sym.to(dtype=dtype, copy=True, memory_format=torch.contiguous_format)
    w = _empty(n, dtype, sym.device, "eigenvalues")
    solve(a, w, vectors=bool(k))
    values = w.flip(0).double().cpu().numpy()
    # Eigenvector m is column m of the column-major a, row m of ours; the top k are the last.
    vectors = a[n - k:].flip(0).T.double().cpu().numpy() if k else None
    return values, vectors


def eigh(sym: torch.Tensor, k: int, dtype: torch.dtype = torch.float64) -> tuple[np.ndarray, np.ndarray | None]:
    """Descending eigenvalues (float64 NumPy) of the CUDA matrix whose upper triangle is
    ``sym``'s (``sym`` is not changed), solved in ``dtype``, and the top-k eigenvectors
    (dim × k, columns in eigenvalue order) when ``k`` > 0, from one cuSOLVER call. A solve
    that cuSOLVER fails, or that returns a non-finite value, is retried in float64 (with a
    warning); if that fails too, :class:`EigensolverFailed` (the caller solves on the CPU)."""
    from .. import _C_cuda

    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the eigensolver works in float32 or float64, not {dtype}")
    failures = []
    for attempt in dict.fromkeys((dtype, torch.float64)):
        try:
            values, vectors = _eigh_once(sym, k, attempt)
        except _C_cuda.EigensolverError as err:
            failures.append(f"in {str(attempt).removeprefix('torch.')}: {err}")
            continue
        if np.isfinite(values).all() and (vectors is None or np.isfinite(vectors).all()):
            if failures:
                warnings.warn(f"cuSOLVER failed on a {sym.shape[0]}×{sym.shape[0]} matrix ({failures[0]}); "
                              "solved again in float64 on the device", RuntimeWarning, stacklevel=3)
            return values, vectors
        failures.append(f"in {str(attempt).removeprefix('torch.')}: non-finite eigenvalues or vectors")
    raise EigensolverFailed(f"cuSOLVER failed on a {sym.shape[0]}×{sym.shape[0]} matrix on {sym.device} "
                            f"({'; '.join(failures)})")


class CudaOps:
    """fastspec's CUDA kernels as a computation path (:class:`fastspec.spectral.moments.Ops`):
    chunks through :func:`add_chunk` with the ``products`` path, eigensolves through
    :func:`eigh`. What the kernels do not take goes to the torch path
    (:data:`fastspec.spectral.moments.TORCH`): float64 rows (multiplied in float64), a chunk
    whose float32 products overflow (redone in float64), and a matrix cuSOLVER fails on in
    every precision (solved on the CPU, with a warning): never a crash, never a wrong number."""

    kernels = True

    def __init__(self, products: str = "fp32"):
        self.products = check_products(products)

    def __repr__(self) -> str:
        return f"CudaOps(products={self.products!r})"

    def chunk_rows(self, dim: int) -> int:
        """About 256 MiB of float32 rows (the torch path's chunks are smaller), at least
        MIN_FLUSH_ROWS."""
        return max(MIN_FLUSH_ROWS, _CHUNK_BYTES // (4 * dim))

    def add_chunk(self, moments: Moments, x: torch.Tensor) -> bool:
        """See :meth:`fastspec.spectral.moments.Ops.add_chunk`. Same numerics as the torch
        path (csrc/spectral): float32 shift, IEEE float32 (or 3×TF32) products, fused exact
        centring and Chan merge into float64."""
        if x.dtype not in INPUT_DTYPES:
            return TORCH.add_chunk(moments, x)
        if add_chunk(moments, x):
            return True
        if not bool(torch.isfinite(x).all()):
            return False
        return moments.add_chunk(x.to(torch.float64))  # float32 overflow: redo in float64

    def eigh(self, sym: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """See :meth:`fastspec.spectral.moments.Ops.eigh`: cuSOLVER's cusolverDnXsyevd
        (values and, when asked, vectors, in one call) on ``sym``'s device, float64."""
        try:
            return eigh(sym, k)
        except EigensolverFailed as err:
            warnings.warn(f"{err}; solving it on the CPU (torch.linalg, float64) instead", RuntimeWarning, stacklevel=2)
            return TORCH.eigh(sym.cpu(), k)


#: The canary's matrix: rows, columns (not a multiple of 4, so that rows of a 2-byte input
#: start off any 8-byte boundary), and the offset of its large-mean columns; and the chunks
#: it is fed in (a single row among them). Chunks of at most 300 rows keep the bound on the
#: float32 accumulation (γ₃₀₀ ≈ 3.6e-5 on the tensor cores, :func:`canary_tolerances`) well
#: under a product path's error of 1e-4, which the canary must catch.
CANARY_ROWS, CANARY_DIM, CANARY_MEAN = 1500, 99, 1e3
CANARY_CHUNKS = (300, 1, 299, 300, 300, 300)
#: Input dtypes the canary feeds the kernels (bfloat16 is upcast as it is read).
CANARY_DTYPES = (torch.float32, torch.bfloat16)
#: The low-variance column: mean CANARY_MEAN, standard deviation CANARY_LOW_STD (its M2 is
#: 1e-6 of the largest, below what an error relative to the largest entry could see; in
#: bfloat16 it is constant, a zero-variance column whose M2 must come out exactly zero).
CANARY_LOW_COLUMN, CANARY_LOW_STD = 4, 1e-3
_U32, _U64 = 2.0**-24, 2.0**-53  # unit roundoffs of float32 and float64


def _canary_matrix() -> torch.Tensor:
    """The canary's float64 CPU matrix: a spread spectrum, four large-mean columns, one
    large-mean column of tiny variance."""
    g = torch.Generator().manual_seed(20261202)
    x = torch.randn(CANARY_ROWS, CANARY_DIM, generator=g, dtype=torch.float64)
    x *= torch.logspace(0, -2, CANARY_DIM, dtype=torch.float64)  # a spread spectrum
    x[:, :4] += CANARY_MEAN
    x[:, CANARY_LOW_COLUMN] = CANARY_MEAN + CANARY_LOW_STD * x[:, CANARY_LOW_COLUMN] / x[:, CANARY_LOW_COLUMN].std()
    return x


def canary_tolerances(x: torch.Tensor, products: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column bound on the mean's error and per-entry bound on M2's error that float32
    rounding allows the kernels on ``x`` (float64, the values the kernels read) fed in
    :data:`CANARY_CHUNKS`, through the ``products`` path.

    Mean (per column c; each chunk's mean is its float32 shift plus the float64 mean of
    y = fl32(x − shift), and the shift itself cancels exactly): the rounding of y,
    |δμ_c| ≤ u₃₂ · (1/n) Σ_r |x_rc − shift_c| with |x − shift| ≤ |x − μ_chunk| + u₃₂ |μ_chunk|,
    plus float64 sums and merges, a few u₆₄ |μ_c| per chunk. Doubled for the float64 sums of
    y (at most b·u₆₄ of the same Σ|y|) and the reference's own rounding.

    M2 (per entry i, j; Σ_r |y_ri y_rj| ≤ √(S_i S_j) by Cauchy–Schwarz, where S_i = Σ_r y_ri²
    is at most M2_ii plus Σ_chunks b (u₃₂ μ_chunk,i)², the shift's offset from the chunk's
    mean): a float32 sum of b products errs by at most
    γ_b = b·u/(1 − b·u) of Σ|y_ri y_rj| (Higham, *Accuracy and Stability of Numerical
    Algorithms*, §3.1), with u = u₃₂ for SSYRK (IEEE, round to nearest) and 2u₃₂ for the
    tensor cores (which truncate when they accumulate: Fasi et al. 2021); rounding y costs
    2u₃₂ per product, and 3×TF32 3·2⁻²² more (lo·loᵀ dropped, lo rounded to TF32); the
    float64 merges add a few u₆₄ per chunk.
    """
    n, b = x.shape[0], max(CANARY_CHUNKS)
    mean = x.mean(0)
    spread, squares = torch.zeros_like(mean), ((x - mean) ** 2).sum(0)
    start = 0
    for rows in CANARY_CHUNKS:
        part = x[start:start + rows]
        start += rows
        offset = _U32 * part.mean(0).abs()  # bounds |chunk mean − its float32 shift|
        spread += (part - part.mean(0)).abs().sum(0) + rows * offset
        squares += rows * offset**2
    mean_tol = 2 * (_U32 * spread / n + 4 * len(CANARY_CHUNKS) * _U64 * mean.abs())
    u = _U32 if products == "fp32" else 2 * _U32
    per_product = 2 * _U32 + (0.0 if products == "fp32" else 3 * 2.0**-22)
    gamma = b * u / (1 - b * u) + per_product + 4 * len(CANARY_CHUNKS) * _U64
    return mean_tol, gamma * torch.sqrt(torch.outer(squares, squares))


def canary(device: torch.device) -> str | None:
    """Run the kernels on a small matrix and compare them with the torch path in float64 on
    the same ``device``: the mean and M2 of the chunks (the first chunk and the merges), for
    a float32 and a bfloat16 input, through each product path, and the eigenvalues and top
    eigenvectors of the reference M2. The matrix (:func:`_canary_matrix`) has large-mean
    columns, a large-mean column of tiny variance and a width that is not a multiple of 4.
    None when every mean and every M2 entry is within what float32 rounding allows
    (:func:`canary_tolerances`), else what differs."""
    x64 = _canary_matrix()
    upper = torch.triu(torch.ones(CANARY_DIM, CANARY_DIM, dtype=torch.bool, device=device))
    for dtype in CANARY_DTYPES:
        x = x64.to(dtype).to(device)
        ref = x.double()  # the values the kernels read
        mean = ref.mean(0)
        m2 = (ref - mean).T @ (ref - mean)
        for products in PRODUCTS:
            mean_tol, m2_tol = (t.to(device) for t in canary_tolerances(ref.cpu(), products))
            state = Moments(CANARY_DIM, device, CudaOps(products))
            start = 0
            for rows in CANARY_CHUNKS:
                if not add_chunk(state, x[start:start + rows]):
                    return f"products={products!r}, {dtype}: a finite chunk was reported non-finite"
                start += rows
            where = f"products={products!r}, {str(dtype).removeprefix('torch.')} input"
            if state.n != CANARY_ROWS:
                return f"{where}: n = {state.n} (want {CANARY_ROWS})"
            mean_err, m2_err = (state.mean - mean).abs(), (state.m2 - m2).abs()
            mean_bad = ~mean_err.le(mean_tol)  # NaN is bad too
            m2_bad = ~m2_err.le(m2_tol) & upper
            if bool(mean_bad.any()):
                c = int(torch.where(mean_bad, mean_err / mean_tol, 0).nan_to_num(nan=float("inf")).argmax())
                return (f"{where}: mean of column {c} off by {float(mean_err[c]):.3g} (float32 rounding allows "
                        f"{float(mean_tol[c]):.3g})")
            if bool(m2_bad.any()):
                i, j = divmod(int(torch.where(m2_bad, m2_err / m2_tol, 0).nan_to_num(nan=float("inf")).argmax()),
                              CANARY_DIM)
                return (f"{where}: M2[{i}, {j}] off by {float(m2_err[i, j]):.3g} (float32 rounding allows "
                        f"{float(m2_tol[i, j]):.3g}; the entry is {float(m2[i, j]):.3g})")
        if dtype == torch.float32:
            m2_eig = m2
    want_values, want_vectors = torch.linalg.eigh(m2_eig)
    values, vectors = _eigh_once(m2_eig, 3, torch.float64)
    value_err = float(np.abs(values - want_values.flip(0).cpu().numpy()).max()) / float(want_values[-1])
    overlap = np.abs(np.sum(vectors * want_vectors[:, -3:].flip(1).cpu().numpy(), axis=0))
    if not value_err <= 1e-9 or not float(np.min(overlap)) >= 1 - 1e-6:
        return (f"eigensolver: eigenvalues off by {value_err:.3g} of the largest (allowed 1e-09), top-3 eigenvector "
                f"overlaps {np.round(overlap, 8).tolist()} (want 1)")
    return None
