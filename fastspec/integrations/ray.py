"""A Ray Data aggregation: the spectrum and metrics of one vector column of a
``ray.data.Dataset``, computed where the blocks are and merged exactly.

>>> from fastspec.integrations.ray import CovarianceAggregate
>>> agg = CovarianceAggregate("embedding", 768)
>>> record = ds.aggregate(agg)[agg.name]          # a MetricsRecord: rankme, rankme_sv, alpha…

Each block's rows go into a :class:`fastspec.CovarianceAccumulator` (float64 state, every
chunk centred on its own mean); the block's state (its ``state_dict``, serialised) is what
Ray moves between tasks, and two states combine by the accumulator's own
:meth:`~fastspec.CovarianceAccumulator.merge`, the pairwise update of Chan, Golub and
LeVeque. So however Ray splits, batches and orders the blocks, the result is that of one
accumulator fed every row, to rounding. The state is O(d²) bytes (8·d² + 8·d: 134 MB at
d = 4096), whatever the number of rows.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

try:
    from ray.data.aggregate import AggregateFnV2
    from ray.data.block import BlockAccessor
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("fastspec.integrations.ray needs Ray Data: pip install 'fastspec[ray]'") from err

from ..spectral.accumulator import PRECISIONS, CovarianceAccumulator
from ..spectral.inputs import check_nan_policy
from ..spectral.metrics import DEFAULT_FIT_RANGE, check_fit_range

__all__ = ["CovarianceAggregate"]

#: What :meth:`CovarianceAggregate.finalize` returns, by ``result=``.
RESULTS = ("metrics", "spectrum", "accumulator")


class CovarianceAggregate(AggregateFnV2):
    """The (ddof=1) covariance spectrum of a vector column, as a Ray Data aggregation.

    ``ds.aggregate(CovarianceAggregate(column, dim))`` returns ``{name: result}``: by default
    the ``MetricsRecord`` of every row of ``column`` (RankMe,
    ``convention="eig"``, of the centred covariance; Garrido et al.'s RankMe_sv of the raw
    second moments; the α-ReQ fit over ``fit_range``; n and d; its ``spectra`` hold the
    centred and raw :class:`fastspec.Spectrum`), equal to
    ``fastspec.CovarianceAccumulator(dim)`` fed the same rows in one process.

    Each block is reduced to an accumulator's state, and states are merged by Chan's update
    (:meth:`fastspec.CovarianceAccumulator.merge`), exactly: the order and grouping Ray
    chooses change the result by rounding only. Also usable per group,
    ``ds.groupby(key).aggregate(...)``.

    Parameters
    ----------
    column : str
        The column holding one d-vector per row: a tensor column (``ray.data.from_numpy``,
        a NumPy array per row), a list or fixed-size-list column, or a pandas column of
        arrays. Any float dtype; integer columns are refused.
    dim : int
        d, the width of every vector. A row of another width is a ValueError naming the
        column, the row and its shape.
    fit_range : tuple of int, default (11, 100)
        0-based eigenvalue indices [start, stop) of the α-ReQ fit (the seed paper's).
    nan_policy : {"raise", "omit"}, default "raise"
        Rows with NaN or Inf, or null rows: refused with a ValueError naming the column and
        the first such row (``"raise"``), or left out and counted in the record's
        ``n_dropped`` (``"omit"``).
    precision : {"float32", "float64"}, default "float32"
        The dtype of the per-chunk products (see :class:`fastspec.CovarianceAccumulator`);
        float64 rows are always multiplied in float64.
    result : {"metrics", "spectrum", "accumulator"}, default "metrics"
        What :meth:`finalize` returns: the ``MetricsRecord``, the centred
        :class:`fastspec.Spectrum` (one eigensolve, not two), or the merged
        :class:`fastspec.CovarianceAccumulator` itself (to merge with other data, save with
        ``state_dict``, or solve later).
    alias_name : str, optional
        The key of the result in ``ds.aggregate``'s dict; default ``"covariance(<column>)"``.

    Raises
    ------
    ValueError
        An argument out of range here; while Ray runs it, a missing column, a row of the
        wrong width or shape, a null or non-finite row (``nan_policy="raise"``), or fewer
        than 2 rows at the end.
    TypeError
        A column that holds no floating vectors (integers, strings).

    See Also
    --------
    fastspec.CovarianceAccumulator : the streaming state each block is reduced to.
    fastspec.spectrum : the same numbers for rows held in one array.

    Notes
    -----
    The state that crosses between Ray tasks is the accumulator's ``state_dict`` (n, the
    mean, the d×d M2, in float64) serialised by ``torch.save``: 8·d² bytes, so a few
    hundred MB for d = 4096-8192, whatever the number of rows. Jackknife folds are not
    offered: a row's fold would depend on the order Ray gives the blocks.

    An empty dataset (or group) gives None, as Ray's own aggregations do.

    Examples
    --------
    On a Ray cluster (or a local ``ray.init()``) the aggregation is one call::

        ds = ray.data.from_numpy(embeddings)             # column "data"
        record = ds.aggregate(CovarianceAggregate("data", 768))["covariance(data)"]

    The same steps Ray runs, on two blocks by hand:

    >>> import pyarrow as pa
    >>> from fastspec.integrations.ray import CovarianceAggregate
    >>> x = np.random.default_rng(0).normal(size=(300, 8))
    >>> agg = CovarianceAggregate("e", 8, fit_range=(1, 6))
    >>> blocks = [pa.table({"e": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), 8)})
    ...           for part in (x[:100], x[100:])]
    >>> state = agg.combine(agg.aggregate_block(blocks[0]), agg.aggregate_block(blocks[1]))
    >>> record = agg.finalize(state)
    >>> record.n_samples, record.dim
    (300, 8)
    >>> bool(abs(record.rankme - fastspec.spectrum(x).rankme) < 1e-9)
    True
    """

    def __init__(self, column: str, dim: int, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE,
                 nan_policy: str = "raise", precision: str = "float32", result: str = "metrics",
                 alias_name: str | None = None):
        if not isinstance(column, str) or not column:
            raise ValueError(f"column must be a non-empty column name, got {column!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if result not in RESULTS:
            raise ValueError(f"result must be one of {RESULTS}, got {result!r}")
        self.column, self.dim = column, int(dim)
        self.fit_range = check_fit_range(fit_range)
        self.nan_policy = check_nan_policy(nan_policy)
        self.precision, self.result = precision, result
        # ignore_nulls=True makes Ray's zero an empty (None) state, which its null-safe
        # combine skips: a block without rows contributes nothing. Null rows inside a block
        # are this class's business (nan_policy), not Ray's.
        super().__init__(alias_name or f"covariance({column})", zero_factory=lambda: None, on=column,
                         ignore_nulls=True)

    # -- the three steps Ray runs --------------------------------------------------------
    def aggregate_block(self, block: Any) -> bytes:
        """Reduce one block to an accumulator's serialised state.

        Parameters
        ----------
        block : pyarrow.Table or pandas.DataFrame
            A block of the dataset (Ray hands them over as either).

        Returns
        -------
        bytes
            The ``state_dict`` of a :class:`fastspec.CovarianceAccumulator` fed the block's
            rows of ``column`` (``torch.save`` format; Ray stores it in a binary column).

        Raises
        ------
        ValueError
            The column is missing, a row has the wrong width or shape, or is null or
            non-finite under ``nan_policy="raise"``.
        TypeError
            The column does not hold floating vectors.
        """
        acc = self._accumulator()
        rows = self.rows(block)
        acc.update(rows, name=f"column {self.column!r}")
        return _encode(acc)

    def combine(self, current_accumulator: bytes, new: bytes) -> bytes:
        """Merge two serialised states by Chan's update (:meth:`fastspec.CovarianceAccumulator.merge`).

        Parameters
        ----------
        current_accumulator : bytes
            A state from :meth:`aggregate_block` or an earlier :meth:`combine`.
        new : bytes
            Another such state.

        Returns
        -------
        bytes
            The state of both sets of rows together.
        """
        acc = self._decode(current_accumulator)
        acc.merge(self._decode(new))
        return _encode(acc)

    def finalize(self, accumulator: bytes) -> Any:
        """Turn the merged state into the result ``result=`` asked for.

        Parameters
        ----------
        accumulator : bytes
            The state of every row of the dataset (or of one group).

        Returns
        -------
        MetricsRecord or Spectrum or CovarianceAccumulator
            ``acc.metrics(fit_range=...)`` (``result="metrics"``), ``acc.spectrum()``
            (``"spectrum"``) or the accumulator (``"accumulator"``).

        Raises
        ------
        ValueError
            Fewer than 2 rows (a covariance needs two), unless ``result="accumulator"``.
        """
        acc = self._decode(accumulator)
        if self.result == "accumulator":
            return acc
        if acc.n_samples < 2:
            raise ValueError(f"CovarianceAggregate of column {self.column!r}: a covariance needs at least 2 rows, "
                             f"the dataset has {acc.n_samples}"
                             + (f" ({acc.n_dropped} dropped by nan_policy='omit')" if acc.n_dropped else ""))
        if self.result == "spectrum":
            return acc.spectrum()
        return acc.metrics(fit_range=self.fit_range)

    # -- reading a block -----------------------------------------------------------------
    def rows(self, block: Any) -> np.ndarray:
        """The block's vectors of ``column`` as one n×d float array, checked.

        Parameters
        ----------
        block : pyarrow.Table or pandas.DataFrame
            A block of the dataset.

        Returns
        -------
        numpy.ndarray
            n×d, of the column's float dtype (list columns give float64). Null rows are
            NaN rows here (``nan_policy="omit"`` then drops them as it drops NaN rows).

        Raises
        ------
        ValueError
            The column is missing; a row is null (``nan_policy="raise"``), not a vector, or
            not of width ``dim``.
        TypeError
            The column's values are not floating point.
        """
        access = BlockAccessor.for_block(block)
        names = access.column_names()
        if self.column not in names:
            raise ValueError(f"CovarianceAggregate: the dataset has no column {self.column!r} "
                             f"(its columns: {', '.join(map(repr, names)) or 'none'})")
        values = _arrow_rows(block[self.column]) if isinstance(block, pa.Table) else None
        if values is None:
            values = access.to_numpy(self.column)
        n = len(values)
        if values.dtype == object:  # list columns, pandas columns of arrays: one array per row
            values = self._stack(values)
        elif values.ndim == 1 and self.dim == 1 and n:  # a scalar column is a column of 1-vectors
            values = values.reshape(n, 1)
        if values.ndim != 2 or values.shape[1] != self.dim:
            raise ValueError(f"column {self.column!r} holds values of shape {tuple(values.shape[1:])} per row "
                             f"(a block of shape {tuple(values.shape)}); CovarianceAggregate was made for "
                             f"vectors of dim={self.dim}"
                             + ("; flatten each row first (ds.map_batches)" if values.ndim > 2 else ""))
        if values.dtype.kind != "f":
            raise TypeError(f"column {self.column!r} holds {values.dtype} values; CovarianceAggregate needs "
                            "floating vectors (cast them, e.g. in ds.map_batches)")
        return values

    def _stack(self, values: np.ndarray) -> np.ndarray:
        """Stack a column of per-row arrays (or None) into n×dim, naming the first bad row."""
        out = None
        for i, row in enumerate(values):
            if row is None:
                if self.nan_policy == "raise":
                    raise ValueError(f"column {self.column!r}: row {i} of a block of {len(values)} rows is null. "
                                     "Fix the input, or pass nan_policy='omit' to drop such rows.")
                row = np.full(self.dim, np.nan)
            row = np.asarray(row)
            if row.shape != (self.dim,):
                raise ValueError(f"column {self.column!r}: row {i} of a block of {len(values)} rows has shape "
                                 f"{row.shape}; CovarianceAggregate was made for vectors of dim={self.dim}")
            if row.dtype.kind != "f":
                raise TypeError(f"column {self.column!r}: row {i} holds {row.dtype} values; CovarianceAggregate "
                                "needs floating vectors (cast them, e.g. in ds.map_batches)")
            if out is None:
                out = np.empty((len(values), self.dim), dtype=np.result_type(row.dtype, np.float32))
            out[i] = row
        return out if out is not None else np.empty((0, self.dim))

    # -- states ------------------------------------------------------------------------
    def _accumulator(self) -> CovarianceAccumulator:
        return CovarianceAccumulator(self.dim, device="cpu", nan_policy=self.nan_policy, precision=self.precision)

    def _decode(self, state: bytes) -> CovarianceAccumulator:
        """The accumulator a serialised state describes (checked by ``load_state_dict``)."""
        acc = self._accumulator()
        acc.load_state_dict(torch.load(io.BytesIO(state), weights_only=True))
        return acc

    def _validate(self, schema: Any) -> None:
        # Ray checks the schema before the first block: say which column is missing, and
        # which there are, in fastspec's words rather than a sort key's.
        names = getattr(schema, "names", None)
        if names is not None and self.column not in names:
            raise ValueError(f"CovarianceAggregate: the dataset has no column {self.column!r} "
                             f"(its columns: {', '.join(map(repr, names)) or 'none'})")


def _arrow_rows(column: "pa.ChunkedArray") -> np.ndarray | None:
    """An Arrow list column without nulls as one n×width array, read without a loop over
    rows (None when it has nulls or rows of different lengths: the row-by-row path then
    names the first bad row)."""
    kind = column.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)) \
            or column.null_count:
        return None
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(array)
    if pa.types.is_fixed_size_list(kind):
        width = kind.list_size
    else:
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        if n and (lengths != lengths[0]).any():
            return None
        width = int(lengths[0]) if n else 0
    flat = array.flatten()
    if flat.null_count:
        return None  # a null inside a row: NaN through the row-by-row path
    return flat.to_numpy(zero_copy_only=False).reshape(n, width)


def _encode(acc: CovarianceAccumulator) -> bytes:
    buf = io.BytesIO()
    torch.save(acc.state_dict(), buf)
    return buf.getvalue()
