"""The one-shot entry point: :func:`spectrum` of an N×d array, streamed through a
:class:`CovarianceAccumulator` when N ≥ d and through the N×N Gram matrix when N < d."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from . import kernels as cuda_kernels
from .accumulator import CovarianceAccumulator
from .backend import check_backend, ops_for, placement
from .eigen import check_k, metrics_of, warn_dropped
from .inputs import as_matrix, check_nan_policy, nonfinite_rows
from .metrics import DEFAULT_FIT_RANGE
from .moments import TORCH, Ops, exact_fp32_matmul, float64_overflow, power_of_two_scale, rescaled
from .record import Spectrum


def gram_spectrum(x: torch.Tensor, center: bool, k: int, n_dropped: int, ops: Ops = TORCH) -> Spectrum:
    """N < d: the N×N Gram matrix has the same non-zero spectrum at lower cost (its
    eigensolve by ``ops``; the product is a torch matmul on either path).

    Rows are shifted by their float32 mean (exact subtraction for values near it), the Gram
    product is formed in the compute dtype, and the shift is undone exactly in float64:
    with y = x − 1aᵀ and target rows z = y + 1cᵀ (c = −mean(y) to centre, c = a for raw),
    zzᵀ = yyᵀ + u1ᵀ + 1uᵀ + (cᵀc)11ᵀ, u = yc.
    """
    scale = power_of_two_scale(x)
    if scale != 1.0:  # tiny values: multiply the exactly rescaled rows (see moments)
        inner = gram_spectrum(rescaled(x, scale), center, k, n_dropped, ops)
        return dataclasses.replace(inner, eigenvalues=inner.eigenvalues * (scale * scale))
    n, d = x.shape
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    shift = x.sum(0, dtype=cdtype) / n
    y = torch.sub(x, shift)
    with exact_fp32_matmul():
        gram = (y @ y.T).to(torch.float64)
    if not bool(torch.isfinite(gram.diagonal()).all()):  # rows are finite: an overflow
        if cdtype == torch.float32:
            return gram_spectrum(x.to(torch.float64), center, k, n_dropped, ops)
        raise float64_overflow(x, "acts")
    c = -y.sum(0, dtype=torch.float64) / n if center else shift.to(torch.float64)
    y64 = y.to(torch.float64)
    u = y64 @ c
    gram += u[:, None] + u[None, :] + float(c @ c)
    values, vectors = ops.eigh(gram, k)
    if vectors is not None:
        ev = torch.from_numpy(vectors).to(y64.device)
        z_t_u = y64.T @ ev + c[:, None] * ev.sum(0)[None, :]
        vectors = (z_t_u / torch.linalg.vector_norm(z_t_u, dim=0)).cpu().numpy()
    return Spectrum(values / (n - 1), n, d, center, vectors, n_dropped)


def spectrum(
    acts: Any,
    *,
    center: bool = True,
    backend: str = "auto",
    top_k_eigenvectors: int = 0,
    nan_policy: str = "raise",
) -> Spectrum:
    """Eigenspectrum of the (ddof=1) covariance of N×d activations.

    Rows are samples. Low-precision input is upcast to float32 as it is read; products are
    formed per chunk in float32 (float64 for float64 input) after centring each chunk, merged
    in float64 (Chan, Golub and LeVeque's pairwise update), and the eigenvalues are computed
    in float64. When N ≥ d the input is streamed in chunks through a
    `fastspec.CovarianceAccumulator` (no N×d copy); when N < d the N×N Gram matrix gives the
    same non-zero spectrum at lower cost.

    Parameters
    ----------
    acts : torch.Tensor, numpy.ndarray or DLPack array
        N×d activations (a torch tensor on any device, a NumPy array, memory-mapped ones
        included, or anything with ``__dlpack__``): bfloat16, float16, float32 or float64.
    center : bool, default True
        Subtract the column means (the covariance). False: the raw second-moment matrix
        XᵀX/(N−1), for Garrido et al.'s RankMe, ``rankme(spectrum(X, center=False),
        convention="sv")``.
    backend : {"auto", "torch", "cuda"}, default "auto"
        ``"auto"`` uses fastspec's CUDA kernels for input on a CUDA device when they are
        available (`fastspec.backends`) and the torch path otherwise; ``"torch"`` forces the
        torch path on the input's device; ``"cuda"`` requires the kernels and moves input
        from the CPU to the current CUDA device chunk by chunk. The kernels keep the same
        numerical contract (float32 products of centred chunks, float64 merges and
        eigensolver: cuSOLVER's cusolverDnXsyevd); when N < d the Gram product is a torch
        matmul and only its eigensolve uses them.
    top_k_eigenvectors : int, default 0
        Also return the k leading eigenvectors (d × k, in ``Spectrum.eigenvectors``), k at
        most min(N − 1, d) centred, min(N, d) raw.
    nan_policy : {"raise", "omit"}, default "raise"
        ``"raise"`` refuses input with NaN or Inf, naming how many values and where the first
        is; ``"omit"`` drops those rows, warns, and counts them in ``Spectrum.n_dropped``.

    Returns
    -------
    fastspec.Spectrum
        The min(N, d) leading eigenvalues, descending, float64, with N, d and the metrics
        (``.rankme``, ``.alpha``, ``.alpha_fit``) as properties.

    Raises
    ------
    ValueError
        An unknown ``backend`` or ``nan_policy``; input that is not 2-D, or has fewer than 2
        finite rows; a ``top_k_eigenvectors`` beyond the rank; non-finite values under
        ``nan_policy="raise"``.
    TypeError
        Input that is not floating point.
    NotImplementedError
        ``backend="cuda"`` where fastspec's CUDA kernels are not available (the message says
        why).
    OverflowError
        Values whose float64 sum of squares overflows.

    See Also
    --------
    fastspec.CovarianceAccumulator : The same, streamed over batches and mergeable.
    fastspec.rankme, fastspec.alpha_req : The metrics, with other conventions and ranges.

    Examples
    --------
    Activations whose covariance has eigenvalues 1/r (a power law of exponent 1):

    >>> acts = np.random.default_rng(0).standard_normal((2000, 128)) * np.arange(1, 129) ** -0.5
    >>> s = fastspec.spectrum(acts)
    >>> s.eigenvalues.shape, round(s.rankme, 2), round(s.alpha, 2)
    ((128,), 46.93, 1.04)
    >>> fastspec.spectrum(torch.from_numpy(acts).to(torch.bfloat16)).eigenvalues.dtype  # any float dtype
    dtype('float64')

    Fewer samples than features: N eigenvalues, at most N − 1 of them non-zero.

    >>> fastspec.spectrum(acts[:50]).rank_bound
    49

    Garrido et al.'s RankMe, from the raw spectrum:

    >>> round(fastspec.rankme(fastspec.spectrum(acts, center=False), convention="sv"), 1)
    106.2

    >>> acts[3, 7] = np.nan
    >>> fastspec.spectrum(acts)
    Traceback (most recent call last):
    ...
    fastspec.spectral.inputs.NonFiniteError: acts: 1 non-finite value(s) (NaN or Inf) in 1 row(s); the first is nan at row 3, column 7. Fix the input, or pass nan_policy='omit' to drop rows that contain them.
    """
    if check_backend(backend) == "cuda":
        cuda_kernels.require("backend='cuda'")  # before the input is read
    check_nan_policy(nan_policy)
    x = as_matrix(acts)
    n, d = x.shape
    if n >= 2:  # refuse a bad k before the pass over the data, not after
        check_k(top_k_eigenvectors, n, d, center)
    # backend="cuda" moves CPU input to the current CUDA device, chunk by chunk
    device = placement(backend, x.device if x.is_cuda or backend != "cuda" else None)
    assert device is not None
    if n >= d:
        acc = CovarianceAccumulator(d, device=device, nan_policy=nan_policy, backend=backend)
        acc.update(x, name="acts")
        if acc.n_samples < 2:
            raise ValueError(f"acts: a spectrum needs at least 2 finite rows, got {acc.n_samples} (shape {tuple(x.shape)})")
        return acc.spectrum(center=center, top_k_eigenvectors=top_k_eigenvectors)
    keep = nonfinite_rows(x, "acts", nan_policy)
    n_dropped = 0 if keep is None else int((~keep).sum())
    if keep is not None:
        x = x[keep]
    if x.shape[0] < 2:
        raise ValueError(f"acts: a spectrum needs at least 2 finite rows, got {x.shape[0]} (shape {(n, d)})")
    k = check_k(top_k_eigenvectors, x.shape[0], d, center)
    warn_dropped(n_dropped, stacklevel=2)
    x = x.to(device)
    return gram_spectrum(x, center, k, n_dropped, ops_for(backend, x.device))


def summarize(acc: CovarianceAccumulator, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE) -> dict[str, Any]:
    """:func:`~fastspec.spectral.eigen.metrics_of` the accumulator's centred and raw spectra
    (those of all its rows, without jackknife errors: ``acc.metrics(fit_range=...).to_dict()``
    adds them for an accumulator with folds)."""
    return metrics_of(acc.spectrum(), acc.spectrum(center=False), fit_range=fit_range)
