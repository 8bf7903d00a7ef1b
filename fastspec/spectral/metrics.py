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

    ``convention="eig"`` (default; the seed paper, Reptrix, fastssl): p_i = |λ_i| / Σ|λ| + ε,
    RankMe = exp(-Σ p_i log p_i), natural log, over the eigenvalues given (a Spectrum holds
    the min(N, d) leading ones).

    ``convention="sv"`` (Garrido et al., 2023): the same on singular values σ_i = sqrt(|λ_i|).
    Garrido's RankMe uses the raw, uncentred matrix:
    ``rankme(spectrum(X, center=False), convention="sv")``.

    ``max_eigenvalues=k`` keeps the k largest first. ``max_eigenvalues=2048`` reproduces
    Reptrix's ``get_rankme`` and the seed paper's scripts (sklearn PCA with at most 2048
    components), which cannot exceed 2048.
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
    """A power-law fit λ_r ≈ exp(intercept) · r^(-alpha) over 0-based indices [start, stop).

    ``r2`` is the coefficient of determination of log|λ| over the fitted range (unweighted).
    Reptrix's ``r2_100`` differs slightly: its range array is incremented in place before
    scoring, so it scores a (10, 100) fit over indices 11..99.
    """

    alpha: float
    intercept: float
    r2: float
    fit_range: tuple[int, int]
    weighted: bool

    def predict(self, ranks: Any) -> np.ndarray:
        """Fitted eigenvalues at 1-based ``ranks``."""
        r = np.asarray(ranks, dtype=np.float64)
        return np.exp(self.intercept) * r ** (-self.alpha)

    def to_dict(self) -> dict[str, Any]:
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

    Weighted least squares of log|λ_r| on [-log r, 1] with weights 1/r over 1-based ranks r,
    for 0-based indices ``fit_range = (start, stop)``, i.e. ranks start+1 .. stop. The
    default, ``DEFAULT_FIT_RANGE`` = (11, 100), is the seed paper's (ranks 12..100);
    Reptrix's ``get_alpha`` uses ``fit_range=(10, 100)``. ``fit_range="auto"`` chooses the range by
    :func:`auto_fit_range`'s rule and returns it in the fit's ``fit_range``.
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
