"""The spectrum of a scatter matrix (:func:`spectrum_of_scatter`), and its checks.

The result types (:class:`~fastspec.spectral.record.Spectrum`, the metrics record) live in
:mod:`fastspec.spectral.record`; ``Spectrum`` and :func:`metrics_of` are importable from here
too, where callers have always found them. Only eigenvalues are computed unless eigenvectors are asked for (DESIGN.md); the solve is
float64 on either path (the caller's ops: torch.linalg, or cuSOLVER through
:class:`fastspec.spectral.kernels.CudaOps`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .metrics import DEFAULT_FIT_RANGE
from .moments import TORCH, Ops
from .record import MetricsRecord, Spectrum


def warn_dropped(n_dropped: int, stacklevel: int) -> None:
    if n_dropped:
        warnings.warn(f"dropped {n_dropped} row(s) with non-finite values (nan_policy='omit')", stacklevel=stacklevel + 1)


def check_k(k: Any, n_samples: int, dim: int, center: bool) -> int:
    """k ≤ the rank the data can have: min(N − 1, d) centred, min(N, d) raw; beyond it the
    eigenvectors span a null space and are arbitrary."""
    limit = min(n_samples - 1 if center else n_samples, dim)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k <= limit:
        rank = "min(N − 1, d)" if center else "min(N, d)"
        raise ValueError(f"top_k_eigenvectors must be an integer in [0, {rank} = {limit}], got {k!r}")
    return int(k)


def spectrum_of_scatter(
    scatter: torch.Tensor, *, n_samples: int, center: bool, top_k_eigenvectors: int = 0, n_dropped: int = 0,
    ops: Ops = TORCH,
) -> Spectrum:
    """Spectrum of the covariance scatter/(n−1), given the float64 d×d scatter matrix of
    ``n_samples`` rows by its upper triangle, solved by ``ops`` (the torch path by default)."""
    dim = scatter.shape[0]
    k = check_k(top_k_eigenvectors, n_samples, dim, center)
    warn_dropped(n_dropped, stacklevel=3)
    values, vectors = ops.eigh(scatter, k)
    return Spectrum(values[: min(n_samples, dim)] / (n_samples - 1), n_samples, dim, center, vectors, n_dropped)


def metrics_of(centred: Spectrum, raw: Spectrum, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE,
               eigenvalues: bool = True) -> dict[str, Any]:
    """Everything a trace records for one set of rows, as a dict: the centred spectrum's
    metrics and Garrido et al.'s singular-value RankMe of the raw (uncentred) spectrum
    (``rankme_sv``). ``MetricsRecord.of(centred, raw, fit_range=...).to_dict(eigenvalues=...)``
    (:class:`~fastspec.spectral.record.MetricsRecord`), kept for its callers."""
    return MetricsRecord.of(centred, raw, fit_range=fit_range).to_dict(eigenvalues=eigenvalues)
