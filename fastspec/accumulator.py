"""Streaming covariance: O(d²) state, batches of any size, exact merges.

Numerical convention (DESIGN.md): every chunk is centred on its own mean before its cross
product is formed (in float32 for bf16/fp16/fp32 input, float64 for float64 input), and
chunks are merged into float64 state with the pairwise update of Chan, Golub and LeVeque:

    n = n_a + n_b,   δ = μ_b − μ_a,   μ = μ_a + δ·n_b/n,   M2 = M2_a + M2_b + δδᵀ·n_a·n_b/n

so columns with a large mean (LLM activations have a few) never meet the one-pass
Σxxᵀ − nμμᵀ cancellation. The covariance is M2/(n−1) (ddof=1).
"""

from __future__ import annotations

import contextlib
from numbers import Integral
from typing import Any, Iterator

import torch

from . import _cuda
from ._inputs import as_matrix, check_nan_policy, nonfinite_rows

STATE_FORMAT = "fastspec.CovarianceAccumulator"
STATE_VERSION = 1
# Column-block width of the one-triangle product: wide enough for GEMM efficiency, narrow
# enough that the skipped lower blocks save most of the second half of the flops.
_BLOCK = 512
# Rows are buffered until there are this many, so that small batches (16 sequences at a
# time in extraction) still feed the GEMM efficiently and pay the O(d²) merge rarely.
_MIN_FLUSH_ROWS = 1024
# Bytes of one centred chunk; bounds the working copy whatever the batch size.
_CHUNK_BYTES = 64 << 20
# With the CUDA kernels a chunk is larger, so that the O(d²) merge after each SYRK stays a
# few percent of it (at d = 8192: 8192 rows, a 256 MiB float32 workspace).
_CUDA_CHUNK_BYTES = 256 << 20
BACKENDS = ("auto", "torch", "cuda")


# Beyond this magnitude a float64 sum of squares can overflow; such rows are refused.
_F64_SAFE = 1e150
#: "float32": chunks are multiplied in IEEE float32 (error ~1e-7·λ₁ on the eigenvalues);
#: "float64": rows are upcast first (~1e-16·λ₁, twice the cost on CPU).
PRECISIONS = ("float32", "float64")


