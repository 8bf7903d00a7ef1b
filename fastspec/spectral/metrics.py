"""Scalar summaries of an eigenspectrum: RankMe and the power-law exponent alpha (alpha-ReQ).

Both take a :class:`fastspec.Spectrum` or a plain array of eigenvalues, in any order (they
are sorted in descending order first, as the conventions rank them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RANKME_CONVENTIONS = ("eig", "sv")
#: α-ReQ's default fit range: 0-based indices [11, 100), ranks 12..100, the seed paper's
#: scripts' (Reptrix uses (10, 100)). Every default in fastspec refers to this one.
DEFAULT_FIT_RANGE = (11, 100)


class SpectrumTooShort(ValueError):
    """The spectrum has fewer (non-zero) eigenvalues than the fit range needs."""


def eigenvalues_of(x: Any) -> np.ndarray:
    """Descending float64 eigenvalues of a Spectrum or of an array-like, checked."""
    values = getattr(x, "eigenvalues", x)
    if hasattr(values, "detach"):  # a torch tensor
        if values.is_complex():
            raise TypeError(f"eigenvalues must be real, got a complex tensor ({values.dtype})")
        values = values.detach().cpu().double().numpy()
    if np.iscomplexobj(values):
        raise TypeError("eigenvalues must be real, got complex values (a covariance spectrum is real; "
                        "pass .real if the imaginary parts are rounding noise)")
    lam = np.asarray(values, dtype=np.float64)
    if lam.ndim != 1:
        raise ValueError(f"eigenvalues must be 1-D, got shape {lam.shape}")
    if lam.size == 0:
        raise ValueError("eigenvalues are empty: no spectrum to summarise")
    if not np.isfinite(lam).all():
        raise ValueError(f"eigenvalues contain {int((~np.isfinite(lam)).sum())} non-finite value(s)")
    return np.sort(lam)[::-1]


def rankme(
    spectrum_or_eigenvalues: Any,
    *,
    convention: str = "eig",
    eps: float = 1e-7,
    max_eigenvalues: int | None = None,
) -> float:
    """RankMe, the exponential of the entropy of the normalised spectrum.

    Parameters
    ----------
    spectrum_or_eigenvalues : fastspec.Spectrum or array_like
        A spectrum, or its eigenvalues (1-D, real, finite; any order: they are sorted in
        descending order first). A torch tensor is read as float64.
    convention : {"eig", "sv"}, default "eig"
        ``"eig"`` (the seed paper, Reptrix, fastssl): ``p_i = |λ_i| / Σ|λ| + ε`` over the
        eigenvalues given (a `fastspec.Spectrum` holds the min(N, d) leading ones).
        ``"sv"`` (Garrido et al., 2023): the same on singular values ``σ_i = sqrt(|λ_i|)``.
        Garrido's RankMe uses the raw, uncentred matrix:
        ``rankme(spectrum(X, center=False), convention="sv")``.
    eps : float, default 1e-7
        ε, added to every p_i after normalisation (so that log p is defined); at least 0.
    max_eigenvalues : int, optional
        Keep only the k largest first. ``max_eigenvalues=2048`` reproduces Reptrix's
        ``get_rankme`` and the seed paper's scripts (scikit-learn PCA with at most 2048
        components), whose RankMe cannot exceed 2048.

    Returns
    -------
    float
        RankMe = exp(−Σ p_i log p_i), natural log: between 1 (one direction) and the
        number of eigenvalues kept (a flat spectrum).

    Raises
    ------
    ValueError
        An unknown ``convention``, a negative ``eps``, a ``max_eigenvalues`` that is not a
        positive integer, empty, non-finite or not 1-D eigenvalues, or all of them zero
        (constant input: RankMe is undefined).
    TypeError
        Complex eigenvalues.

    See Also
    --------
    fastspec.alpha_req : The other summary of a spectrum, its power-law decay.
    fastspec.Spectrum.rankme : This function with its defaults, on a spectrum.

    Notes
    -----
    The convention table of the documentation compares these with Reptrix, Garrido et al.
    and scikit-learn. The spectrum is divided by its largest value before normalising, which
    leaves p unchanged and keeps the sum finite for eigenvalues near 1e308.

    Examples
    --------
    >>> lam = np.array([4.0, 2.0, 1.0, 1.0])
    >>> round(fastspec.rankme(lam), 3)
    3.364
    >>> round(fastspec.rankme(lam, convention="sv"), 3)
    3.828
    >>> round(fastspec.rankme(lam, max_eigenvalues=2), 3)
    1.89
    >>> round(fastspec.rankme(np.ones(10)), 3)  # a flat spectrum: as many as it has
    10.0
    """
    if convention not in RANKME_CONVENTIONS:
        raise ValueError(f"convention must be one of {RANKME_CONVENTIONS}, got {convention!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    lam = np.abs(eigenvalues_of(spectrum_or_eigenvalues))
    if max_eigenvalues is not None:
        if int(max_eigenvalues) != max_eigenvalues or max_eigenvalues < 1:
            raise ValueError(f"max_eigenvalues must be a positive integer, got {max_eigenvalues!r}")
        lam = lam[: int(max_eigenvalues)]
    v = np.sqrt(lam) if convention == "sv" else lam
    if v.max() == 0:
        raise ValueError("all eigenvalues are zero (constant input?): RankMe is undefined")
    v = v / v.max()  # the same p, and a sum that cannot overflow (λ near 1e308)
    p = v / v.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


@dataclass(frozen=True)
class AlphaFit:
    """A power-law fit λ_r ≈ exp(intercept) · r^(−alpha) over 0-based indices [start, stop).

    What `fastspec.alpha_req` returns (and `fastspec.Spectrum.alpha_fit`).

    Parameters
    ----------
    alpha : float
        The decay exponent α (larger: a steeper spectrum, fewer effective directions).
    intercept : float
        The fitted log λ at rank 1.
    r2 : float
        The coefficient of determination of log|λ| over the fitted range (unweighted).
        Reptrix's ``r2_100`` differs slightly: its range array is incremented in place before
        scoring, so it scores a (10, 100) fit over indices 11..99.
    fit_range : tuple of int
        The 0-based indices (start, stop) fitted: ranks start + 1 .. stop.
    weighted : bool
        Whether the least squares weighted rank r by 1/r.

    See Also
    --------
    fastspec.alpha_req : Makes it.

    Examples
    --------
    >>> fit = fastspec.alpha_req(np.arange(1, 201.0) ** -1.5)
    >>> round(fit.alpha, 3), round(fit.r2, 3), fit.fit_range
    (1.5, 1.0, (11, 100))
    """

    alpha: float
    intercept: float
    r2: float
    fit_range: tuple[int, int]
    weighted: bool

    def predict(self, ranks: Any) -> np.ndarray:
        """The fitted eigenvalues at ``ranks``.

        Parameters
        ----------
        ranks : array_like
            1-based ranks (any shape; need not lie in the fitted range).

        Returns
        -------
        numpy.ndarray
            exp(intercept) · ranks^(−alpha), float64, of the shape of ``ranks``.

        Examples
        --------
        >>> fit = fastspec.alpha_req(np.arange(1, 201.0) ** -1.5)
        >>> np.round(fit.predict([1, 4, 100]), 4)
        array([1.   , 0.125, 0.001])
        """
        r = np.asarray(ranks, dtype=np.float64)
        return np.exp(self.intercept) * r ** (-self.alpha)

    def to_dict(self) -> dict[str, Any]:
        """The fit as JSON values.

        Returns
        -------
        dict
            ``alpha``, ``intercept``, ``r2``, ``fit_range`` (a list) and ``weighted``.
        """
        d = asdict(self)
        d["fit_range"] = list(self.fit_range)
        return d


def check_fit_range(fit_range: Any) -> tuple[int, int]:
    """(start, stop) as ints, or a ValueError saying what is wrong with it."""
    try:
        start, stop = fit_range
    except (TypeError, ValueError):
        raise ValueError(f"fit_range must be two integers (start, stop), got {fit_range!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (start, stop)):
        raise ValueError(f"fit_range must be two integers (start, stop), got {fit_range!r}")
    if not 0 <= start < stop - 1:
        raise ValueError(f"fit_range {tuple(fit_range)!r} must satisfy 0 <= start < stop - 1 (at least 2 points)")
    return int(start), int(stop)


#: The automatic fit range (:func:`auto_fit_range`): eigenvalues below this fraction of λ₁
#: are the noise floor (float32 products leave ~1e-7·λ₁), the fit must stay within this
#: weighted RMS of log λ (1%), span at least this factor in rank, and hold this many points.
AUTO_FLOOR, AUTO_MAX_RMS, AUTO_MIN_SPAN, AUTO_MIN_POINTS = 1e-6, 0.01, 4.0, 8


def auto_fit_range(spectrum_or_eigenvalues: Any, *, weighted: bool = True) -> tuple[int, int]:
    """The fit range that ``alpha_req(s, fit_range="auto")`` uses, by this rule:

    1. Usable eigenvalues: the leading ones above ``AUTO_FLOOR``·λ₁ (and, for a centred
       spectrum of N samples, at most N − 1 of them: the rest are structural zeros).
    2. The head, the first min(10, usable/10) ranks, is skipped (as the fixed ranges skip it).
    3. Among ranges on a grid of quarter-octave start and stop ranks that span at least a
       factor ``AUTO_MIN_SPAN`` and ``AUTO_MIN_POINTS`` eigenvalues, the longest (in log rank)
       whose power-law fit leaves a weighted RMS residual of log λ within ``AUTO_MAX_RMS``;
       ties go to the smaller residual. When no range is that straight, the straightest.

    So on a broken power law it fits the longest straight segment, not across the break.
    Returns 0-based (start, stop), as ``fit_range``."""
    lam = eigenvalues_of(spectrum_or_eigenvalues)
    usable = int(np.sum(lam > AUTO_FLOOR * lam[0])) if lam[0] > 0 else 0
    n = getattr(spectrum_or_eigenvalues, "n_samples", None)
    if getattr(spectrum_or_eigenvalues, "centered", False) and n is not None:
        usable = min(usable, n - 1)
    head = min(10, usable // 10)
    if usable - head < AUTO_MIN_POINTS or usable < AUTO_MIN_SPAN * (head + 1):
        raise SpectrumTooShort(f"only {usable} eigenvalues lie above the noise floor ({AUTO_FLOOR:g}·λ₁, "
                               f"rank ≤ N − 1): too few for an automatic fit range")
    r = np.arange(1, usable + 1, dtype=np.float64)
    x, y = -np.log(r), np.log(lam[:usable])
    w = 1.0 / r if weighted else np.ones_like(r)
    # Prefix sums of the weighted moments: every candidate's least squares in O(1).
    sums = [np.concatenate([[0.0], np.cumsum(v)]) for v in (w, w * x, w * y, w * x * x, w * x * y, w * y * y)]
    grid = np.unique(np.round(head * 2.0 ** (np.arange(0, 80) / 4)).astype(int).clip(head, usable))
    stops = np.unique(np.round(usable / 2.0 ** (np.arange(0, 80) / 4)).astype(int).clip(1, usable))
    best: tuple[float, float, int, int] | None = None
    for a in grid:
        for b in stops:
            if b - a < AUTO_MIN_POINTS or b / (a + 1) < AUTO_MIN_SPAN:
                continue
            s0, sx, sy, sxx, sxy, syy = (c[b] - c[a] for c in sums)
            det = s0 * sxx - sx * sx
            if det <= 0:
                continue
            slope = (s0 * sxy - sx * sy) / det
            icpt = (sy - slope * sx) / s0
            rms = float(np.sqrt(max(syy - icpt * sy - slope * sxy, 0.0) / s0))
            key = (float(np.log(b / (a + 1))) if rms <= AUTO_MAX_RMS else -np.inf, -rms, int(a), int(b))
            if best is None or key[:2] > best[:2]:
                best = key
    if best is None:
        raise SpectrumTooShort(f"{usable} usable eigenvalues hold no range spanning a factor {AUTO_MIN_SPAN:g}")
    return best[2], best[3]


def alpha_req(
    spectrum_or_eigenvalues: Any,
    *,
    fit_range: tuple[int, int] | str = DEFAULT_FIT_RANGE,
    weighted: bool = True,
) -> AlphaFit:
    """alpha-ReQ (Agrawal et al., 2022): the decay exponent of the eigenspectrum.

    Weighted least squares of log|λ_r| on [−log r, 1] with weights 1/r over 1-based ranks r,
    for 0-based indices ``fit_range = (start, stop)``, i.e. ranks start+1 .. stop.

    Parameters
    ----------
    spectrum_or_eigenvalues : fastspec.Spectrum or array_like
        A spectrum, or its eigenvalues (1-D, real, finite; any order: they are sorted in
        descending order first). With a centred `fastspec.Spectrum` of N samples, the fit
        may use at most its N − 1 non-zero eigenvalues.
    fit_range : tuple of int or "auto", default (11, 100)
        0-based indices (start, stop), with 0 <= start < stop − 1. The default,
        ``fastspec.spectral.DEFAULT_FIT_RANGE`` = (11, 100), is the seed paper's (ranks
        12..100); Reptrix's ``get_alpha`` uses (10, 100). ``"auto"`` chooses the longest
        straight segment of the log-log spectrum above its noise floor (the head skipped) and
        returns it in the fit's ``fit_range``.
    weighted : bool, default True
        Weight rank r by 1/r (the seed paper's and Reptrix's fit), so that the many high
        ranks do not outweigh the few low ones; False: ordinary least squares.

    Returns
    -------
    fastspec.AlphaFit
        α, the intercept, R² of the fit, the range fitted and ``weighted``.

    Raises
    ------
    ValueError
        A malformed ``fit_range``; empty, non-finite or not 1-D eigenvalues; a leading
        eigenvalue that is not positive, or a negative one inside the range. Its subclass
        ``fastspec.spectral.SpectrumTooShort`` when the spectrum is too short for the range:
        fewer eigenvalues than ``stop``, a centred spectrum of fewer than ``stop`` + 1
        samples, an eigenvalue inside the range that is zero (the numerical rank is below
        ``stop``), or too few usable eigenvalues for ``"auto"``.

    See Also
    --------
    fastspec.rankme : The effective rank of the same spectrum.
    fastspec.Spectrum.alpha : This function with its defaults, on a spectrum.

    Examples
    --------
    An exact power law gives its exponent back:

    >>> lam = np.arange(1, 201.0) ** -1.5
    >>> fit = fastspec.alpha_req(lam)
    >>> round(fit.alpha, 3), round(fit.r2, 3)
    (1.5, 1.0)
    >>> round(fastspec.alpha_req(lam, fit_range=(10, 100)).alpha, 3)  # Reptrix's range
    1.5
    >>> fastspec.alpha_req(lam[:50])
    Traceback (most recent call last):
    ...
    fastspec.spectral.metrics.SpectrumTooShort: fit_range (11, 100) needs at least 100 eigenvalues; ...
    """
    if isinstance(fit_range, str) and fit_range == "auto":
        fit_range = auto_fit_range(spectrum_or_eigenvalues, weighted=weighted)
    start, stop = check_fit_range(fit_range)
    lam = eigenvalues_of(spectrum_or_eigenvalues)
    if stop > lam.size:
        raise SpectrumTooShort(
            f"fit_range ({start}, {stop}) needs at least {stop} eigenvalues; this spectrum has "
            f"{lam.size} (min(N, d)). Pass a smaller fit_range."
        )
    n = getattr(spectrum_or_eigenvalues, "n_samples", None)
    if getattr(spectrum_or_eigenvalues, "centered", False) and n is not None and stop > n - 1:
        raise SpectrumTooShort(
            f"fit_range ({start}, {stop}) needs {stop} non-zero eigenvalues, but a centred "
            f"spectrum of N={n} samples has rank at most N − 1 = {n - 1}; pass a smaller fit_range"
        )
    # Structural zeros come out of an eigensolver as rounding noise, not exact 0.
    noise = np.abs(lam).max() * lam.size * np.finfo(np.float64).eps
    if lam[0] <= noise or (lam[start:stop] < -noise).any():
        bad = lam[0] if lam[0] <= noise else lam[start:stop][lam[start:stop] < -noise][0]
        raise ValueError(f"eigenvalue {bad:.3g} is negative or zero where a covariance spectrum is positive "
                         f"(largest {lam[0]:.3g}): α is the decay of a positive spectrum and is undefined here")
    seg = np.abs(lam[start:stop])
    zero = seg <= noise
    if zero.any():
        first = start + int(np.argmax(zero))
        raise SpectrumTooShort(
            f"eigenvalue at index {first} is zero (|λ| = {seg[first - start]:.3g} against "
            f"λ₁ = {lam[0]:.3g}), inside fit_range ({start}, {stop}): the spectrum's numerical "
            f"rank is below {stop}; pass a smaller fit_range"
        )
    ranks = np.arange(start, stop, dtype=np.float64) + 1.0
    y = np.log(seg)
    design = np.stack([-np.log(ranks), np.ones_like(ranks)], axis=1)
    sw = np.sqrt(1.0 / ranks) if weighted else np.ones_like(ranks)
    (alpha, intercept), *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    residual = y - design @ np.array([alpha, intercept])
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / ss_tot if ss_tot > 0 else 1.0
    return AlphaFit(float(alpha), float(intercept), r2, (start, stop), bool(weighted))
