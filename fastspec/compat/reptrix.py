"""Reptrix's ``get_rankme`` and ``get_alpha`` (pip ``reptrix``: ``reptrix.rankme``,
``reptrix.alpha``) with their signatures and return values, computed by fastspec.

A Reptrix user changes one import::

    from fastspec.compat.reptrix import get_alpha, get_rankme   # was: from reptrix.rankme import get_rankme …

What Reptrix does, and so what these do: flatten the activations to (batch, features),
centre them, and take the eigenspectrum of their covariance as scikit-learn's PCA
``explained_variance_ratio_`` (each eigenvalue over the total variance), cut to the
``max_eigenvals`` largest. RankMe is the entropy effective rank of those (p = λ/‖λ‖₁ + 1e-7);
α is the weighted (1/rank) least-squares slope of log λ over the 0-based indices
``fit_range`` (default ``np.arange(10, 100)``), and its goodness of fit is scored as Reptrix
scores it (R² of the log spectrum from index ``fit_range[0] + 1``, to index 500, or to 10
before the end of a spectrum shorter than 512, and to index 100). Where fastspec differs:
one float64 eigensolve of the d × d covariance per call instead of a full SVD (the numbers
agree to rounding; 4.7–5× faster than Reptrix at N = 15000, d = 2048 on two CPU cores,
``benchmarks/test_bench_compat.py``), and
``fit_range`` is not incremented in place (Reptrix adds 1 to the caller's array).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..spectral.metrics import alpha_req, rankme
from ..spectral.oneshot import spectrum

__all__ = ["get_alpha", "get_rankme"]


def _check_max_eigenvals(max_eigenvals: Any) -> int:
    """``max_eigenvals`` as an int, refused where Reptrix refuses it (scikit-learn's PCA takes
    it as ``n_components`` and rejects a negative or fractional count), and at 0 too, where
    Reptrix returns RankMe 1 of an empty spectrum. A negative count must not slice from the end."""
    if not isinstance(max_eigenvals, (int, np.integer)):
        raise TypeError(f"max_eigenvals must be a positive integer, got {max_eigenvals!r}")
    if max_eigenvals < 1:
        raise ValueError(f"max_eigenvals must be a positive integer (how many of the largest eigenvalues to keep), "
                         f"got {max_eigenvals}")
    return int(max_eigenvals)


def _ratios(activations: Any, max_eigenvals: int) -> np.ndarray:
    """PCA's ``explained_variance_ratio_`` of the flattened, centred activations."""
    max_eigenvals = _check_max_eigenvals(max_eigenvals)
    x = activations.detach() if hasattr(activations, "detach") else activations
    x = x.reshape(x.shape[0], -1)
    lam = spectrum(x).eigenvalues
    return lam[: min(max_eigenvals, x.shape[0], x.shape[1])] / lam.sum()


def get_rankme(activations: Any, max_eigenvals: int = 2048) -> float:
    """RankMe (Garrido et al., 2023) as Reptrix computes it.

    The effective rank of the ``max_eigenvals`` largest eigenvalues of the activations'
    covariance, each over the total variance (scikit-learn PCA's
    ``explained_variance_ratio_``): p = λ/‖λ‖₁ + 1e-7, RankMe = exp(−Σ p log p).

    Parameters
    ----------
    activations : torch.Tensor or numpy.ndarray
        (batch, ...) activations, flattened to (batch, features) and centred.
    max_eigenvals : int, default 2048
        How many of the largest eigenvalues to keep (so the result cannot exceed it).

    Returns
    -------
    float
        RankMe, equal to Reptrix's to rounding.

    Raises
    ------
    ValueError
        ``max_eigenvals`` below 1 (Reptrix refuses a negative count; at 0 it returns 1).
    TypeError
        ``max_eigenvals`` not an integer (Reptrix refuses it too).

    See Also
    --------
    fastspec.rankme : The same with ``max_eigenvalues=2048`` on ``fastspec.spectrum(X)``.

    Examples
    --------
    >>> from fastspec.compat.reptrix import get_rankme
    >>> acts = np.random.default_rng(0).standard_normal((2000, 128)) * np.arange(1, 129) ** -0.5
    >>> round(get_rankme(acts), 2), round(get_rankme(torch.from_numpy(acts).reshape(2000, 8, 16)), 2)
    (46.93, 46.93)
    >>> round(get_rankme(acts, max_eigenvals=64), 2)
    29.84
    """
    return rankme(_ratios(activations, max_eigenvals))


