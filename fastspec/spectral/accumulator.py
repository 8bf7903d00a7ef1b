"""Streaming covariance: O(d²) state, batches of any size, exact merges, all-reduce and
persistence. The numerics of each chunk are :mod:`fastspec.spectral.moments`'; the
covariance is M2/(n−1) (ddof=1), its spectrum :func:`fastspec.spectral.eigen.spectrum_of_scatter`'s.

``CovarianceAccumulator(dim, folds=K)`` with K > 1 makes a
:class:`~fastspec.spectral.folds.FoldedAccumulator` (a subclass, in :mod:`fastspec.spectral.folds`),
which keeps K folds of the rows for jackknife standard errors.
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral
from typing import Any, Iterator

import torch

from .backend import ops_for, placement
from .eigen import spectrum_of_scatter
from .inputs import as_matrix, check_nan_policy, nonfinite_rows
from .kernels import check_products
from .metrics import DEFAULT_FIT_RANGE, check_fit_range
from .moments import F64_SAFE, MIN_FLUSH_ROWS, Moments, Ops, float64_overflow, symmetrize_upper
from .record import Jackknife, MetricsRecord, Spectrum

STATE_FORMAT = "fastspec.CovarianceAccumulator"
STATE_VERSION = 1
#: "float32": chunks are multiplied in IEEE float32 (error ~1e-7·λ₁ on the eigenvalues);
#: "float64": rows are upcast first (~1e-16·λ₁, twice the cost on CPU).
PRECISIONS = ("float32", "float64")


def _largest(x: torch.Tensor) -> float:
    """max |x| (NaN if x holds one), read once without a copy."""
    lo, hi = (float(v) for v in torch.aminmax(x))
    return math.nan if math.isnan(lo) or math.isnan(hi) else max(-lo, hi)


def checked_rows(x: torch.Tensor, name: str, nan_policy: str, offset: int) -> torch.Tensor:
    """The rows of a whole batch checked before any is added: non-finite ones refused or
    dropped (``nan_policy``; ``offset`` rows came before them in the stream, for the error
    message), values a float64 sum of squares cannot hold refused."""
    if not x.numel() or _largest(x) <= F64_SAFE:  # one pass; NaN and Inf fail the test
        return x
    keep = nonfinite_rows(x, name, nan_policy, stream_offset=offset)
    if keep is not None:
        x = x[keep]
    if x.numel() and _largest(x) > F64_SAFE:
        raise float64_overflow(x, name)
    return x


def check_merge(into: "CovarianceAccumulator", other: Any) -> None:
    """Raise unless ``other`` can be merged into ``into``: an accumulator of the same dim and folds."""
    if not isinstance(other, CovarianceAccumulator):
        raise TypeError(f"merge expects a CovarianceAccumulator, got {type(other).__name__}")
    if other.dim != into.dim:
        raise ValueError(f"cannot merge an accumulator of dim={other.dim} into one of dim={into.dim}")
    if other.folds != into.folds:
        raise ValueError(f"cannot merge an accumulator of folds={other.folds} into one of folds={into.folds}: "
                         "folds are merged fold by fold")


def distributed() -> Any:
    """``torch.distributed``, or a RuntimeError saying how to initialise it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "all_reduce needs torch.distributed to be initialised "
            "(torch.distributed.init_process_group, or run under torchrun)"
        )
    return dist


