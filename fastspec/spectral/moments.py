"""The per-chunk numerics under every spectrum: the moments (n, mean, M2) of a set of rows,
a chunk's product, and Chan's merge.

Numerical convention (DESIGN.md): every chunk is centred on its own mean before its cross
product is formed (in float32 for bf16/fp16/fp32 input, float64 for float64 input), and
chunks are merged into float64 state with the pairwise update of Chan, Golub and LeVeque:

    n = n_a + n_b,   δ = μ_b − μ_a,   μ = μ_a + δ·n_b/n,   M2 = M2_a + M2_b + δδᵀ·n_a·n_b/n

so columns with a large mean (LLM activations have a few) never meet the one-pass
Σxxᵀ − nμμᵀ cancellation.

A :class:`Moments` holds its *ops*, the path its chunk products and eigensolves take, chosen
once per accumulator or call (:func:`fastspec.spectral.backend.ops_for`): :class:`TorchOps`
here (torch on any device), or :class:`fastspec.spectral.kernels.CudaOps` (fastspec's CUDA
kernels, falling back to these where they cannot). Both have the same methods
(:class:`Ops`), so no caller branches on the path.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

# Column-block width of the one-triangle product: wide enough for GEMM efficiency, narrow
# enough that the skipped lower blocks save most of the second half of the flops.
_BLOCK = 512
# Rows are buffered until there are this many, so that small batches (16 sequences at a
# time in extraction) still feed the GEMM efficiently and pay the O(d²) merge rarely.
MIN_FLUSH_ROWS = 1024
# Bytes of one centred chunk; bounds the working copy whatever the batch size.
_CHUNK_BYTES = 64 << 20
# Beyond this magnitude a float64 sum of squares can overflow; such rows are refused.
F64_SAFE = 1e150
# Rows whose largest |value| is below 2^-50 are multiplied after an exact power-of-two
# rescaling: their float32 squares would underflow (below ~1e-19; float32's smallest normal
# is ~1e-38) and the spectrum would be silently wrong. (Squares that overflow are detected
# and redone in float64 instead.)
_SMALL = 2.0**-50


def power_of_two_scale(x: torch.Tensor) -> float:
    """1.0 unless the largest |value| of ``x`` is below 2^-50 (and not zero), else the power
    of two s with max|x/s| in [0.5, 1). Dividing by s is exact, and so is multiplying results
    by s (or s²) back."""
    if x.numel() == 0:
        return 1.0
    lo, hi = torch.aminmax(x)
    amax = max(-float(lo), float(hi))
    if not amax < _SMALL or amax == 0:  # NaN and Inf included: the caller's checks find those
        return 1.0
    return math.ldexp(1.0, math.frexp(amax)[1])


def rescaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x / scale (a power of two) in x's compute dtype: exact, bf16/fp16 upcast to float32."""
    return (x if x.dtype in (torch.float32, torch.float64) else x.float()) * (1.0 / scale)


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