def _r2(y: np.ndarray, yhat: np.ndarray) -> float:
    """scikit-learn's ``r2_score``."""
    return float(1.0 - np.sum((y - yhat) ** 2) / np.sum((y - y.mean()) ** 2))


def get_alpha(activations: Any, max_eigenvals: int = 2048, fit_range: np.ndarray | None = None) -> tuple:
    """α-ReQ as Reptrix computes it.

    The weighted (1/rank) least-squares slope of log λ over the 0-based indices ``fit_range``
    of the ``max_eigenvals`` largest explained-variance ratios of the activations.

    Parameters
    ----------
    activations : torch.Tensor or numpy.ndarray
        (batch, ...) activations, flattened to (batch, features) and centred.
    max_eigenvals : int, default 2048
        How many of the largest eigenvalues to keep.
    fit_range : numpy.ndarray, optional
        A run of consecutive 0-based indices (default ``np.arange(10, 100)``). Unlike
        Reptrix, the caller's array is not incremented in place.

    Returns
    -------
    alpha : float
        The decay exponent α.
    ypred : numpy.ndarray
        The fitted power law at every rank of the spectrum kept.
    fit_R2 : float
        R² of the log spectrum from index ``fit_range[0] + 1`` to index 500 (or to 10
        before the end of a spectrum shorter than 512), as Reptrix scores it.
    fit_R2_100 : float or None
        The same to index 100 (None where that range is empty).

    Raises
    ------
    ValueError
        A ``fit_range`` that is not a run of consecutive indices, or reaches past the
        spectrum (min(batch, features, max_eigenvals) eigenvalues); ``max_eigenvals`` below 1.
    TypeError
        ``max_eigenvals`` not an integer.

    See Also
    --------
    fastspec.alpha_req : The same fit, ``fit_range=(10, 100)`` for Reptrix's range.

    Examples
    --------
    >>> from fastspec.compat.reptrix import get_alpha
    >>> acts = np.random.default_rng(0).standard_normal((2000, 128)) * np.arange(1, 129) ** -0.5
    >>> alpha, ypred, fit_r2, fit_r2_100 = get_alpha(acts)
    >>> round(alpha, 2), ypred.shape, round(fit_r2, 3), round(fit_r2_100, 3)
    (1.03, (128,), 0.996, 0.999)
    """
    eigen = _ratios(activations, max_eigenvals)
    idx = np.arange(10, 100) if fit_range is None else np.asarray(fit_range)
    if idx.ndim != 1 or idx.size < 2 or not np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        raise ValueError("fit_range must be a run of consecutive indices such as np.arange(10, 100), got "
                         f"{np.asarray(fit_range)!r}")
    start, stop = int(idx[0]), int(idx[-1]) + 1
    if stop > eigen.size:
        raise ValueError(f"fit_range reaches index {stop - 1}, but the spectrum has {eigen.size} eigenvalues "
                         f"(min(batch, features, max_eigenvals={max_eigenvals}))")
    fit = alpha_req(eigen, fit_range=(start, stop))
    ypred = fit.predict(np.arange(1, eigen.size + 1))
    logs, logp = np.log(np.abs(eigen)), np.log(np.abs(ypred))
    # Reptrix scores from fit_range[0] + 1: it increments its range array before slicing.
    first = start + 1
    max_range = 500 if eigen.size >= 512 else eigen.size - 10
    fit_r2 = _r2(logs[first:max_range], logp[first:max_range])
    fit_r2_100 = _r2(logs[first:100], logp[first:100]) if min(100, eigen.size) - first >= 2 else None
    return fit.alpha, ypred, fit_r2, fit_r2_100
