"""The :class:`Spectrum` result type and the eigensolver under it.

Only eigenvalues are computed unless eigenvectors are asked for (DESIGN.md); the solve is
float64 on either path (torch.linalg, or cuSOLVER through :mod:`fastspec.spectral.kernels`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import kernels as cuda_kernels
from .metrics import AlphaFit, SpectrumTooShort, alpha_req, check_fit_range, rankme


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of a (ddof=1) covariance, descending, float64.

    ``eigenvalues`` holds the min(n_samples, dim) leading ones (the rest are structurally
    zero). ``centered=False`` means the raw second-moment matrix XᵀX/(n−1).
    ``eigenvectors`` (dim × k, columns in eigenvalue order) is present only when asked for.
    """

    eigenvalues: np.ndarray
    n_samples: int
    dim: int
    centered: bool = True
    eigenvectors: np.ndarray | None = field(default=None, repr=False)
    n_dropped: int = 0

    @property
    def rank_bound(self) -> int:
        """The most non-zero eigenvalues these samples allow: min(N − 1, d) centred, min(N, d)
        raw. RankMe cannot exceed it."""
        return min(self.n_samples - 1 if self.centered else self.n_samples, self.dim)

    @property
    def rank_limited(self) -> bool:
        """Whether the samples, not the dimension, bound the rank (N − 1 < d centred): RankMe
        then measures N as much as the representation."""
        return self.rank_bound < self.dim

    @property
    def rankme(self) -> float:
        """RankMe, ``convention="eig"`` (see :func:`fastspec.rankme`)."""
        return rankme(self)

    @property
    def alpha_fit(self) -> AlphaFit:
        """The alpha-ReQ fit with the default range (see :func:`fastspec.alpha_req`)."""
        return alpha_req(self)

    @property
    def alpha(self) -> float:
        return self.alpha_fit.alpha

    def to_dict(self, *, fit_range: tuple[int, int] = (11, 100), eigenvalues: bool = True) -> dict[str, Any]:
        """JSON-ready summary. If the spectrum is too short for ``fit_range``, the alpha
        fields are None and ``alpha_error`` says why."""
        out: dict[str, Any] = {
            "n_samples": self.n_samples,
            "dim": self.dim,
            "centered": self.centered,
            "n_dropped": self.n_dropped,
            "rankme": rankme(self),
            # N ≤ d: the spectrum has at most N − 1 (centred) non-zero eigenvalues, and RankMe
            # cannot exceed that bound whatever the representation.
            "rank_bound": self.rank_bound,
            "rank_limited": self.rank_limited,
        }
        check_fit_range(fit_range)  # a malformed range is the caller's error, not a result
        try:
            out.update({f"alpha_{k}" if k != "alpha" else k: v for k, v in alpha_req(self, fit_range=fit_range).to_dict().items()})
        except SpectrumTooShort as err:
            out.update(alpha=None, alpha_intercept=None, alpha_r2=None, alpha_fit_range=list(fit_range),
                       alpha_weighted=True, alpha_error=str(err))
        if eigenvalues:
            out["eigenvalues"] = self.eigenvalues.tolist()
        return out


def eigh(sym: torch.Tensor, k: int, kernels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Descending eigenvalues of a float64 matrix whose upper triangle defines it (the lower
    is not read), and the top-k eigenvectors. The one place that decides how eigenproblems
    are solved: with ``kernels`` (the caller's :func:`~fastspec.spectral.backend.use_kernels`,
    true only for a CUDA device), by cuSOLVER's cusolverDnXsyevd (values and, when asked,
    vectors, in one call), else by torch.linalg (float64). A matrix cuSOLVER fails on is
    solved on the CPU instead, with a warning: never a crash, never a wrong number."""
    if kernels:
        try:
            return cuda_kernels.eigh(sym, k)
        except cuda_kernels.EigensolverFailed as err:
            warnings.warn(f"{err}; solving it on the CPU (torch.linalg, float64) instead", RuntimeWarning, stacklevel=2)
            sym = sym.cpu()
    if k:
        values, vectors = torch.linalg.eigh(sym, UPLO="U")
        return values.flip(0).cpu().numpy(), vectors[:, -k:].flip(1).cpu().numpy()
    return torch.linalg.eigvalsh(sym, UPLO="U").flip(0).cpu().numpy(), None


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
    kernels: bool = False,
) -> Spectrum:
    """Spectrum of the covariance scatter/(n−1), given the float64 d×d scatter matrix of
    ``n_samples`` rows by its upper triangle."""
    dim = scatter.shape[0]
    k = check_k(top_k_eigenvectors, n_samples, dim, center)
    warn_dropped(n_dropped, stacklevel=3)
    values, vectors = eigh(scatter, k, kernels)
    return Spectrum(values[: min(n_samples, dim)] / (n_samples - 1), n_samples, dim, center, vectors, n_dropped)


def metrics_of(centred: Spectrum, raw: Spectrum, *, fit_range: tuple[int, int] = (11, 100),
               eigenvalues: bool = True) -> dict[str, Any]:
    """Everything a trace records for one set of rows: the centred spectrum's metrics
    (:meth:`Spectrum.to_dict`), and Garrido et al.'s singular-value RankMe of the raw
    (uncentred) spectrum (``rankme_sv``)."""
    out = centred.to_dict(fit_range=fit_range, eigenvalues=eigenvalues)
    out["rankme_sv"] = rankme(raw, convention="sv")
    return out
