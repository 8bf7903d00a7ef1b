"""The spectral core's result records: a :class:`Spectrum`, the :class:`MetricsRecord` of a
set of rows (RankMe both ways, α and its fit, n, d, and jackknife standard errors with folds),
and the :class:`Jackknife` those come from.

:class:`MetricsRecord` is the one place that turns spectra into metrics and metrics into the
dict that trace's JSON files, ``fastspec spectrum`` and :func:`fastspec.spectral.summarize`
write; :meth:`Spectrum.to_dict`, ``metrics_of``, ``CovarianceAccumulator.metrics`` and the
torchmetrics metric are built on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .metrics import DEFAULT_FIT_RANGE, AlphaFit, SpectrumTooShort, alpha_req, check_fit_range, rankme


@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of a (ddof=1) covariance, descending, float64, and the metrics of them.

    What `fastspec.spectrum` and `fastspec.CovarianceAccumulator.spectrum` return; RankMe
    and α are properties, computed when read.

    Parameters
    ----------
    eigenvalues : numpy.ndarray
        The min(n_samples, dim) leading eigenvalues, descending, float64 (the rest are
        structurally zero: this is what an SVD or scikit-learn's PCA returns).
    n_samples : int
        N, the rows the covariance was computed from (dropped rows not counted).
    dim : int
        d, the number of features.
    centered : bool, default True
        True: the covariance Σ(x − μ)(x − μ)ᵀ/(n−1); False: the raw second-moment matrix
        XᵀX/(n−1) (for Garrido et al.'s RankMe).
    eigenvectors : numpy.ndarray, optional
        dim × k, columns in eigenvalue order; present only when asked for
        (``top_k_eigenvectors=k``).
    n_dropped : int, default 0
        Rows left out for holding NaN or Inf (``nan_policy="omit"``).

    See Also
    --------
    fastspec.spectrum : The spectrum of an N×d array.
    fastspec.CovarianceAccumulator.spectrum : The spectrum of streamed rows.

    Examples
    --------
    Activations whose covariance has eigenvalues 1/r (a power law of exponent 1):

    >>> acts = np.random.default_rng(0).standard_normal((2000, 128)) * np.arange(1, 129) ** -0.5
    >>> s = fastspec.spectrum(acts)
    >>> s.n_samples, s.dim, s.eigenvalues.shape, s.rank_bound
    (2000, 128, (128,), 128)
    >>> bool(np.all(np.diff(s.eigenvalues) <= 0))  # descending
    True
    >>> round(s.rankme, 2), round(s.alpha_fit.r2, 3)
    (46.93, 0.999)
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
        """α of the alpha-ReQ fit with the default range (``alpha_fit.alpha``; see
        :func:`fastspec.alpha_req`). Raises ValueError where the spectrum is too short for it."""
        return self.alpha_fit.alpha

    def to_dict(self, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE, eigenvalues: bool = True) -> dict[str, Any]:
        """A JSON-ready summary: the metrics of this spectrum, and its eigenvalues.

        The same record as trace's JSON files and ``fastspec spectrum`` write.

        Parameters
        ----------
        fit_range : tuple of int, default (11, 100)
            The α fit's 0-based (start, stop), as :func:`fastspec.alpha_req` takes it.
        eigenvalues : bool, default True
            Include the eigenvalues (as a list).

        Returns
        -------
        dict
            ``n_samples``, ``dim``, ``centered``, ``n_dropped``, ``rankme``, ``rank_bound``,
            ``rank_limited``, ``alpha``, ``alpha_intercept``, ``alpha_r2``,
            ``alpha_fit_range``, ``alpha_weighted``, then ``eigenvalues`` when asked for. If the
            spectrum is too short for ``fit_range``, the alpha fields are None and
            ``alpha_error`` says why.

        Raises
        ------
        ValueError
            A malformed ``fit_range``, or a spectrum that is all zeros.

        Examples
        --------
        >>> acts = np.random.default_rng(0).standard_normal((2000, 128)) * np.arange(1, 129) ** -0.5
        >>> d = fastspec.spectrum(acts).to_dict(fit_range=(2, 50))
        >>> round(d["rankme"], 2), round(d["alpha"], 2), d["alpha_fit_range"], len(d["eigenvalues"])
        (46.93, 0.99, [2, 50], 128)
        >>> d = fastspec.spectrum(acts[:, :64]).to_dict(eigenvalues=False)  # 64 < 100 eigenvalues
        >>> d["alpha"], d["alpha_error"]
        (None, 'fit_range (11, 100) needs at least 100 eigenvalues; ...')
        """
        return MetricsRecord.of(self, fit_range=fit_range).to_dict(eigenvalues=eigenvalues)


@dataclass(frozen=True)
class Jackknife:
    """RankMe (eig convention), Garrido's RankMe_sv (raw spectrum) and α of all the rows,
    each with its delete-one-fold jackknife standard error (:meth:`FoldedAccumulator.jackknife
    <fastspec.spectral.folds.FoldedAccumulator.jackknife>`). ``alpha`` and ``alpha_se`` are
    None when the spectrum (or one without a fold) is too short for ``fit_range``. ``error``
    says why the standard errors are NaN where they are undefined (the rows without some
    fold have no variance above rounding: degenerate data); None otherwise."""

    rankme: float
    rankme_se: float
    rankme_sv: float
    rankme_sv_se: float
    alpha: float | None
    alpha_se: float | None
    folds: int
    n_samples: int
    fit_range: tuple[int, int]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fit_range": list(self.fit_range)}


@dataclass(frozen=True)
class MetricsRecord:
    """The metrics of one set of rows: RankMe (``convention="eig"``) of the centred spectrum,
    Garrido et al.'s RankMe of the raw one (``rankme_sv``, None without it), the α-ReQ fit over
    ``alpha_fit_range`` (None fields and ``alpha_error`` saying why when the spectrum is too
    short), n, d, the rank bound, and with folds (``folds`` > 1) the jackknife standard errors
    (NaN, and ``jackknife_error`` saying why, where they are undefined).

    ``spectra`` holds the (centred, raw) :class:`Spectrum` pair the record was made from
    (excluded from :meth:`to_dict` but for ``eigenvalues=True``, and from comparisons): trace
    saves their eigenvalues.
    """

    n_samples: int
    dim: int
    centered: bool
    n_dropped: int
    rankme: float
    rank_bound: int
    rank_limited: bool
    alpha: float | None
    alpha_intercept: float | None
    alpha_r2: float | None
    alpha_fit_range: tuple[int, int]
    alpha_weighted: bool
    alpha_error: str | None = None
    rankme_sv: float | None = None
    folds: int = 1
    rankme_se: float | None = None
    rankme_sv_se: float | None = None
    alpha_se: float | None = None
    jackknife_error: str | None = None
    spectra: tuple[Spectrum, Spectrum | None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, centred: Spectrum, raw: Spectrum | None = None, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE,
           jackknife: Jackknife | None = None) -> "MetricsRecord":
        """The record of ``centred`` (and of ``raw``, the same rows' uncentred spectrum, for
        ``rankme_sv``), with ``jackknife``'s standard errors (over the same rows and
        ``fit_range``) when given. A malformed ``fit_range`` is a ValueError (the caller's
        error, not a result); a spectrum too short for it gives None α fields and the reason."""
        rankme_eig = rankme(centred)  # first: an all-zero spectrum is refused as RankMe refuses it
        check_fit_range(fit_range)
        try:
            fit: AlphaFit | None = alpha_req(centred, fit_range=fit_range)
            error = None
        except SpectrumTooShort as err:
            fit, error = None, str(err)
        if jackknife is not None and (jackknife.n_samples, tuple(jackknife.fit_range)) != \
                (centred.n_samples, tuple(fit_range)):
            raise ValueError(f"the jackknife is of {jackknife.n_samples} rows over fit_range "
                             f"{tuple(jackknife.fit_range)}, the spectrum of {centred.n_samples} rows over "
                             f"{tuple(fit_range)}: they must describe the same rows and range")
        return cls(
            n_samples=centred.n_samples, dim=centred.dim, centered=centred.centered, n_dropped=centred.n_dropped,
            rankme=rankme_eig, rank_bound=centred.rank_bound, rank_limited=centred.rank_limited,
            alpha=fit.alpha if fit else None, alpha_intercept=fit.intercept if fit else None,
            alpha_r2=fit.r2 if fit else None, alpha_fit_range=fit.fit_range if fit else tuple(fit_range),
            alpha_weighted=fit.weighted if fit else True, alpha_error=error,
            rankme_sv=rankme(raw, convention="sv") if raw is not None else None,
            folds=jackknife.folds if jackknife else 1, rankme_se=jackknife.rankme_se if jackknife else None,
            rankme_sv_se=jackknife.rankme_sv_se if jackknife else None,
            alpha_se=jackknife.alpha_se if jackknife else None,
            jackknife_error=jackknife.error if jackknife else None, spectra=(centred, raw),
        )

    @property
    def alpha_or_nan(self) -> float:
        """α, or NaN where the spectrum is too short for the fit range (for tables)."""
        return math.nan if self.alpha is None else self.alpha

    def to_dict(self, *, eigenvalues: bool = False) -> dict[str, Any]:
        """JSON-ready: n_samples, dim, centered, n_dropped, rankme, rank_bound, rank_limited,
        alpha, alpha_intercept, alpha_r2, alpha_fit_range, alpha_weighted, then ``alpha_error``
        only when α failed, the centred ``eigenvalues`` when asked for, ``rankme_sv`` when a
        raw spectrum was given, ``rankme_se``, ``rankme_sv_se``, ``alpha_se`` only with folds,
        and ``jackknife_error`` only when those are NaN for a reason. (This order is what trace's JSON files and ``fastspec spectrum`` have always
        written.)"""
        out: dict[str, Any] = {
            "n_samples": self.n_samples,
            "dim": self.dim,
            "centered": self.centered,
            "n_dropped": self.n_dropped,
            "rankme": self.rankme,
            # N ≤ d: the spectrum has at most N − 1 (centred) non-zero eigenvalues, and RankMe
            # cannot exceed that bound whatever the representation.
            "rank_bound": self.rank_bound,
            "rank_limited": self.rank_limited,
            "alpha": self.alpha,
            "alpha_intercept": self.alpha_intercept,
            "alpha_r2": self.alpha_r2,
            "alpha_fit_range": list(self.alpha_fit_range),
            "alpha_weighted": self.alpha_weighted,
        }
        if self.alpha_error is not None:
            out["alpha_error"] = self.alpha_error
        if eigenvalues:
            if self.spectra is None:
                raise ValueError("this record holds no spectra (it was not made by MetricsRecord.of): "
                                 "pass eigenvalues=False")
            out["eigenvalues"] = self.spectra[0].eigenvalues.tolist()
        if self.rankme_sv is not None:
            out["rankme_sv"] = self.rankme_sv
        if self.folds > 1:
            out.update(rankme_se=self.rankme_se, rankme_sv_se=self.rankme_sv_se, alpha_se=self.alpha_se)
            if self.jackknife_error is not None:
                out["jackknife_error"] = self.jackknife_error
        return out