class Ops(Protocol):
    """What a computation path provides (:class:`TorchOps`, or the CUDA kernels'
    :class:`~fastspec.spectral.kernels.CudaOps`): the same methods, so that the choice is made
    once, by :func:`fastspec.spectral.backend.ops_for`, and never branched on again."""

    #: Whether this path is fastspec's CUDA kernels (``CovarianceAccumulator.uses_kernels``).
    kernels: bool
    #: How chunk products are formed (``kernels.PRODUCTS``); "fp32" on the torch path.
    products: str

    def chunk_rows(self, dim: int) -> int:
        """Rows per chunk of ``dim`` features."""
        ...

    def add_chunk(self, moments: "Moments", x: torch.Tensor) -> bool:
        """Add the rows ``x`` (on ``moments``' device, not tiny: :meth:`Moments.add_chunk`
        rescales those first) to ``moments``; False, adding nothing, if ``x`` is not finite."""
        ...

    def eigh(self, sym: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Descending float64 eigenvalues of the matrix whose upper triangle is ``sym``'s
        (the lower is not read), and its top-k eigenvectors (dim × k) when ``k`` > 0."""
        ...


class TorchOps:
    """The torch path, on any device: chunk products in the compute dtype (float32 for
    bf16/fp16/fp32 rows, float64 for float64 rows) of rows shifted by their approximate mean,
    merged exactly (:meth:`Moments.add_products`); eigensolves by torch.linalg in float64.
    Stateless: :data:`TORCH` is the one instance."""

    kernels = False
    products = "fp32"

    def __repr__(self) -> str:
        return "TorchOps()"

    def chunk_rows(self, dim: int) -> int:
        """About _CHUNK_BYTES of float32 rows, at least MIN_FLUSH_ROWS."""
        return max(MIN_FLUSH_ROWS, _CHUNK_BYTES // (4 * dim))

    def add_chunk(self, moments: "Moments", x: torch.Tensor) -> bool:
        """See :meth:`Ops.add_chunk`. A float32 product that overflows is redone in float64;
        float64 rows beyond ~1e150 raise OverflowError (and change nothing)."""
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
                return moments.add_chunk(x.to(torch.float64))
            raise float64_overflow(x)
        moments.add_products(b, shift.to(torch.float64) + s / b, s, p)
        return True

    def eigh(self, sym: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """See :meth:`Ops.eigh`; torch.linalg, float64, on ``sym``'s device."""
        if k:
            values, vectors = torch.linalg.eigh(sym, UPLO="U")
            return values.flip(0).cpu().numpy(), vectors[:, -k:].flip(1).cpu().numpy()
        return torch.linalg.eigvalsh(sym, UPLO="U").flip(0).cpu().numpy(), None


#: The torch path (stateless, so one instance serves every computation).
TORCH = TorchOps()


class Moments:
    """n, mean and M2 (float64, upper triangle authoritative) of a set of rows, and the
    :class:`Ops` that add chunks to them (default: the torch path).

    Tensors are made by the first rows that arrive, and taken over rather than copied
    where the caller hands them over, so streaming pays one d×d pass per chunk, not four.
    """

    def __init__(self, dim: int, device: torch.device, ops: Ops = TORCH):
        self.dim, self.device = dim, device
        self.ops = ops
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

    def add_products(self, b: int, mean: torch.Tensor, s: torch.Tensor, p: torch.Tensor) -> None:
        """Add ``b`` rows x given their float64 ``mean``, and, for the shifted rows y = x − a
        (any shift a), the float64 column sums ``s`` = Σy and ``p`` = yᵀy (upper triangle
        authoritative, in the compute dtype). Exact centring, Σ(y − s/b)(y − s/b)ᵀ =
        yᵀy − ssᵀ/b, fused with Chan's merge so that M2 is passed over once."""
        if self.n == 0:
            self.n, self.mean, self.m2 = b, mean, p.to(torch.float64).addr_(s, s, alpha=-1.0 / b)
            return
        assert self.mean is not None and self.m2 is not None
        total = self.n + b
        delta = mean - self.mean
        add_upper_(self.m2, p)  # read in the compute dtype, summed in float64
        self.m2.addr_(s, s, alpha=-1.0 / b)
        self.m2.addr_(delta, delta, alpha=self.n * b / total)
        self.mean += delta * (b / total)
        self.n = total

    def add_merged(self, b: int, merge: Callable[[int, torch.Tensor, torch.Tensor], None]) -> None:
        """Add ``b`` rows that ``merge(n, mean, m2)`` folds into this set's tensors in place
        (given the count ``n`` before them; M2 contiguous), as the CUDA kernels' fused Chan
        merge does on the device."""
        mean, m2 = self.tensors()
        if not m2.is_contiguous():
            m2 = self.m2 = m2.contiguous()
        merge(self.n, mean, m2)
        self.n += b

    @classmethod
    def pooled(cls, parts: "list[Moments]", dim: int, device: torch.device, ops: Ops = TORCH) -> "Moments":
        """One set holding every part's rows: M2 = Σ M2ₚ + Σ nₚ(meanₚ − mean)(meanₚ − mean)ᵀ,
        the sum over the upper triangles and the corrections as one GEMM (the parts are
        unchanged). Equal to merging them one by one, with a third of the d×d passes."""
        out = cls(dim, device, ops)
        parts = [p for p in parts if p.n]
        if not parts:
            return out
        ns = torch.tensor([float(p.n) for p in parts], dtype=torch.float64, device=device)
        means = torch.stack([p.tensors()[0] for p in parts])
        out.n = sum(p.n for p in parts)
        out.mean = (ns[:, None] * means).sum(0) / out.n
        out.m2 = parts[0].tensors()[1].clone()
        for p in parts[1:]:
            add_upper_(out.m2, p.tensors()[1])
        spread = (means - out.mean) * ns.sqrt()[:, None]
        out.m2.addmm_(spread.T, spread)
        return out

    def without(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> "Moments":
        """The moments of this set's rows less a subset's (n, mean, M2): Chan's merge undone,
        M2' = M2 − M2ₛ − nₛn'/(nₛ + n') δδᵀ with δ = meanₛ − mean'. A new set; this one is
        unchanged. In float64 the subtraction costs ~1e-16 of M2, far below the float32 products."""
        assert self.mean is not None and self.m2 is not None
        rest = self.n - n
        if rest < 1:
            raise ValueError(f"cannot remove {n} rows from a set of {self.n}")
        out = Moments(self.dim, self.device, self.ops)
        out.n, out.mean = rest, (self.mean * self.n - mean * n) / rest
        delta = mean - out.mean
        out.m2 = (self.m2 - m2).addr_(delta, delta, alpha=-n * rest / self.n)
        return out

    def add_chunk(self, x: torch.Tensor) -> bool:
        """Add the rows ``x`` through this set's ops. Returns False, adding nothing, if ``x``
        holds a non-finite value (the caller locates it). Rows of very small magnitude are
        multiplied after an exact power-of-two rescaling (:func:`power_of_two_scale`), so a
        float32 product cannot underflow; one that overflows is redone in float64; float64
        input beyond ~1e150 raises OverflowError. Either way a failure leaves this set as it was."""
        scale = power_of_two_scale(x)
        if scale != 1.0:
            part = Moments(self.dim, self.device, self.ops)
            if not part.add_chunk(rescaled(x, scale)):
                return False
            assert part.mean is not None and part.m2 is not None
            self.add_centred(part.n, part.mean.mul_(scale), part.m2.mul_(scale * scale), own=True)
            return True
        return self.ops.add_chunk(self, x)
