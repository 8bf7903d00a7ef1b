"""Independent float64 references (NumPy/SciPy only, never fastspec's code) and data makers."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def ref_eigenvalues(x, center: bool = True) -> np.ndarray:
    """Descending eigenvalues of the ddof=1 covariance (raw XᵀX/(n−1) when not centred),
    the min(n, d) leading ones, all in float64 with SciPy's LAPACK."""
    x = np.asarray(x.double().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    n, d = x.shape
    if center:
        x = x - x.mean(axis=0)
    values = scipy.linalg.eigvalsh(x.T @ x / (n - 1))[::-1]
    return values[: min(n, d)]


def ref_rankme(values: np.ndarray, eps: float = 1e-7, sv: bool = False, top: int | None = None) -> float:
    v = np.sort(np.abs(np.asarray(values, dtype=np.float64)))[::-1][:top]
    if sv:
        v = np.sqrt(v)
    p = v / v.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def ref_alpha(values: np.ndarray, start: int = 11, stop: int = 100) -> tuple[float, float]:
    """(alpha, intercept) by np.polyfit; polyfit weights multiply residuals, so weights 1/r
    on squared residuals are w = 1/sqrt(r)."""
    v = np.sort(np.abs(np.asarray(values, dtype=np.float64)))[::-1]
    r = np.arange(start, stop) + 1.0
    slope, intercept = np.polyfit(np.log(r), np.log(v[start:stop]), 1, w=1 / np.sqrt(r))
    return -slope, intercept


def make_activations(n: int, lam: np.ndarray, *, mean: np.ndarray | None = None, seed: int = 0,
                     dtype=torch.float32) -> torch.Tensor:
    """n rows with population covariance Q diag(lam) Qᵀ (Q a random rotation) and a mean."""
    gen = torch.Generator().manual_seed(seed)
    d = lam.size
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    x = (torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.from_numpy(np.sqrt(lam))) @ q.T
    if mean is not None:
        x = x + torch.from_numpy(mean)
    return x.to(dtype)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)
