"""fastspec's CUDA kernels (``fastspec._C_cuda``) from Python: whether they can run here, and
the two jobs they do, streaming accumulation of a chunk and the symmetric eigensolve.

The extension never sees torch (DESIGN.md): this module hands it ``data_ptr()``s, sizes,
strides, a dtype code and torch's current stream on the tensor's device, and allocates every
buffer the kernels need as a torch tensor, so torch's caching allocator serves them and an
out-of-memory error names the bytes asked for.

Numerics (the same contract as the torch path, moments.py): each chunk is shifted by its
float32 column means (input upcast as it is read), its products are formed in IEEE float32
(cuBLAS SSYRK, one triangle, no TF32), and it is merged into float64 state with Chan, Golub
and LeVeque's update; eigenvalues are computed in float64 by cuSOLVER's ``cusolverDnXsyevd``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from .. import _C

#: dtype codes of the binding (csrc/spectral/spectral.h, enum DType).
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
#: Input dtypes the accumulation kernels read (float64 input stays on the torch path, which
#: forms its products in float64).
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: cuBLAS workspace handed to each handle (NVIDIA's recommendation for Hopper is 32 MiB).
BLAS_WORKSPACE_BYTES = 32 << 20

_blas_workspaces: dict[int, torch.Tensor] = {}
_solver_workspaces: dict[int, tuple[torch.Tensor, np.ndarray, torch.Tensor]] = {}


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
    """Whether the kernels' machine code runs on CUDA device ``index``: they are built for
    compute capability 8.0 and up (CMAKE_CUDA_ARCHITECTURES, default 80-real;90)."""
    major, minor = torch.cuda.get_device_capability(index)
    if major < 8:
        return False, (f"device {index} ({torch.cuda.get_device_name(index)}) has compute capability "
                       f"{major}.{minor}; the kernels need 8.0 or newer")
    return True, ""


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


def _blas_workspace(device: torch.device) -> torch.Tensor:
    ws = _blas_workspaces.get(device.index)
    if ws is None:  # kept for the life of the process, like the cuBLAS handle it serves
        ws = _blas_workspaces[device.index] = _empty(BLAS_WORKSPACE_BYTES, torch.uint8, device, "cuBLAS workspace")
    return ws


def add_chunk(moments: Any, x: torch.Tensor) -> bool:
    """Add the rows of ``x`` (CUDA; bfloat16, float16 or float32) to ``moments`` (a
    ``Moments`` on the same device) with the kernels.

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
    y = _empty((b, d), torch.float32, device, f"centred chunk ({b}×{d} float32)")
    gram = _empty((d, d), torch.float32, device, f"chunk product ({d}×{d} float32)")
    vecs = _empty((3, d), torch.float64, device, "column sums")  # Σx, Σy, δ
    ws = _blas_workspace(device)
    _C_cuda.centre_and_gram(x.data_ptr(), DTYPE_CODES[x.dtype], b, d, x.stride(0), y.data_ptr(),
                            gram.data_ptr(), vecs[0].data_ptr(), vecs[1].data_ptr(), ws.data_ptr(),
                            ws.numel(), device.index, stream)
    del y  # its block returns to torch's cache in stream order, after the SYRK that reads it
    if not bool(torch.isfinite(gram.diagonal()).all() & torch.isfinite(vecs[1]).all()):
        return False
    mean, m2 = moments.tensors()
    if not m2.is_contiguous():
        m2 = moments.m2 = m2.contiguous()
    _C_cuda.chan_merge(gram.data_ptr(), vecs[0].data_ptr(), vecs[1].data_ptr(), b, d, moments.n,
                       mean.data_ptr(), m2.data_ptr(), m2.stride(0), vecs[2].data_ptr(), device.index, stream)
    moments.n += b
    return True


def _solver_buffers(device: torch.device, work_bytes: int, host_bytes: int) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """The cuSOLVER workspaces of ``device``, reused while large enough (one set per device)."""
    cached = _solver_workspaces.get(device.index)
    if cached is not None and cached[0].numel() >= work_bytes and cached[1].size >= host_bytes:
        return cached
    _solver_workspaces.pop(device.index, None)  # free the old one before asking for more
    work = _empty(max(work_bytes, 1), torch.uint8, device, f"cuSOLVER workspace ({work_bytes} bytes)")
    host = np.empty(max(host_bytes, 1), dtype=np.uint8)
    info = _empty(1, torch.int32, device, "cuSOLVER info")
    _solver_workspaces[device.index] = (work, host, info)
    return work, host, info


def solve(a: torch.Tensor, w: torch.Tensor, top_k: int = 0) -> int:
    """cuSOLVER on the contiguous float32/float64 matrix ``a`` (upper triangle authoritative;
    destroyed): all eigenvalues into ``w`` (ascending, ``cusolverDnXsyevd``), or, with
    ``top_k``, the top_k eigenpairs (``cusolverDnXsyevdx``; vectors in rows 0..k of ``a``)."""
    from .. import _C_cuda

    n = a.shape[0]
    device = a.device
    code = DTYPE_CODES[a.dtype]
    need_dev, need_host = _C_cuda.eig_workspace_size(a.data_ptr(), n, a.stride(0), code, w.data_ptr(), top_k, device.index)
    work, host, info = _solver_buffers(device, need_dev, need_host)
    return _C_cuda.eig(a.data_ptr(), n, a.stride(0), code, w.data_ptr(), top_k, work.data_ptr(), work.numel(),
                       host.ctypes.data, host.size, info.data_ptr(), device.index, _stream(device))


def eigh(sym: torch.Tensor, k: int, dtype: torch.dtype = torch.float64) -> tuple[np.ndarray, np.ndarray | None]:
    """Descending eigenvalues (float64 NumPy) of the CUDA matrix whose upper triangle is
    ``sym``'s (``sym`` is not changed), solved in ``dtype``, and the top-k eigenvectors
    (dim × k, columns in eigenvalue order) when ``k`` > 0."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the eigensolver works in float32 or float64, not {dtype}")
    n = sym.shape[0]
    a = sym.to(dtype=dtype, copy=True, memory_format=torch.contiguous_format)
    w = _empty(n, dtype, sym.device, "eigenvalues")
    solve(a, w)
    values = w.flip(0).double().cpu().numpy()
    if not k:
        return values, None
    a.copy_(sym)  # the first solve destroyed it
    solve(a, w, k)
    # cuSOLVER's eigenvectors are the first k columns of the column-major a: rows of ours.
    vectors = a[:k].flip(0).T.double().cpu().numpy()
    return values, vectors
