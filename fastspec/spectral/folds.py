"""An accumulator that keeps K folds of its rows, for jackknife standard errors.

``CovarianceAccumulator(dim, folds=K)`` with K > 1 makes a :class:`FoldedAccumulator`: K plain
accumulators, row i of the stream (dropped rows not counted) in fold i mod K whatever the
batching. Its statistics, spectra and metrics are those of all the rows (the folds pooled by
Chan's merge); :meth:`FoldedAccumulator.jackknife` adds the delete-a-fold standard errors.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Any

import torch

from .accumulator import CovarianceAccumulator, check_merge, checked_rows, distributed
from .metrics import DEFAULT_FIT_RANGE, check_fit_range
from .moments import Moments
from .record import Jackknife, MetricsRecord, Spectrum

#: The rows without a fold are degenerate when their largest variance is within this many
#: float64 epsilons (times d) of the pooled M2's largest: the leave-one-fold-out M2 is computed
#: by subtraction from the pooled one (Moments.without), which leaves rounding of a few
#: epsilons of the pooled scale per entry, so below this it holds no variance but that noise.
JACKKNIFE_NOISE = 64


def noise_floor(total: Moments) -> float:
    """The largest variance (diagonal of M2) that a set computed by subtracting from ``total``
    (:meth:`Moments.without`) can hold from rounding alone."""
    scale = float(total.tensors()[1].diagonal().abs().max())
    return JACKKNIFE_NOISE * total.dim * float(torch.finfo(torch.float64).eps) * scale


class FoldedAccumulator(CovarianceAccumulator, folded=True):
    """A :class:`~fastspec.spectral.accumulator.CovarianceAccumulator` that keeps ``folds`` = K
    ≥ 2 disjoint folds of its rows (K·d² memory, the same products). Made by
    ``CovarianceAccumulator(dim, folds=K)``; the other arguments are the same.

    ``state_dict()`` holds the pooled statistics (so that an accumulator without folds can
    load it), ``folds`` and each fold's state (``fold_states``).
    """

    def __init__(self, dim: int, *, device: str | torch.device | None = None, nan_policy: str = "raise",
                 precision: str = "float32", backend: str = "auto", folds: int = 2, products: str = "fp32"):
        super().__init__(dim, device=device, nan_policy=nan_policy, precision=precision, backend=backend,
                         products=products)
        if isinstance(folds, bool) or not isinstance(folds, Integral) or folds < 2:
            raise ValueError(f"a FoldedAccumulator needs folds >= 2, got {folds!r}")
        self.folds = int(folds)
        # The folds are plain accumulators, fed and read through their public methods.
        self._fold_accs = [CovarianceAccumulator(dim, device=self._device, precision=precision, backend=backend,
                                                 products=products) for _ in range(self.folds)]
        self._pooled_cache: CovarianceAccumulator | None = None  # every fold's rows; reset by any change

    @property
    def n_samples(self) -> int:
        return sum(f.n_samples for f in self._fold_accs)

    def _add(self, x: torch.Tensor, name: str) -> None:
        """Row i of the kept stream goes to fold i mod K. The whole batch is checked first,
        so that a fault changes no fold; each row is multiplied once, in its fold (a strided
        slice of the batch: the products cost what K = 1's cost)."""
        self._pooled_cache = None
        offset, total = self._rows_seen, int(x.shape[0])
        x = checked_rows(x, name, self.nan_policy, offset)
        first = offset - self.n_dropped  # the kept stream's index of x's first row
        for f, acc in enumerate(self._fold_accs):
            rows = x[(f - first) % self.folds :: self.folds]
            if rows.shape[0]:
                acc.update(rows, name=name)  # checked rows: cannot fail
        self.n_dropped += total - int(x.shape[0])
        self._rows_seen += total

    def _pooled(self) -> CovarianceAccumulator:
        """A plain accumulator holding every fold's rows (Chan's merge), kept until the next
        change: a trace asks for it several times per layer."""
        if self._pooled_cache is None:
            pooled = Moments.pooled([f.moments() for f in self._fold_accs], self.dim, self.device, self.ops)
            self._pooled_cache = self.with_moments(pooled, n_dropped=self.n_dropped, rows_seen=self._rows_seen)
        return self._pooled_cache

    def moments(self) -> Moments:
        """The pooled (n, mean, M2) of every fold's rows (a cached set: read it, don't change it)."""
        return self._pooled().moments()

    # -- combining ---------------------------------------------------------------------
    def merge(self, other: CovarianceAccumulator) -> "FoldedAccumulator":
        """Add another accumulator's rows (one with the same folds) fold by fold; ``other`` is unchanged."""
        check_merge(self, other)
        assert isinstance(other, FoldedAccumulator)
        self._pooled_cache = None
        for mine, theirs in zip(self._fold_accs, other._fold_accs):
            mine.merge(theirs)
        self.n_dropped += other.n_dropped
        self._rows_seen += other.rows_seen
        return self

    def all_reduce(self, group: Any = None) -> "FoldedAccumulator":
        """Fold f of every rank is fold f of the whole: each fold is all-reduced (see
        :meth:`CovarianceAccumulator.all_reduce`), and so are the counts."""
        dist = distributed()
        self._pooled_cache = None
        for f in self._fold_accs:
            f.all_reduce(group)
        counts = torch.tensor([float(self.n_dropped), float(self._rows_seen)], dtype=torch.float64,
                              device=self.device)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        self.n_dropped, self._rows_seen = int(counts[0]), int(counts[1])
        return self

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The pooled statistics (:meth:`CovarianceAccumulator.state_dict`'s keys), ``folds``
        and ``fold_states``, each fold's state."""
        return {**self._pooled().state_dict(), "folds": self.folds,
                "fold_states": [f.state_dict() for f in self._fold_accs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the folds by those of :meth:`state_dict`'s output (of the same ``folds``);
        every fold is checked before any is kept."""
        if not isinstance(state, dict) or state.get("folds") != self.folds or \
                not isinstance(state.get("fold_states"), list) or len(state["fold_states"]) != self.folds:
            got = state.get("folds", 1) if isinstance(state, dict) else None
            raise ValueError(f"state_dict holds folds={got!r}, this accumulator has folds={self.folds}")
        fresh = [self.empty_like() for _ in range(self.folds)]
        for acc, fold_state in zip(fresh, state["fold_states"]):
            acc.load_state_dict(fold_state)
        pooled = CovarianceAccumulator(self.dim, device=self.device)
        pooled.load_state_dict({k: v for k, v in state.items() if k not in ("folds", "fold_states")})
        self._fold_accs, self._pooled_cache = fresh, None
        self._place(self.device)
        self.n_dropped, self._rows_seen = pooled.n_dropped, pooled.rows_seen

    # -- results: those of every fold's rows -----------------------------------------------
    @property
    def mean(self) -> torch.Tensor:
        """Column means (float64) of all the rows."""
        return self._pooled().mean

    def covariance(self, *, center: bool = True) -> torch.Tensor:
        """The covariance of all the rows (see :meth:`CovarianceAccumulator.covariance`)."""
        return self._pooled().covariance(center=center)

    def spectrum(self, *, center: bool = True, top_k_eigenvectors: int = 0) -> Spectrum:
        """The spectrum of all the rows (see :meth:`CovarianceAccumulator.spectrum`)."""
        return self._pooled().spectrum(center=center, top_k_eigenvectors=top_k_eigenvectors)

    def metrics(self, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE) -> MetricsRecord:
        """The :class:`~fastspec.spectral.record.MetricsRecord` of all the rows with the
        jackknife standard errors over the folds (:meth:`jackknife`, on the same spectra)."""
        centred, raw = self.spectrum(), self.spectrum(center=False)
        jackknife = self.jackknife(fit_range=fit_range, spectra=(centred, raw))
        return MetricsRecord.of(centred, raw, fit_range=fit_range, jackknife=jackknife)

    def jackknife(self, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE,
                  spectra: tuple[Spectrum, Spectrum] | None = None) -> Jackknife:
        """RankMe, RankMe_sv and α of all the rows with their jackknife standard errors over
        the K folds: with θ₍ₖ₎ the estimate from every fold but k and θ̄ their mean,
        SE = √((K − 1)/K · Σₖ (θ₍ₖ₎ − θ̄)²) (Quenouille and Tukey's delete-a-group jackknife)
        when the folds are of equal size; otherwise its generalisation to folds of m_k rows
        (Busing, Meijer and van der Leeden, 1999), which weighs each fold by h_k = N/m_k, so
        that leaving out more rows is not read as spread (it matters when N/K is small). The
        estimates are those of all the rows, not bias-corrected. Costs 2(K + 1) eigensolves of
        d × d, or 2K when the caller passes ``spectra``, its :meth:`~fastspec.CovarianceAccumulator.spectrum` and
        ``spectrum(center=False)`` of all the rows.

        On degenerate data, where the rows without some fold have no variance above the
        rounding of the subtraction that computes their M2 (:data:`JACKKNIFE_NOISE`), the
        standard errors are NaN and ``error`` says why (the estimates are still all the rows')."""
        fit_range = check_fit_range(fit_range)
        sizes = [f.n_samples for f in self._fold_accs]
        if min(sizes) < 1 or sum(sizes) - max(sizes) < 2:
            raise ValueError(f"jackknife needs every one of the {self.folds} folds to hold rows, and at least 2 rows "
                             f"without any one fold; the folds hold {sizes}")

        def estimates(centred: Spectrum, raw: Spectrum) -> tuple[float, float, float]:
            record = MetricsRecord.of(centred, raw, fit_range=fit_range)
            assert record.rankme_sv is not None
            return record.rankme, record.rankme_sv, record.alpha_or_nan

        pooled = self._pooled()
        total = pooled.moments()
        if spectra is None:
            spectra = pooled.spectrum(), pooled.spectrum(center=False)
        full = estimates(*spectra)
        floor, rows = noise_floor(total), []
        for k, fold in enumerate(f.moments() for f in self._fold_accs):
            rest = total.without(fold.n, *fold.tensors())  # all the rows less fold k's: one d×d pass
            if float(rest.tensors()[1].diagonal().abs().max()) <= floor:
                # Their RankMe and α would be those of rounding noise: undefined, not a number.
                why = (f"without fold {k} the rows have no variance above rounding (at most {floor:.3g}, "
                       f"{JACKKNIFE_NOISE}·d·ε of the pooled M2's largest diagonal): the leave-one-fold-out "
                       "estimates, and so the jackknife standard errors, are undefined (degenerate data)")
                alpha = None if math.isnan(full[2]) else full[2]
                return Jackknife(full[0], math.nan, full[1], math.nan, alpha, None if alpha is None else math.nan,
                                 self.folds, self.n_samples, fit_range, why)
            acc = self.with_moments(rest)
            rows.append(estimates(acc.spectrum(), acc.spectrum(center=False)))
        loo = torch.tensor(rows, dtype=torch.float64)
        # Folds of unequal size (N not a multiple of K) leave out different numbers of rows, and
        # a statistic that moves with N (RankMe when N < d) would count that as spread: the
        # delete-m_k jackknife of Busing, Meijer and van der Leeden (1999) weighs each fold by
        # h_k = N / m_k through its pseudo-value; with equal folds it is the formula above.
        m = torch.tensor(sizes, dtype=torch.float64)[:, None]
        h = sum(sizes) / m
        theta = torch.tensor(full, dtype=torch.float64)[None, :]
        pseudo = h * theta - (h - 1) * loo
        centre = self.folds * theta[0] - ((1 - m / sum(sizes)) * loo).sum(0)  # their jackknife estimate
        se = torch.sqrt(((pseudo - centre) ** 2 / (h - 1)).mean(0)).tolist()
        alpha_ok = not (math.isnan(full[2]) or bool(torch.isnan(loo[:, 2]).any()))
        return Jackknife(full[0], se[0], full[1], se[1], full[2] if alpha_ok else None, se[2] if alpha_ok else None,
                         self.folds, self.n_samples, fit_range)
