"""A torchmetrics ``Metric`` of representation geometry: streamed rows in, RankMe (both
conventions) and α out, its state merged exactly across processes.

>>> from fastspec.integrations.torchmetrics import SpectralMetrics
>>> metric = SpectralMetrics(768)
>>> for batch in loader:
...     metric.update(model(batch).last_hidden_state[:, -1])
>>> metric.compute()          # {"rankme": …, "rankme_sv": …, "alpha": …}

The state is each process's (n, mean, M2) in float64, every batch centred on its own mean and
merged by Chan, Golub and LeVeque's update (as :class:`fastspec.CovarianceAccumulator` does;
not a float32 sum of squares, which loses a large-mean column entirely). Under
torch.distributed, torchmetrics gathers every process's triple (``dist_reduce_fx="cat"``) and
``compute`` merges them the same way, so N processes give one process's numbers to rounding.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    from torchmetrics import Metric
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("fastspec.integrations.torchmetrics needs torchmetrics: pip install 'fastspec[torchmetrics]'") from err

from ..spectral.eigen import spectrum_of_scatter
from ..spectral.inputs import as_matrix, check_nan_policy, nonfinite_rows
from ..spectral.metrics import DEFAULT_FIT_RANGE, check_fit_range
from ..spectral.moments import Moments, symmetrize_upper
from ..spectral.record import MetricsRecord

__all__ = ["SpectralMetrics"]


def _moments(n: float, mean: torch.Tensor, m2: torch.Tensor) -> Moments:
    """Moments over the given tensors, not copies: a merge into it writes them in place."""
    m = Moments(mean.shape[0], mean.device)
    if n:
        m.n, m.mean, m.m2 = int(n), mean, m2
    return m


class SpectralMetrics(Metric):
    """RankMe (both conventions) and α-ReQ of every row given to `update`, as a torchmetrics ``Metric``.

    ``rankme`` is over the eigenvalues of the centred covariance (ddof=1), ``rankme_sv`` is
    Garrido et al.'s, over the singular values of the raw (uncentred) rows, and ``alpha`` is
    α-ReQ over the 0-based ``fit_range`` (NaN while the spectrum is shorter): the conventions
    of `fastspec.rankme` and `fastspec.alpha_req`. The state is this process's (n, mean, M2)
    in float64, merged by Chan, Golub and LeVeque's update; under torch.distributed,
    ``compute`` merges every process's state the same way, so N processes give one process's
    numbers to rounding.

    Parameters
    ----------
    dim : int
        The feature width: the number of columns of every batch.
    fit_range : tuple of int, default (11, 100)
        0-based ``[start, stop)`` eigenvalue indices of the α fit (the paper's; Reptrix uses
        ``(10, 100)``).
    nan_policy : {'raise', 'omit'}, default 'raise'
        Rows holding NaN or Inf raise a `ValueError` naming them, or with ``'omit'`` are left
        out (their number is not kept: the metric's state is the rows it holds).
    **kwargs
        Passed to ``torchmetrics.Metric`` (e.g. ``sync_on_compute``).

    Raises
    ------
    ValueError
        ``dim`` is not a positive integer, or ``fit_range``/``nan_policy`` is invalid.

    See Also
    --------
    fastspec.CovarianceAccumulator : The same statistics outside torchmetrics.

    Examples
    --------
    >>> from fastspec.integrations.torchmetrics import SpectralMetrics
    >>> metric = SpectralMetrics(16)
    >>> g = torch.Generator().manual_seed(0)
    >>> batches = [torch.randn(64, 16, generator=g) for _ in range(4)]
    >>> for batch in batches:
    ...     metric.update(batch)
    >>> out = metric.compute()
    >>> round(out["rankme"], 3), out["n_samples"]
    (15.434, 256)
    >>> round(fastspec.spectrum(torch.cat(batches)).rankme, 3)  # all rows at once: the same
    15.434
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, dim: int, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE, nan_policy: str = "raise",
                 **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim, self.fit_range, self.nan_policy = dim, check_fit_range(fit_range), check_nan_policy(nan_policy)
        self.add_state("n", default=torch.zeros(1, dtype=torch.float64), dist_reduce_fx="cat")
        self.add_state("mean", default=torch.zeros(1, dim, dtype=torch.float64), dist_reduce_fx="cat")
        self.add_state("m2", default=torch.zeros(1, dim, dim, dtype=torch.float64), dist_reduce_fx="cat")

    def update(self, features: Any) -> None:
        """Add a batch of rows to the state.

        Parameters
        ----------
        features : array_like
            An N×``dim`` batch (a torch tensor on any device, a NumPy array, or anything
            DLPack can give), any float dtype; products are taken in float64.

        Raises
        ------
        ValueError
            The batch is not 2-D with ``dim`` columns, or holds NaN/Inf with
            ``nan_policy='raise'``.
        """
        x = as_matrix(features, "features")
        if x.shape[1] != self.dim:
            raise ValueError(f"features have {x.shape[1]} columns (shape {tuple(x.shape)}), this metric was made "
                             f"for dim={self.dim}")
        keep = nonfinite_rows(x, "features", self.nan_policy)
        if keep is not None:  # nan_policy="omit": rows with NaN/Inf are left out
            x = x[keep]
        if not x.shape[0]:
            return
        batch = Moments(self.dim, self.n.device)
        batch.add_chunk(x.detach().to(self.n.device, torch.float64))  # exact centring, float64 products
        m2 = symmetrize_upper(batch.m2)
        if self.n[0]:  # Chan's merge, in place into this process's state
            _moments(float(self.n[0]), self.mean[0], self.m2[0]).add_centred(batch.n, batch.mean, m2)
        else:
            self.mean[0].copy_(batch.mean)
            self.m2[0].copy_(m2)
        self.n[0] += batch.n

    def compute(self) -> dict[str, float]:
        """The metrics of every row added so far (on every process, under torch.distributed).

        Returns
        -------
        dict
            ``rankme``, ``rankme_sv``, ``alpha`` (floats; ``alpha`` NaN when the spectrum is
            shorter than ``fit_range``) and ``n_samples`` (int).

        Raises
        ------
        ValueError
            Fewer than 2 rows were added.
        """
        n = self.n.reshape(-1)
        parts = [_moments(float(k), mu, m2) for k, mu, m2 in
                 zip(n, self.mean.reshape(-1, self.dim), self.m2.reshape(-1, self.dim, self.dim))]
        total = Moments.pooled(parts, self.dim, self.n.device)
        if total.n < 2:
            raise ValueError(f"SpectralMetrics needs at least 2 rows; it has {total.n}")
        centred = spectrum_of_scatter(total.m2, n_samples=total.n, center=True)
        raw = spectrum_of_scatter(total.m2 + total.n * torch.outer(total.mean, total.mean), n_samples=total.n,
                                  center=False)
        record = MetricsRecord.of(centred, raw, fit_range=self.fit_range)
        return {"rankme": record.rankme, "rankme_sv": record.rankme_sv, "alpha": record.alpha_or_nan,
                "n_samples": record.n_samples}
