"""Scalar summaries of an eigenspectrum: RankMe and the power-law exponent alpha (alpha-ReQ).

Both take a :class:`fastspec.Spectrum` or a plain array of eigenvalues, in any order (they
are sorted in descending order first, as the conventions rank them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RANKME_CONVENTIONS = ("eig", "sv")


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


def alpha_req(
    spectrum_or_eigenvalues: Any,
    *,
    fit_range: tuple[int, int] = (11, 100),
    weighted: bool = True,
) -> AlphaFit:
    """alpha-ReQ (Agrawal et al., 2022): the decay exponent of the eigenspectrum.

    Weighted least squares of log|λ_r| on [-log r, 1] with weights 1/r over 1-based ranks r,
    for 0-based indices ``fit_range = (start, stop)``, i.e. ranks start+1 .. stop. The
    default (11, 100) is the seed paper's (ranks 12..100); Reptrix's ``get_alpha`` uses
    ``fit_range=(10, 100)``.
    """
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
