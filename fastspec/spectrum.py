"""The eigenspectrum of activations' covariance, and the Spectrum result type."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import _cuda
from ._inputs import as_matrix, check_nan_policy, nonfinite_rows
from .accumulator import BACKENDS, CovarianceAccumulator, exact_fp32_matmul, float64_overflow
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


def _eigh(sym: torch.Tensor, k: int, kernels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Descending eigenvalues of a float64 matrix whose upper triangle defines it (the lower
    is not read), and the top-k eigenvectors. ``kernels``: on a CUDA device, solve with
    cuSOLVER's cusolverDnXsyevd (values) and cusolverDnXsyevdx (top-k vectors only)."""
    if kernels and sym.is_cuda:
        return _cuda.eigh(sym, k)
    if k:
        values, vectors = torch.linalg.eigh(sym, UPLO="U")
        return values.flip(0).cpu().numpy(), vectors[:, -k:].flip(1).cpu().numpy()
    return torch.linalg.eigvalsh(sym, UPLO="U").flip(0).cpu().numpy(), None


def _warn_dropped(n_dropped: int, stacklevel: int) -> None:
    if n_dropped:
        warnings.warn(f"dropped {n_dropped} row(s) with non-finite values (nan_policy='omit')", stacklevel=stacklevel + 1)


def _check_k(k: Any, n_samples: int, dim: int, center: bool) -> int:
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
    k = _check_k(top_k_eigenvectors, n_samples, dim, center)
    _warn_dropped(n_dropped, stacklevel=3)
    values, vectors = _eigh(scatter, k, kernels)
    return Spectrum(values[: min(n_samples, dim)] / (n_samples - 1), n_samples, dim, center, vectors, n_dropped)


def _gram_spectrum(x: torch.Tensor, center: bool, k: int, n_dropped: int, kernels: bool = False) -> Spectrum:
    """N < d: the N×N Gram matrix has the same non-zero spectrum at lower cost.

    Rows are shifted by their float32 mean (exact subtraction for values near it), the Gram
    product is formed in the compute dtype, and the shift is undone exactly in float64:
    with y = x − 1aᵀ and target rows z = y + 1cᵀ (c = −mean(y) to centre, c = a for raw),
    zzᵀ = yyᵀ + u1ᵀ + 1uᵀ + (cᵀc)11ᵀ, u = yc.
    """
    n, d = x.shape
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    shift = x.sum(0, dtype=cdtype) / n
    y = torch.sub(x, shift)
    with exact_fp32_matmul():
        gram = (y @ y.T).to(torch.float64)
    if not bool(torch.isfinite(gram.diagonal()).all()):  # rows are finite: an overflow
        if cdtype == torch.float32:
            return _gram_spectrum(x.to(torch.float64), center, k, n_dropped, kernels)
        raise float64_overflow(x, "acts")
    c = -y.sum(0, dtype=torch.float64) / n if center else shift.to(torch.float64)
    y64 = y.to(torch.float64)
    u = y64 @ c
    gram += u[:, None] + u[None, :] + float(c @ c)
    values, vectors = _eigh(gram, k, kernels)
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
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda":
        _cuda.require("backend='cuda'")
    check_nan_policy(nan_policy)
    x = as_matrix(acts)
    n, d = x.shape
    if n >= 2:  # refuse a bad k before the pass over the data, not after
        _check_k(top_k_eigenvectors, n, d, center)
    device = x.device
    if backend == "cuda":
        if device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        _cuda.require("backend='cuda'", device)
    if n >= d:
        acc = CovarianceAccumulator(d, device=device, nan_policy=nan_policy, backend=backend)
        acc._update(x, "acts")
        if acc.n_samples < 2:
            raise ValueError(f"acts: a spectrum needs at least 2 finite rows, got {acc.n_samples} (shape {tuple(x.shape)})")
        return acc.spectrum(center=center, top_k_eigenvectors=top_k_eigenvectors)
    keep = nonfinite_rows(x, "acts", 0, nan_policy)
    n_dropped = 0 if keep is None else int((~keep).sum())
    if keep is not None:
        x = x[keep]
    if x.shape[0] < 2:
        raise ValueError(f"acts: a spectrum needs at least 2 finite rows, got {x.shape[0]} (shape {(n, d)})")
    k = _check_k(top_k_eigenvectors, x.shape[0], d, center)
    _warn_dropped(n_dropped, stacklevel=2)
    x = x.to(device)
    kernels = backend != "torch" and x.is_cuda and _cuda.available(x.device)
    return _gram_spectrum(x, center, k, n_dropped, kernels)


def metrics_of(centred: Spectrum, raw: Spectrum, *, fit_range: tuple[int, int] = (11, 100),
               eigenvalues: bool = True) -> dict[str, Any]:
    """Everything a trace records for one set of rows: the centred spectrum's metrics
    (:meth:`Spectrum.to_dict`), and Garrido et al.'s singular-value RankMe of the raw
    (uncentred) spectrum (``rankme_sv``)."""
    out = centred.to_dict(fit_range=fit_range, eigenvalues=eigenvalues)
    out["rankme_sv"] = rankme(raw, convention="sv")
    return out


def summarize(acc: CovarianceAccumulator, *, fit_range: tuple[int, int] = (11, 100)) -> dict[str, Any]:
    """:func:`metrics_of` the accumulator's centred and raw spectra."""
    return metrics_of(acc.spectrum(), acc.spectrum(center=False), fit_range=fit_range)