def chunk_rows(dim: int, *, kernels: bool = False) -> int:
    """Rows per chunk for dim features: about _CHUNK_BYTES of float32 (_CUDA_CHUNK_BYTES
    with the CUDA kernels), at least 1024."""
    return max(_MIN_FLUSH_ROWS, (_CUDA_CHUNK_BYTES if kernels else _CHUNK_BYTES) // (4 * dim))


def float64_overflow(x: torch.Tensor, name: str | None = None) -> OverflowError:
    """The error for rows whose squares a float64 sum cannot hold (prefixed by the input's
    name where the raiser knows it)."""
    prefix = f"{name}: " if name else ""
    return OverflowError(f"{prefix}|values| up to {float(x.abs().max()):.3g} overflow a float64 sum of squares")


@contextlib.contextmanager
def exact_fp32_matmul() -> Iterator[None]:
    """Float32 products in true float32 (IEEE) whatever the caller set: TF32 on CUDA or
    bf16 on CPU ("high"/"medium" precision, common in LLM code) would cost ~1e-5 on RankMe."""
    matmuls = [m for m in (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul) if hasattr(m, "fp32_precision")]
    saved = [m.fp32_precision for m in matmuls]
    for m in matmuls:
        m.fp32_precision = "ieee"
    try:
        yield
    finally:
        for m, value in zip(matmuls, saved):
            m.fp32_precision = value


def upper_gram(y: torch.Tensor) -> torch.Tensor:
    """yᵀy with only the upper triangle filled (block-wise), in y's dtype.

    A symmetric product needs only one triangle: with column blocks of width 512 this does
    (k+1)/2k of a full GEMM's work for k blocks. The lower triangle is left at zero.
    """
    d = y.shape[1]
    with exact_fp32_matmul():
        if d <= 2 * _BLOCK:
            return y.T @ y
        out = torch.zeros(d, d, dtype=y.dtype, device=y.device)
        for i in range(0, d, _BLOCK):
            j = min(i + _BLOCK, d)
            out[i:j, i:] = y[:, i:j].T @ y[:, i:]
    return out


def add_upper_(acc: torch.Tensor, p: torch.Tensor) -> None:
    """acc += p on the upper triangle's row blocks only (the rest of p is not read): a
    float32 → float64 add over the whole matrix costs five times as much."""
    d = acc.shape[0]
    if d <= 2 * _BLOCK:
        acc.add_(p)
        return
    for i in range(0, d, _BLOCK):
        acc[i : i + _BLOCK, i:].add_(p[i : i + _BLOCK, i:])


def symmetrize_upper(m: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose upper triangle is m's."""
    return torch.triu(m) + torch.triu(m, 1).T


class _Moments:
    """n, mean and M2 (float64, upper triangle authoritative) of a set of rows.

    Tensors are made by the first rows that arrive, and taken over rather than copied
    where the caller hands them over, so streaming pays one d×d pass per chunk, not four.
    """

    def __init__(self, dim: int, device: torch.device, kernels: bool = False):
        self.dim, self.device = dim, device
        self.kernels = kernels  # fastspec's CUDA kernels add the chunks (device is CUDA)
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, M2), zeros when no row has arrived."""
        if self.mean is None or self.m2 is None:
            self.mean = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
            self.m2 = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)
        return self.mean, self.m2

    def add_centred(self, n: int, mean: torch.Tensor, m2: torch.Tensor, *, own: bool = False) -> None:
        """Chan's pairwise merge of another set's (n, mean, M2) into this one; with
        ``own=True`` the tensors are taken over instead of copied when this set is empty."""
        if n == 0:
            return
        if self.n == 0:
            self.n = n
            self.mean, self.m2 = (mean, m2) if own else (mean.clone(), m2.clone())
            return
        assert self.mean is not None and self.m2 is not None
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2
        self.m2.addr_(delta, delta, alpha=self.n * n / total)
        self.mean += delta * (n / total)
        self.n = total

    def add_chunk(self, x: torch.Tensor) -> bool:
        """Add the rows ``x``. Returns False, adding nothing, if ``x`` holds a non-finite
        value (the caller locates it). A float32 product that overflows is redone in
        float64; float64 input beyond ~1e150 raises OverflowError. Either way a failure
        leaves this set as it was."""
        if self.kernels and x.dtype in _cuda.INPUT_DTYPES:
            # Same numerics on the GPU (csrc/spectral): float32 shift, IEEE float32 SYRK,
            # fused exact centring and Chan merge into float64.
            if _cuda.add_chunk(self, x):
                return True
            if not bool(torch.isfinite(x).all()):
                return False
            return self.add_chunk(x.to(torch.float64))  # float32 overflow: redo in float64
        b = x.shape[0]
        cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        shift = x.sum(0, dtype=cdtype) / b  # approximate mean, in the compute dtype
        y = torch.sub(x, shift)  # upcasts bf16/fp16 as it reads
        # What is left of the mean after the shift: small, so a compute-dtype sum is exact
        # enough (a float64-dtype reduction costs 15× more here).
        s = y.sum(0).to(torch.float64)
        p = upper_gram(y)
        if not (bool(torch.isfinite(p.diagonal()).all()) and bool(torch.isfinite(s).all())):
            if not bool(torch.isfinite(x).all()):
                return False
            if cdtype == torch.float32:
                return self.add_chunk(x.to(torch.float64))
            raise float64_overflow(x)
        mean = shift.to(torch.float64) + s / b
        if self.n == 0:
            # Exact centring of the shifted rows: Σ(y − s/b)(y − s/b)ᵀ = yᵀy − ssᵀ/b.
            self.n, self.mean, self.m2 = b, mean, p.to(torch.float64).addr_(s, s, alpha=-1.0 / b)
            return True
        assert self.mean is not None and self.m2 is not None
        # The same, fused with Chan's merge so M2 is passed over once: M2 += yᵀy (read in
        # the compute dtype, summed in float64), then the two rank-one corrections.
        total = self.n + b
        delta = mean - self.mean
        add_upper_(self.m2, p)
        self.m2.addr_(s, s, alpha=-1.0 / b)
        self.m2.addr_(delta, delta, alpha=self.n * b / total)
        self.mean += delta * (b / total)
        self.n = total
        return True


class CovarianceAccumulator:
    """Streaming (ddof=1) covariance of d-dimensional rows, mergeable and all-reducible.

    Memory is O(d²) plus one batch (and fewer than 1024 buffered rows), never O(N·d).
    State is float64. ``nan_policy="raise"`` (default) refuses batches with NaN/Inf,
    naming how many and where the first is; ``"omit"`` drops those rows and counts them in
    :attr:`n_dropped` (reported again by :meth:`spectrum`). ``precision``: the dtype of the
    per-chunk products (float32/float16/bfloat16 rows are multiplied in float32 by default;
    ``"float64"`` upcasts them first). Float32 products put a noise floor of ~1e-7·λ₁ under
    the spectrum: harmless for RankMe's ``eig`` convention, but the ``sv`` convention takes
    square roots, which lifts that floor to ~3e-4·√λ₁ per eigenvalue on rank-deficient data.

    ``device``: where the state lives (default: the first batch's device). On a CUDA device,
    ``backend="auto"`` (default) adds chunks and solves with fastspec's CUDA kernels when
    they are available (``fastspec.backends()``), ``"cuda"`` requires them (and puts the
    state on the current CUDA device unless ``device`` says otherwise), ``"torch"`` uses the
    torch path. Both compute the same thing with the same float32/float64 contract.

    >>> acc = CovarianceAccumulator(4096)
    >>> for batch in batches:
    ...     acc.update(batch)
    >>> acc.spectrum().rankme
    """

    def __init__(self, dim: int, *, device: str | torch.device | None = None, nan_policy: str = "raise",
                 precision: str = "float32", backend: str = "auto"):
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.dim = int(dim)
        self.precision = precision
        self.nan_policy = check_nan_policy(nan_policy)
        self.backend = backend
        self._device = torch.device(device) if device is not None else None
        if backend == "cuda":
            _cuda.require("backend='cuda'")
            if self._device is None:
                self._device = torch.device("cuda", torch.cuda.current_device())
            elif self._device.type != "cuda":
                raise ValueError(f"backend='cuda' keeps the state on a CUDA device, got device={str(self._device)!r}")
            _cuda.require("backend='cuda'", self._device)
        self._moments: _Moments | None = None
        self._pending: list[torch.Tensor] = []
        self._pending_rows = 0
        self._rows_seen = 0  # rows offered, dropped included: for error messages
        self.n_dropped = 0

    # -- state -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device if self._device is not None else torch.device("cpu")

    @property
    def uses_kernels(self) -> bool:
        """Whether this accumulator's chunks and eigensolves go through fastspec's CUDA
        kernels (a CUDA device and ``backend`` "auto" with the kernels available, or "cuda")."""
        return self.backend != "torch" and self.device.type == "cuda" and _cuda.available(self.device)

    def _new_moments(self) -> _Moments:
        return _Moments(self.dim, self.device, kernels=self.uses_kernels)

    def _state(self) -> _Moments:
        if self._moments is None:
            self._device = self.device  # fixed from now on: state and batches meet here
            self._moments = self._new_moments()
        return self._moments

    @property
    def n_samples(self) -> int:
        return (self._moments.n if self._moments is not None else 0) + self._pending_rows

    def __repr__(self) -> str:
        return (
            f"CovarianceAccumulator(dim={self.dim}, n_samples={self.n_samples}, "
            f"device={str(self.device)!r}, n_dropped={self.n_dropped})"
        )

    # -- ingestion ---------------------------------------------------------------------
    def update(self, batch: Any) -> "CovarianceAccumulator":
        """Add the rows of an N×dim batch (torch on any device, NumPy, DLPack; any float
        dtype). An empty batch is a no-op. A batch with a fault changes nothing."""
        return self._update(as_matrix(batch, "batch"), "batch")

    def _update(self, x: torch.Tensor, name: str) -> "CovarianceAccumulator":
        if x.shape[1] != self.dim:
            raise ValueError(
                f"{name} has {x.shape[1]} features (shape {tuple(x.shape)}), but this "
                f"accumulator was made for dim={self.dim}"
            )
        if x.shape[0] == 0:
            return self
        if self._device is None:  # the first batch decides where the state lives
            self._device = x.device
        offset = self._rows_seen
        if x.shape[0] < _MIN_FLUSH_ROWS:
            # Small batches are checked now, so that a fault is reported by the call that
            # brought it rather than by a later flush.
            keep = nonfinite_rows(x, name, offset, self.nan_policy)
            if keep is not None:
                x = x[keep]
            if x.numel() and float(x.abs().max()) > _F64_SAFE:
                raise float64_overflow(x, name)
            self._rows_seen += int(keep.numel() if keep is not None else x.shape[0])
            self.n_dropped += int((~keep).sum()) if keep is not None else 0
            self._buffer(x.to(self.device))
            return self
        self._flush()
        chunks = list(self._chunks(x))
        # A failing add_chunk changes nothing, so one chunk can go straight into the state;
        # several go through a private set first, so that a fault in a later chunk leaves
        # the state as it was.
        target = self._state() if len(chunks) == 1 else self._new_moments()
        dropped = 0
        try:
            for start, chunk in chunks:
                chunk = self._compute(chunk)
                if target.add_chunk(chunk):
                    continue
                if self.nan_policy == "raise":  # count over the whole batch, not this chunk
                    nonfinite_rows(x, name, offset, "raise")
                keep = nonfinite_rows(chunk, name, offset + start, "omit")
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
        return self

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        """Rows on the state's device, in float64 when ``precision="float64"`` asks for it."""
        return x.to(self.device, torch.float64 if self.precision == "float64" else None)

    def _chunks(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        rows = chunk_rows(self.dim, kernels=self.uses_kernels)
        for start in range(0, x.shape[0], rows):
            yield start, x[start : start + rows]

    def _buffer(self, x: torch.Tensor) -> None:
        if x.shape[0] == 0:
            return
        self._pending.append(x.clone())  # the caller may reuse its batch tensor
        self._pending_rows += int(x.shape[0])
        if self._pending_rows >= _MIN_FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        rows = self._compute(torch.cat(self._pending))
        # Buffered rows were checked finite and below _F64_SAFE, so this cannot fail.
        added = self._state().add_chunk(rows)
        assert added, "buffered rows were checked on arrival"
        self._pending, self._pending_rows = [], 0

    # -- combining ---------------------------------------------------------------------
    def merge(self, other: "CovarianceAccumulator") -> "CovarianceAccumulator":
        """Add another accumulator's rows to this one (Chan's update); ``other`` is unchanged."""
        if not isinstance(other, CovarianceAccumulator):
            raise TypeError(f"merge expects a CovarianceAccumulator, got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"cannot merge an accumulator of dim={other.dim} into one of dim={self.dim}")
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
        of those is the global M2. The state must live on a device the backend supports
        (CPU for gloo, CUDA for NCCL).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "all_reduce needs torch.distributed to be initialised "
                "(torch.distributed.init_process_group, or run under torchrun)"
            )
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
        """A dict of plain values and float64 CPU tensors, for ``torch.save``."""
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
        """Replace this accumulator's statistics by those of :meth:`state_dict`'s output."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("not a CovarianceAccumulator state_dict (missing format tag)")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state_dict version {state.get('version')!r} is not supported (expected {STATE_VERSION})")
        if state.get("dim") != self.dim:
            raise ValueError(f"state_dict is for dim={state.get('dim')}, this accumulator has dim={self.dim}")
        mean, m2, n = state.get("mean"), state.get("m2"), state.get("n_samples")
        if not (isinstance(mean, torch.Tensor) and tuple(mean.shape) == (self.dim,)):
            raise ValueError(f"state_dict 'mean' must be a tensor of shape ({self.dim},)")
        if not (isinstance(m2, torch.Tensor) and tuple(m2.shape) == (self.dim, self.dim)):
            raise ValueError(f"state_dict 'm2' must be a tensor of shape ({self.dim}, {self.dim})")
        if not (isinstance(n, Integral) and n >= 0):
            raise ValueError(f"state_dict 'n_samples' must be a non-negative int, got {n!r}")
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(m2).all())):
            raise ValueError("state_dict holds non-finite statistics")
        moments = self._new_moments()
        moments.n = int(n)
        moments.mean = mean.to(self.device, torch.float64).clone()
        moments.m2 = m2.to(self.device, torch.float64).clone()
        self._device = self.device
        self._moments = moments
        self._pending, self._pending_rows = [], 0
        self.n_dropped = int(state.get("n_dropped", 0))
        self._rows_seen = int(state.get("rows_seen", n + self.n_dropped))

    # -- results -----------------------------------------------------------------------
    @property
    def mean(self) -> torch.Tensor:
        """Column means (float64)."""
        self._flush()
        return self._state().tensors()[0].clone()

    def _scatter(self, center: bool) -> torch.Tensor:
        """(n−1)·covariance with only the upper triangle authoritative (no symmetrising copy)."""
        self._flush()
        state = self._state()
        if state.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples; this accumulator has {state.n}")
        mean, m2 = state.tensors()
        if center:
            return m2
        return m2.clone().addr_(mean, mean, alpha=float(state.n))

    def covariance(self, *, center: bool = True) -> torch.Tensor:
        """The d×d float64 covariance M2/(n−1) (ddof=1); with ``center=False`` the raw
        second-moment matrix XᵀX/(n−1), which equals it for data of exactly zero mean."""
        return symmetrize_upper(self._scatter(center)) / (self._state().n - 1)

    def spectrum(self, *, center: bool = True, top_k_eigenvectors: int = 0):
        """The :class:`fastspec.Spectrum` of the rows seen so far (eigenvalues of
        :meth:`covariance`, the min(n, d) leading ones, descending)."""
        from .spectrum import spectrum_of_scatter

        return spectrum_of_scatter(
            self._scatter(center),
            n_samples=self._state().n,
            center=center,
            top_k_eigenvectors=top_k_eigenvectors,
            n_dropped=self.n_dropped,
            kernels=self.uses_kernels,
        )