def _is_count(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _init_signature(cls: type) -> inspect.Signature:
    """``cls(...)``'s signature as its ``__init__`` spells it (without ``self``)."""
    sig = inspect.signature(cls.__init__)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


class CovarianceAccumulator:
    """Streaming (ddof=1) covariance of d-dimensional rows, mergeable and all-reducible.

    Memory is O(d²) plus one batch (and fewer than 1024 buffered rows), never O(N·d); the
    state is float64. Each chunk of rows is centred on its own mean and its products merged
    with the pairwise update of Chan, Golub and LeVeque, never the one-pass Σxxᵀ − nμμᵀ,
    which loses the spectrum of activations with large means in float32.

    Parameters
    ----------
    dim : int
        d, the number of features of every row.
    device : str or torch.device, optional
        Where the state lives (default: the first batch's device).
    nan_policy : {"raise", "omit"}, default "raise"
        ``"raise"`` refuses batches with NaN or Inf, naming how many and where the first is;
        ``"omit"`` drops those rows and counts them in ``n_dropped`` (reported again, with a
        warning, by `spectrum`).
    precision : {"float32", "float64"}, default "float32"
        The dtype of the per-chunk products: float32, float16 and bfloat16 rows are
        multiplied in float32 (float64 rows in float64); ``"float64"`` upcasts them first
        (twice the cost on CPU). Float32 products put a noise floor of ~1e-7·λ₁ under the
        spectrum: harmless for RankMe's ``eig`` convention, but the ``sv`` convention takes
        square roots, which lifts that floor to ~3e-4·√λ₁ per eigenvalue on rank-deficient
        data.
    backend : {"auto", "torch", "cuda"}, default "auto"
        On a CUDA device, ``"auto"`` adds chunks and solves with fastspec's CUDA kernels when
        they are available (`fastspec.backends`), ``"cuda"`` requires them (and puts the state
        on the current CUDA device unless ``device`` says otherwise), ``"torch"`` uses the
        torch path. Both compute the same thing with the same float32/float64 contract; the
        choice is made once, when the device is known.
    folds : int, default 1
        K > 1 keeps K disjoint folds of the rows (row i of the stream, dropped rows not
        counted, in fold i mod K whatever the batching; K·d² memory, the same products): the
        statistics are still those of all the rows, and `jackknife` gives RankMe, RankMe_sv
        and α with their delete-a-fold standard errors. The object is then a
        ``fastspec.spectral.FoldedAccumulator``, a subclass.
    products : {"fp32", "tf32x3"}, default "fp32"
        How the CUDA kernels form a chunk's float32 products: ``"fp32"`` (cuBLAS SSYRK in IEEE
        float32) or ``"tf32x3"`` (three TF32 tensor-core GEMMs on a hi/lo split of the centred
        values, float32 accuracy; kernels only).

    Attributes
    ----------
    dim : int
        The number of features.
    n_dropped : int
        Rows dropped so far for holding NaN or Inf (``nan_policy="omit"``).

    Raises
    ------
    ValueError
        A ``dim`` or ``folds`` that is not a positive integer, an unknown ``precision``,
        ``nan_policy`` or ``backend``.
    NotImplementedError
        ``products="tf32x3"`` for rows that do not go through the CUDA kernels, or
        ``backend="cuda"`` where the kernels are not available.

    See Also
    --------
    fastspec.spectrum : The spectrum of an N×d array in one call.

    Examples
    --------
    >>> acts = np.random.default_rng(0).standard_normal((2000, 128)) * np.arange(1, 129) ** -0.5
    >>> acc = fastspec.CovarianceAccumulator(128)
    >>> for batch in np.array_split(acts, 7):  # any batch sizes, any float dtype
    ...     _ = acc.update(batch)
    >>> acc
    CovarianceAccumulator(dim=128, n_samples=2000, device='cpu', n_dropped=0)
    >>> round(acc.spectrum().rankme, 2) == round(fastspec.spectrum(acts).rankme, 2)
    True

    Accumulators of parts of the data merge into that of the whole:

    >>> a = fastspec.CovarianceAccumulator(128).update(acts[:500])
    >>> b = fastspec.CovarianceAccumulator(128).update(acts[500:])
    >>> round(a.merge(b).spectrum().rankme, 2)
    46.93

    With folds, standard errors:

    >>> jk = fastspec.CovarianceAccumulator(128, folds=4).update(acts).jackknife(fit_range=(2, 50))
    >>> round(jk.rankme, 2), round(jk.rankme_se, 2), round(jk.alpha, 2), round(jk.alpha_se, 3)
    (46.93, 0.3, 0.99, 0.011)
    """

    #: The class ``CovarianceAccumulator(dim, folds=K)`` makes for K > 1. FoldedAccumulator
    #: (spectral/folds.py, imported by the package) registers itself here: this module cannot
    #: import the one that subclasses its class.
    _folded: type["CovarianceAccumulator"] | None = None

    def __init_subclass__(cls, *, folded: bool = False, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _init_signature(cls)
        if folded:
            CovarianceAccumulator._folded = cls

    def __new__(cls, *args: Any, **kwargs: Any) -> "CovarianceAccumulator":
        folds = kwargs.get("folds", 1)
        if cls is CovarianceAccumulator and _is_count(folds) and folds > 1:
            assert CovarianceAccumulator._folded is not None, "fastspec.spectral.folds registers it on import"
            cls = CovarianceAccumulator._folded
        return super().__new__(cls)

    def __init__(self, dim: int, *, device: str | torch.device | None = None, nan_policy: str = "raise",
                 precision: str = "float32", backend: str = "auto", folds: int = 1, products: str = "fp32"):
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not _is_count(folds) or folds < 1:
            raise ValueError(f"folds must be a positive integer, got {folds!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.dim = int(dim)
        self.folds = 1  # FoldedAccumulator sets its own
        self.precision = precision
        self.products = check_products(products)
        self.nan_policy = check_nan_policy(nan_policy)
        self.backend = backend
        self._device: torch.device | None = None
        self._ops: Ops | None = None
        self._place(placement(backend, torch.device(device) if device is not None else None))
        self._moments: Moments | None = None
        self._pending: list[torch.Tensor] = []
        self._pending_rows = 0
        self._rows_seen = 0  # rows offered, dropped included: for error messages
        self.n_dropped = 0
        if self._device is not None:
            self._require_products()

    # -- state -------------------------------------------------------------------------
    def _place(self, device: torch.device | None) -> None:
        """Fix where the state lives (None: not yet), and so the path its work takes."""
        self._device = device
        self._ops = None if device is None else ops_for(self.backend, device, self.products)

    @property
    def device(self) -> torch.device:
        """Where the state lives: the ``device`` given or the first batch's (the CPU before
        either)."""
        return self._device if self._device is not None else torch.device("cpu")

    @property
    def ops(self) -> Ops:
        """The path this accumulator's chunks and eigensolves take (the torch path's
        ``fastspec.spectral.moments.TorchOps``, or the kernels' ``fastspec.spectral.kernels.CudaOps``),
        chosen once its device is known (before that, the CPU's)."""
        return self._ops if self._ops is not None else ops_for(self.backend, self.device, self.products)

    @property
    def uses_kernels(self) -> bool:
        """Whether this accumulator's chunks and eigensolves go through fastspec's CUDA
        kernels (a CUDA device and ``backend`` "auto" with the kernels available, or "cuda")."""
        return self.ops.kernels

    def _new_moments(self) -> Moments:
        return Moments(self.dim, self.device, self.ops)

    def _require_products(self) -> None:
        if self.products != "fp32" and not self.uses_kernels:
            raise NotImplementedError(
                f"products={self.products!r} is formed by fastspec's CUDA kernels only, and this accumulator's "
                f"rows are on {self.device} with backend={self.backend!r}; use products='fp32' (the default), "
                "or put the rows on a CUDA device where the kernels are available (fastspec.backends())")

    def _state(self) -> Moments:
        if self._moments is None:
            self._place(self.device)  # fixed from now on: state and batches meet here
            self._moments = self._new_moments()
        return self._moments

    @property
    def n_samples(self) -> int:
        """The rows added so far (buffered ones included, dropped ones not)."""
        return (self._moments.n if self._moments is not None else 0) + self._pending_rows

    @property
    def rows_seen(self) -> int:
        """Rows offered so far, dropped ones included."""
        return self._rows_seen

    def __repr__(self) -> str:
        return (
            f"CovarianceAccumulator(dim={self.dim}, n_samples={self.n_samples}, "
            f"device={str(self.device)!r}, n_dropped={self.n_dropped}"
            + (f", folds={self.folds})" if self.folds > 1 else ")")
        )

    def moments(self) -> Moments:
        """The count, mean and centred scatter (n, mean, M2) of every row added so far.

        Buffered rows are added first. This is the accumulator's own state, not a copy: read
        it, and change it only through this accumulator.

        Returns
        -------
        fastspec.spectral.moments.Moments
            ``n``, and ``tensors()``: the float64 mean (d) and M2 = Σ(x − μ)(x − μ)ᵀ (d×d, its
            upper triangle authoritative).
        """
        self._flush()
        return self._state()

    def empty_like(self) -> "CovarianceAccumulator":
        """An empty accumulator like this one.

        Returns
        -------
        CovarianceAccumulator
            No rows and no folds; this one's ``dim``, device, ``precision``, ``backend`` and
            ``products``.
        """
        return CovarianceAccumulator(self.dim, device=self.device, precision=self.precision, backend=self.backend,
                                     products=self.products)

    def with_moments(self, moments: Moments, *, n_dropped: int = 0, rows_seen: int | None = None
                     ) -> "CovarianceAccumulator":
        """An accumulator like `empty_like`'s holding the rows that ``moments`` describe.

        Parameters
        ----------
        moments : fastspec.spectral.moments.Moments
            The (n, mean, M2) to hold, as `moments` returns them; taken over, not copied.
        n_dropped : int, default 0
            Rows to count as dropped.
        rows_seen : int, optional
            Rows to count as offered (default: ``moments.n + n_dropped``).

        Returns
        -------
        CovarianceAccumulator
            A new accumulator without folds.
        """
        acc = self.empty_like()
        acc._moments = moments
        acc.n_dropped = n_dropped
        acc._rows_seen = moments.n + n_dropped if rows_seen is None else rows_seen
        return acc

    # -- ingestion ---------------------------------------------------------------------
    def update(self, batch: Any, *, name: str = "batch") -> "CovarianceAccumulator":
        """Add the rows of a batch.

        An empty batch is a no-op. A batch with a fault changes nothing.

        Parameters
        ----------
        batch : torch.Tensor, numpy.ndarray or DLPack array
            N×dim rows (torch on any device, NumPy, DLPack; any float dtype). The first batch
            fixes the device, unless ``device`` was given.
        name : str, default "batch"
            What the batch is, in error messages (e.g. ``"layer 3"``).

        Returns
        -------
        CovarianceAccumulator
            This accumulator, for chaining.

        Raises
        ------
        ValueError
            A batch that is not 2-D or not ``dim`` wide, or holds NaN or Inf under
            ``nan_policy="raise"``.
        TypeError
            A batch that is not floating point.
        OverflowError
            Values whose float64 sum of squares overflows.

        Examples
        --------
        >>> acc = fastspec.CovarianceAccumulator(3)
        >>> acc.update(np.ones((2, 3))).update(torch.zeros(4, 3)).n_samples
        6
        >>> acc.update(np.ones((2, 4)), name="layer 3")
        Traceback (most recent call last):
        ...
        ValueError: layer 3 has 4 features (shape (2, 4)), but this accumulator was made for dim=3
        """
        x = as_matrix(batch, name)
        if x.shape[1] != self.dim:
            raise ValueError(
                f"{name} has {x.shape[1]} features (shape {tuple(x.shape)}), but this "
                f"accumulator was made for dim={self.dim}"
            )
        if x.shape[0] == 0:
            return self
        if self._device is None:  # the first batch decides where the state lives
            self._place(x.device)
            try:
                self._require_products()
            except NotImplementedError:
                self._place(None)  # nothing changed: the next batch is checked again
                raise
        self._add(x, name)
        return self

    def _add(self, x: torch.Tensor, name: str) -> None:
        """Add a batch of the right width (the step :class:`FoldedAccumulator` replaces)."""
        offset = self._rows_seen
        if x.shape[0] < MIN_FLUSH_ROWS:
            # Small batches are checked now, so that a fault is reported by the call that
            # brought it rather than by a later flush.
            total = int(x.shape[0])
            x = checked_rows(x, name, self.nan_policy, offset)
            self._rows_seen += total
            self.n_dropped += total - int(x.shape[0])
            self._buffer(x.to(self.device))
            return
        self._flush()
        chunks = list(self._chunks(x))
        # A failing add_chunk changes nothing, so one chunk can go straight into the state;
        # several go through a private set first, so that a fault in a later chunk leaves
        # the state as it was.
        target = self._state() if len(chunks) == 1 else self._new_moments()
        dropped = 0
        try:
            for chunk in chunks:
                chunk = self._compute(chunk)
                if target.add_chunk(chunk):
                    continue
                if self.nan_policy == "raise":  # count over the whole batch, not this chunk
                    nonfinite_rows(x, name, "raise", stream_offset=offset)
                keep = nonfinite_rows(chunk, name, "omit")
                assert keep is not None
                dropped += int((~keep).sum())
                if keep.any():
                    target.add_chunk(chunk[keep])
        except OverflowError as err:
            raise OverflowError(f"{name}: {err}") from None
        if target is not self._moments and target.n:
            assert target.mean is not None and target.m2 is not None
            self._state().add_centred(target.n, target.mean, target.m2, own=True)
        self.n_dropped += dropped
        self._rows_seen += int(x.shape[0])

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        """Rows on the state's device, in float64 when ``precision="float64"`` asks for it."""
        return x.to(self.device, torch.float64 if self.precision == "float64" else None)

    def _chunks(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        rows = self.ops.chunk_rows(self.dim)
        for start in range(0, x.shape[0], rows):
            yield x[start : start + rows]

    def _buffer(self, x: torch.Tensor) -> None:
        if x.shape[0] == 0:
            return
        self._pending.append(x.clone())  # the caller may reuse its batch tensor
        self._pending_rows += int(x.shape[0])
        if self._pending_rows >= MIN_FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        rows = self._compute(torch.cat(self._pending))
        # Buffered rows were checked finite and below F64_SAFE, so this cannot fail.
        added = self._state().add_chunk(rows)
        assert added, "buffered rows were checked on arrival"
        self._pending, self._pending_rows = [], 0

    # -- combining ---------------------------------------------------------------------
    def merge(self, other: "CovarianceAccumulator") -> "CovarianceAccumulator":
        """Add another accumulator's rows to this one (Chan's pairwise update).

        The result equals an accumulator that saw both sets of rows, to rounding.

        Parameters
        ----------
        other : CovarianceAccumulator
            An accumulator of the same ``dim`` and ``folds`` (merged fold by fold); unchanged.

        Returns
        -------
        CovarianceAccumulator
            This accumulator, for chaining.

        Raises
        ------
        TypeError
            ``other`` is not a `CovarianceAccumulator`.
        ValueError
            ``other`` has another ``dim`` or ``folds``.

        Examples
        --------
        >>> rows = np.random.default_rng(0).standard_normal((100, 8))
        >>> a = fastspec.CovarianceAccumulator(8).update(rows[:30])
        >>> a.merge(fastspec.CovarianceAccumulator(8).update(rows[30:])).n_samples
        100
        >>> torch.allclose(a.covariance(), torch.from_numpy(np.cov(rows.T)))
        True
        """
        check_merge(self, other)
        other._flush()
        self._flush()
        if other._moments is not None and other._moments.n:
            mean, m2 = other._moments.tensors()
            self._state().add_centred(other._moments.n, mean.to(self.device), m2.to(self.device))
        self.n_dropped += other.n_dropped
        self._rows_seen += other._rows_seen
        return self

    def all_reduce(self, group: Any = None) -> "CovarianceAccumulator":
        """Combine the accumulators of every rank of ``group`` (torch.distributed), in place.

        Afterwards every rank holds the statistics of all ranks' rows, equal to merging them
        one by one. Uses one all_gather of (n, mean) and one all_reduce(SUM) of d×d: each
        rank shifts its M2 to the global mean, M2_k + n_k (μ_k − μ)(μ_k − μ)ᵀ, and the sum
        of those is the global M2. With folds, each fold is all-reduced (fold f of every rank
        is fold f of the whole).

        Parameters
        ----------
        group : torch.distributed.ProcessGroup, optional
            The ranks to combine (default: the default group). The state must live on a
            device its backend supports (CPU for gloo, CUDA for NCCL).

        Returns
        -------
        CovarianceAccumulator
            This accumulator, for chaining.

        Raises
        ------
        RuntimeError
            torch.distributed is not initialised (``init_process_group``, or run under
            torchrun).
        ValueError
            Ranks hold accumulators of different dims.
        """
        dist = distributed()
        self._flush()
        state = self._state()
        world = dist.get_world_size(group)
        header = torch.tensor([float(self.dim), float(state.n), float(self.n_dropped), float(self._rows_seen)],
                              dtype=torch.float64, device=self.device)
        headers = [torch.empty_like(header) for _ in range(world)]
        dist.all_gather(headers, header, group=group)
        dims = [int(h[0]) for h in headers]
        if len(set(dims)) != 1:
            raise ValueError(f"all_reduce: ranks hold accumulators of different dims {dims}")
        local_mean, local_m2 = state.tensors()
        means = [torch.empty_like(local_mean) for _ in range(world)]
        dist.all_gather(means, local_mean, group=group)
        ns = [int(h[1]) for h in headers]
        total = sum(ns)
        if total == 0:
            return self
        mean = sum(n * m for n, m in zip(ns, means)) / total
        delta = local_mean - mean
        m2 = local_m2.clone()
        if state.n:
            m2.addr_(delta, delta, alpha=float(state.n))
        dist.all_reduce(m2, op=dist.ReduceOp.SUM, group=group)
        state.n, state.mean, state.m2 = total, mean, m2
        self.n_dropped = sum(int(h[2]) for h in headers)
        self._rows_seen = sum(int(h[3]) for h in headers)
        return self

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The statistics, to save and resume from (`load_state_dict`).

        Returns
        -------
        dict
            Plain values and float64 CPU tensors, for ``torch.save``: ``format``, ``version``,
            ``dim``, ``n_samples``, ``n_dropped``, ``rows_seen``, ``mean`` (d) and ``m2``
            (d×d, the centred scatter). With folds, also ``folds`` and ``fold_states`` (each
            fold's); the other keys are then the pooled rows', so an accumulator without
            folds can load it.

        Examples
        --------
        >>> acc = fastspec.CovarianceAccumulator(4).update(np.eye(4))
        >>> state = acc.state_dict()
        >>> state["n_samples"], state["m2"].shape
        (4, torch.Size([4, 4]))
        >>> again = fastspec.CovarianceAccumulator(4)
        >>> again.load_state_dict(state)
        >>> torch.equal(again.covariance(), acc.covariance())
        True
        """
        self._flush()
        mean, m2 = self._state().tensors()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "dim": self.dim,
            "n_samples": self._state().n,
            "n_dropped": self.n_dropped,
            "rows_seen": self._rows_seen,
            "mean": mean.cpu().clone(),
            "m2": symmetrize_upper(m2).cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this accumulator's statistics by those of `state_dict`'s output.

        Everything is checked before anything is assigned: a bad state changes nothing.

        Parameters
        ----------
        state : dict
            What `state_dict` returned (of an accumulator of the same ``dim``; with folds,
            of the same ``folds``), e.g. read back with ``torch.load``.

        Raises
        ------
        ValueError
            Not a state of this format, version, ``dim`` or ``folds``, or statistics that no
            rows could have (non-finite, an asymmetric M2 or one with a negative diagonal).
        TypeError
            ``mean`` or ``m2`` is not a floating tensor.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("not a CovarianceAccumulator state_dict (missing format tag)")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state_dict version {state.get('version')!r} is not supported (expected {STATE_VERSION})")
        if state.get("dim") != self.dim:
            raise ValueError(f"state_dict is for dim={state.get('dim')}, this accumulator has dim={self.dim}")
        mean, m2, n = state.get("mean"), state.get("m2"), state.get("n_samples")
        # Everything is checked before anything is assigned: a bad state changes nothing.
        for key, t, shape in (("mean", mean, (self.dim,)), ("m2", m2, (self.dim, self.dim))):
            if not (isinstance(t, torch.Tensor) and tuple(t.shape) == shape):
                raise ValueError(f"state_dict {key!r} must be a tensor of shape {shape}, got "
                                 f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
            if not t.dtype.is_floating_point:
                raise TypeError(f"state_dict {key!r} must be a floating tensor, got {t.dtype}")
        n_dropped, rows_seen = state.get("n_dropped", 0), state.get("rows_seen")
        for key, value in (("n_samples", n), ("n_dropped", n_dropped), ("rows_seen", rows_seen)):
            if value is None and key == "rows_seen":
                continue
            if not (isinstance(value, Integral) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"state_dict {key!r} must be a non-negative int, got {value!r}")
        if rows_seen is not None and rows_seen < n + n_dropped:
            raise ValueError(f"state_dict 'rows_seen' = {rows_seen} is fewer than n_samples + n_dropped = {n + n_dropped}")
        mean64 = mean.detach().to(self.device, torch.float64).clone()
        m2_64 = m2.detach().to(self.device, torch.float64).clone()
        if not (bool(torch.isfinite(mean64).all()) and bool(torch.isfinite(m2_64).all())):
            raise ValueError("state_dict holds non-finite statistics")
        # M2 is a sum of outer products: symmetric, with a non-negative diagonal (and zero
        # before two rows). Rounding allows ~1e-12 relative asymmetry, not more.
        scale = float(m2_64.abs().max()) if m2_64.numel() else 0.0
        if float((m2_64 - m2_64.T).abs().max()) > 1e-9 * scale:
            raise ValueError("state_dict 'm2' is not symmetric: not the M2 of any rows")
        if float(m2_64.diagonal().min()) < -1e-9 * scale:
            raise ValueError(f"state_dict 'm2' has a negative diagonal entry ({float(m2_64.diagonal().min()):.3g}): "
                             "not the M2 of any rows")
        if n < 2 and scale > 0:
            raise ValueError(f"state_dict 'm2' is non-zero for n_samples={n}: not the M2 of any rows")
        moments = self._new_moments()
        moments.n, moments.mean, moments.m2 = int(n), mean64, m2_64
        self._place(self.device)
        self._moments = moments
        self._pending, self._pending_rows = [], 0
        self.n_dropped = int(n_dropped)
        self._rows_seen = int(rows_seen if rows_seen is not None else n + n_dropped)

    # -- results -----------------------------------------------------------------------
    @property
    def mean(self) -> torch.Tensor:
        """Column means (float64)."""
        return self.moments().tensors()[0].clone()

    def _scatter(self, center: bool) -> torch.Tensor:
        """(n−1)·covariance with only the upper triangle authoritative (no symmetrising copy)."""
        state = self.moments()
        if state.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples; this accumulator has {state.n}")
        mean, m2 = state.tensors()
        if center:
            return m2
        return m2.clone().addr_(mean, mean, alpha=float(state.n))

    def covariance(self, *, center: bool = True) -> torch.Tensor:
        """The covariance matrix of the rows seen so far.

        Parameters
        ----------
        center : bool, default True
            True: M2/(n−1) (ddof=1); False: the raw second-moment matrix XᵀX/(n−1), which
            equals it for data of exactly zero mean.

        Returns
        -------
        torch.Tensor
            d×d, float64, symmetric, on the accumulator's device.

        Raises
        ------
        ValueError
            Fewer than 2 rows.

        Examples
        --------
        >>> rows = np.random.default_rng(0).standard_normal((100, 3))
        >>> cov = fastspec.CovarianceAccumulator(3).update(rows).covariance()
        >>> cov.dtype, np.allclose(cov.numpy(), np.cov(rows.T))
        (torch.float64, True)
        """
        return symmetrize_upper(self._scatter(center)) / (self._state().n - 1)

    def spectrum(self, *, center: bool = True, top_k_eigenvectors: int = 0) -> Spectrum:
        """The eigenspectrum of the rows seen so far.

        Parameters
        ----------
        center : bool, default True
            Of the covariance (True) or of the raw second-moment matrix (False), as
            `covariance`.
        top_k_eigenvectors : int, default 0
            Also return the k leading eigenvectors (d × k), k at most min(n − 1, d) centred,
            min(n, d) raw.

        Returns
        -------
        fastspec.Spectrum
            The min(n, d) leading eigenvalues of `covariance`, descending, float64.

        Raises
        ------
        ValueError
            Fewer than 2 rows, or ``top_k_eigenvectors`` beyond the rank.

        Examples
        --------
        >>> acts = np.random.default_rng(0).standard_normal((2000, 128)) * np.arange(1, 129) ** -0.5
        >>> s = fastspec.CovarianceAccumulator(128).update(acts).spectrum(top_k_eigenvectors=3)
        >>> round(s.rankme, 2), s.eigenvectors.shape
        (46.93, (128, 3))
        """
        return spectrum_of_scatter(
            self._scatter(center),
            n_samples=self._state().n,
            center=center,
            top_k_eigenvectors=top_k_eigenvectors,
            n_dropped=self.n_dropped,
            ops=self.ops,
        )

    def metrics(self, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE) -> MetricsRecord:
        """The metrics of every row: RankMe both ways, α and its fit, n, d (and with folds the
        jackknife standard errors).

        Two eigensolves (the centred and the raw spectrum); with K folds, 2K more.

        Parameters
        ----------
        fit_range : tuple of int, default (11, 100)
            The α fit's 0-based (start, stop), as :func:`fastspec.alpha_req` takes it.

        Returns
        -------
        fastspec.spectral.MetricsRecord
            ``rankme``, ``rankme_sv`` (Garrido et al.'s, of the raw spectrum), ``alpha``,
            ``alpha_intercept``, ``alpha_r2`` (None, and ``alpha_error`` saying why, when the
            spectrum is too short for ``fit_range``), ``n_samples``, ``dim``, ``rank_bound``,
            with folds ``rankme_se``, ``rankme_sv_se`` and ``alpha_se``; ``to_dict()`` gives
            the JSON record that trace writes, and ``spectra`` the two spectra.

        Raises
        ------
        ValueError
            Fewer than 2 rows, or a malformed ``fit_range``.

        Examples
        --------
        >>> acts = np.random.default_rng(0).standard_normal((2000, 128)) * np.arange(1, 129) ** -0.5
        >>> m = fastspec.CovarianceAccumulator(128).update(acts).metrics(fit_range=(2, 50))
        >>> round(m.rankme, 2), round(m.rankme_sv, 2), round(m.alpha, 2), m.n_samples
        (46.93, 106.19, 0.99, 2000)
        """
        return MetricsRecord.of(self.spectrum(), self.spectrum(center=False), fit_range=fit_range)

    def jackknife(self, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE,
                  spectra: tuple[Spectrum, Spectrum] | None = None) -> Jackknife:
        """RankMe, RankMe_sv and α of all the rows with their jackknife standard errors.

        Needs folds (``CovarianceAccumulator(dim, folds=K)``, K ≥ 2): with θ₍ₖ₎ the estimate
        from every fold but k and θ̄ their mean, SE = √((K − 1)/K · Σₖ (θ₍ₖ₎ − θ̄)²)
        (Quenouille and Tukey's delete-a-group jackknife) when the folds are of equal size;
        otherwise its generalisation to folds of m_k rows (Busing, Meijer and van der Leeden,
        1999), which weighs each fold by h_k = N/m_k. The estimates are those of all the rows,
        not bias-corrected. Costs 2(K + 1) eigensolves of d × d, or 2K with ``spectra``.

        Parameters
        ----------
        fit_range : tuple of int, default (11, 100)
            The α fit's 0-based (start, stop), as :func:`fastspec.alpha_req` takes it.
        spectra : tuple of fastspec.Spectrum, optional
            `spectrum` and ``spectrum(center=False)`` of all the rows, when the caller has
            them already (saves two eigensolves).

        Returns
        -------
        fastspec.spectral.Jackknife
            ``rankme``, ``rankme_se``, ``rankme_sv``, ``rankme_sv_se``, ``alpha``, ``alpha_se``
            (both None when the spectrum, or one without a fold, is too short for
            ``fit_range``), ``folds``, ``n_samples``, ``fit_range``, and ``error``: why the
            standard errors are NaN on degenerate data, where the rows without some fold have
            no variance above rounding (None otherwise).

        Raises
        ------
        ValueError
            An accumulator without folds; a fold with no rows, or fewer than 2 rows without
            some fold; a malformed ``fit_range``.

        Examples
        --------
        >>> acts = np.random.default_rng(0).standard_normal((2000, 128)) * np.arange(1, 129) ** -0.5
        >>> acc = fastspec.CovarianceAccumulator(128, folds=4).update(acts)
        >>> jk = acc.jackknife(fit_range=(2, 50))
        >>> round(jk.rankme, 2), round(jk.rankme_se, 2), jk.folds
        (46.93, 0.3, 4)
        """
        check_fit_range(fit_range)
        raise ValueError("jackknife needs folds: make the accumulator with CovarianceAccumulator(dim, folds=K), K >= 2")


# inspect.signature and Sphinx read a class's signature from its own __new__ before __init__,
# and __new__ here takes (*args, **kwargs) to pick the folded subclass: give them __init__'s.
CovarianceAccumulator.__signature__ = _init_signature(CovarianceAccumulator)

