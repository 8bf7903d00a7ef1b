"""The one-shot entry point: :func:`spectrum` of an N×d array, streamed through a
:class:`CovarianceAccumulator` when N ≥ d and through the N×N Gram matrix when N < d."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from . import kernels as cuda_kernels
from .accumulator import CovarianceAccumulator
from .backend import check_backend, ops_for, placement
from .eigen import check_k, metrics_of, warn_dropped
from .inputs import as_matrix, check_nan_policy, nonfinite_rows
from .metrics import DEFAULT_FIT_RANGE
from .moments import TORCH, Ops, exact_fp32_matmul, float64_overflow, power_of_two_scale, rescaled
from .record import Spectrum


def gram_spectrum(x: torch.Tensor, center: bool, k: int, n_dropped: int, ops: Ops = TORCH) -> Spectrum:
    """N < d: the N×N Gram matrix has the same non-zero spectrum at lower cost (its
    eigensolve by ``ops``; the product is a torch matmul on either path).

    Rows are shifted by their float32 mean (exact subtraction for values near it), the Gram
    product is formed in the compute dtype, and the shift is undone exactly in float64:
    with y = x − 1aᵀ and target rows z = y + 1cᵀ (c = −mean(y) to centre, c = a for raw),
    zzᵀ = yyᵀ + u1ᵀ + 1uᵀ + (cᵀc)11ᵀ, u = yc.
    """
    scale = power_of_two_scale(x)
    if scale != 1.0:  # tiny values: multiply the exactly rescaled rows (see moments)
        inner = gram_spectrum(rescaled(x, scale), center, k, n_dropped, ops)
        return dataclasses.replace(inner, eigenvalues=inner.eigenvalues * (scale * scale))
    n, d = x.shape
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    shift = x.sum(0, dtype=cdtype) / n
    y = torch.sub(x, shift)
    with exact_fp32_matmul():
        gram = (y @ y.T).to(torch.float64)
    if not bool(torch.isfinite(gram.diagonal()).all()):  # rows are finite: an overflow
        if cdtype == torch.float32:
            return gram_spectrum(x.to(torch.float64), center, k, n_dropped, ops)
        raise float64_overflow(x, "acts")
    c = -y.sum(0, dtype=torch.float64) / n if center else shift.to(torch.float64)
    y64 = y.to(torch.float64)
    u = y64 @ c
    gram += u[:, None] + u[None, :] + float(c @ c)
    values, vectors = ops.eigh(gram, k)
    if vectors is not None:
        ev = torch.from_numpy(vectors).to(y64.device)
        z_t_u = y64.T @ ev + c[:, None] * ev.sum(0)[None, :]
        vectors = (z_t_u / torch.linalg.vector_norm(z_t_u, dim=0)).cpu().numpy()
    return Spectrum(values / (n - 1), n, d, center, vectors, n_dropped)


def spectrum(
    acts: Any,
    *,
    center: bool = True,
    backend: str = "auto",
    top_k_eigenvectors: int = 0,
    nan_policy: str = "raise",
) -> Spectrum:
    """Eigenspectrum of the (ddof=1) covariance of N×d activations.

    ``acts``: torch tensor (any device), NumPy array, or anything with ``__dlpack__``;
    bfloat16, float16, float32 or float64. Rows are samples. Low-precision input is upcast
    to float32 as it is read; products are formed per chunk in float32 (float64 for float64
    input) after centring each chunk, merged in float64 (Chan et al.), and the eigenvalues
    are computed in float64 (DESIGN.md, numerical conventions).

    When N ≥ d the input is streamed in chunks through a :class:`CovarianceAccumulator`
    (no N×d copy); when N < d the N×N Gram matrix is used. ``center=False`` gives the raw
    second-moment spectrum (Garrido et al.'s RankMe: ``rankme(spectrum(X, center=False),
    convention="sv")``). ``top_k_eigenvectors=k`` also returns the k leading eigenvectors.
    ``backend``: "auto" uses fastspec's CUDA kernels for input on a CUDA device when they are
    available (``fastspec.backends()``) and the torch path otherwise; "torch" forces the torch
    path on the input's device; "cuda" requires the kernels (NotImplementedError saying why
    when they are not available) and moves input from the CPU to the current CUDA device
    chunk by chunk. The kernels keep the same numerical contract (float32 products of
    centred chunks, float64 merges and eigensolver: cuSOLVER's cusolverDnXsyevd); when
    N < d the N×N Gram product is a torch matmul and only its eigensolve uses them.
    """
    if check_backend(backend) == "cuda":
        cuda_kernels.require("backend='cuda'")  # before the input is read
    check_nan_policy(nan_policy)
    x = as_matrix(acts)
    n, d = x.shape
    if n >= 2:  # refuse a bad k before the pass over the data, not after
        check_k(top_k_eigenvectors, n, d, center)
    # backend="cuda" moves CPU input to the current CUDA device, chunk by chunk
    device = placement(backend, x.device if x.is_cuda or backend != "cuda" else None)
    assert device is not None
    if n >= d:
        acc = CovarianceAccumulator(d, device=device, nan_policy=nan_policy, backend=backend)
        acc.update(x, name="acts")
        if acc.n_samples < 2:
            raise ValueError(f"acts: a spectrum needs at least 2 finite rows, got {acc.n_samples} (shape {tuple(x.shape)})")
        return acc.spectrum(center=center, top_k_eigenvectors=top_k_eigenvectors)
    keep = nonfinite_rows(x, "acts", nan_policy)
    n_dropped = 0 if keep is None else int((~keep).sum())
    if keep is not None:
        x = x[keep]
    if x.shape[0] < 2:
        raise ValueError(f"acts: a spectrum needs at least 2 finite rows, got {x.shape[0]} (shape {(n, d)})")
    k = check_k(top_k_eigenvectors, x.shape[0], d, center)
    warn_dropped(n_dropped, stacklevel=2)
    x = x.to(device)
    return gram_spectrum(x, center, k, n_dropped, ops_for(backend, x.device))


def summarize(acc: CovarianceAccumulator, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE) -> dict[str, Any]:
    """:func:`~fastspec.spectral.eigen.metrics_of` the accumulator's centred and raw spectra
    (those of all its rows, without jackknife errors: ``acc.metrics(fit_range=...).to_dict()``
    adds them for an accumulator with folds)."""
    return metrics_of(acc.spectrum(), acc.spectrum(center=False), fit_range=fit_range)
