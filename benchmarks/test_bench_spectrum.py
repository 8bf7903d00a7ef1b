"""fastspec against what users would otherwise run, on the same data, in the same run.

Spectrum + RankMe + alpha of N×d float32 activations, per shape (one benchmark group each):

- ``fastspec``: ``s = fastspec.spectrum(X); s.rankme; fastspec.alpha_req(s)``
- ``reptrix``: ``get_rankme(X)`` and ``get_alpha(X, fit_range=np.arange(10, 100))``, each
  recomputing its PCA (skipped with a reason when reptrix is not installed)
- ``torch_svdvals``: Garrido-style, ``torch.linalg.svdvals`` of the centred N×d matrix,
  λ = σ²/(N−1), RankMe and alpha in NumPy
- ``torch_cov_eigvalsh``: ``torch.cov(X.T)`` + ``torch.linalg.eigvalsh`` (fp32), metrics in NumPy
- the floor: ``floor_gemm`` (XᵀX alone, fp32) and ``floor_eigvalsh_fp32`` (fp32 eigvalsh
  alone on a d×d covariance); floor = the sum of their times

Streaming (rows/s in ``extra_info["rows_per_s"]``): ``CovarianceAccumulator(d).update`` over
batches of 16 and 1024 rows, beside a float64 running Σxᵀx + column sums in torch.

Every benchmark checks its result against fastspec's (a benchmark computing the wrong thing
fails) and stores the peak resident memory of one run in a fresh process in
``extra_info["peak_rss_mb"]`` (above the process's footprint just before the call: libraries
and the input excluded) and ``extra_info["peak_rss_total_mb"]``. No wall-clock time is
asserted.

Sizes: small by default (CI); ``FASTSPEC_BENCH_FULL=1`` selects N = 15000 (the paper's
sequence count), d in {512, 2048, 4096}. ``FASTSPEC_BENCH_ROUNDS`` overrides the rounds.
``benchmarks/report.py`` turns ``--benchmark-json`` output into Markdown tables.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")

import fastspec  # noqa: E402

import _bench_methods as M  # noqa: E402  (benchmarks/ is on pytest's pythonpath)

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
SEED = 0
if FULL:
    SPECTRUM_SHAPES = [(15000, 512), (15000, 2048), (15000, 4096)]
    STREAM_SHAPE = (15000, 4096)
else:
    # Reptrix's alpha fit (and ours at (11, 100)) needs at least 100 eigenvalues: d >= 128.
    SPECTRUM_SHAPES = [(2000, 128), (2000, 256)]
    STREAM_SHAPE = (4096, 256)
STREAM_BATCHES = [16, 1024]

# Agreement with fastspec (whose eigenvalues are float64): float32 baselines to 1e-3.
RTOL = 1e-3

try:  # optional: its install pulls torchvision, so it is installed with --no-deps
    import reptrix.alpha  # noqa: F401
    import reptrix.rankme  # noqa: F401

    NO_REPTRIX = ""
except ImportError as err:
    NO_REPTRIX = f"reptrix is not importable ({err}); pip install --no-deps reptrix"


def _method_param(method: str) -> Any:
    # A skip mark, not pytest.skip() in the test: the benchmark fixture must not be set up
    # and left unused (pytest-benchmark warns, and warnings are errors here).
    marks = [pytest.mark.skipif(bool(NO_REPTRIX), reason=NO_REPTRIX or "-")] if method == "reptrix" else []
    return pytest.param(method, id=method, marks=marks)


def _rounds(method: str, d: int) -> tuple[int, int]:
    """(rounds, warmup_rounds). Full size: median of 3 with no warm-up (a slow first round is
    the one the median drops), but one round of Reptrix at d >= 2048 (30-60 s a call on two
    cores). Small size: one warm-up, then 10 rounds."""
    override = os.environ.get("FASTSPEC_BENCH_ROUNDS")
    if override:
        return max(1, int(override)), 0 if FULL else 1
    if not FULL:
        return 10, 1
    if method == "reptrix" and d >= 2048:
        return 1, 0
    return 3, 0


def _rel(got: float, want: float) -> float:
    return abs(got - want) / max(abs(want), 1e-300)


def _check(name: str, got: float, want: float, rtol: float = RTOL) -> float:
    err = _rel(got, want)
    assert err <= rtol, f"{name}: {got!r} disagrees with fastspec's {want!r} (relative error {err:.2e} > {rtol:.0e})"
    return err


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prober():
    p = M.Prober()
    yield p
    p.close()


def _measure_memory(benchmark, prober, **request: Any) -> None:
    if benchmark.disabled:  # --benchmark-disable: a functional run, no measurements
        return
    benchmark.extra_info.update(prober(seed=SEED, **request))


class SpectrumCase:
    """The data of one shape, and fastspec's answers for it (computed once, not timed)."""

    def __init__(self, n: int, d: int):
        self.n, self.d = n, d
        self.x = M.make_activations(n, d, SEED)
        self.ref = fastspec.spectrum(self.x)
        self.group = f"spectrum N={n} d={d}"

    def __repr__(self) -> str:
        return f"SpectrumCase(N={self.n}, d={self.d})"


def _shape_param(kind: str, n: int, d: int, batch: int | None = None) -> Any:
    group = f"{kind} N={n} d={d}" + (f" batch={batch}" if batch else "")
    ident = f"N={n},d={d}" + (f",batch={batch}" if batch else "")
    return pytest.param((n, d, batch), id=ident, marks=pytest.mark.benchmark(group=group))


# Module scope: the tests are ordered by shape and one shape's data is held at a time.
@pytest.fixture(scope="module", params=[_shape_param("spectrum", n, d) for n, d in SPECTRUM_SHAPES])
def case(request) -> SpectrumCase:
    n, d, _ = request.param
    return SpectrumCase(n, d)


@pytest.fixture(scope="module")
def stream_data() -> torch.Tensor:
    return M.make_activations(*STREAM_SHAPE, SEED)


@pytest.fixture(scope="module")
def stream_ref(stream_data: torch.Tensor) -> fastspec.CovarianceAccumulator:
    """fastspec's accumulator over all rows at once: what every streaming method must match."""
    acc = fastspec.CovarianceAccumulator(stream_data.shape[1])
    acc.update(stream_data)
    return acc


# ---------------------------------------------------------------------------------------
# Spectrum + RankMe + alpha
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [_method_param(m) for m in M.SPECTRUM_METHODS])
def test_spectrum(benchmark, case: SpectrumCase, method: str, prober) -> None:
    fn = M.SPECTRUM_METHODS[method]
    args = M.prepare_spectrum(method, case.x)
    rounds, warmup = _rounds(method, case.d)
    benchmark.extra_info.update(method=method, role=M.ROLES[method], kind="spectrum", n=case.n, d=case.d)
    out = benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=warmup, iterations=1)

    ref = case.ref
    if method == "fastspec":
        # Deterministic up to the summation order of multithreaded BLAS.
        _check("fastspec rankme", out["rankme"], ref.rankme, rtol=1e-9)
        _check("fastspec alpha", out["alpha"], fastspec.alpha_req(ref).alpha, rtol=1e-9)
    elif method == "reptrix":
        # Reptrix keeps the top 2048 PCA components and fits alpha over indices [10, 100).
        want_rankme = fastspec.rankme(ref, max_eigenvalues=2048)
        want_alpha = fastspec.alpha_req(ref, fit_range=(10, 100)).alpha
        benchmark.extra_info["rankme_rel_err"] = _check("reptrix rankme", out["rankme"], want_rankme)
        benchmark.extra_info["alpha_rel_err"] = _check("reptrix alpha", out["alpha"], want_alpha)
    elif method in ("torch_svdvals", "torch_cov_eigvalsh"):
        benchmark.extra_info["rankme_rel_err"] = _check(f"{method} rankme", out["rankme"], ref.rankme)
        benchmark.extra_info["alpha_rel_err"] = _check(f"{method} alpha", out["alpha"], fastspec.alpha_req(ref).alpha)
    elif method == "floor_gemm":
        # The right product: its diagonal is each column's float64 sum of squares.
        x64 = case.x.double()
        want = (x64 * x64).sum(0)
        err = float(((out.diagonal().double() - want).abs() / want).max())
        assert err <= RTOL, f"floor_gemm: diag(XᵀX) is off by {err:.2e} (relative)"
        assert out.shape == (case.d, case.d)
    elif method == "floor_eigvalsh_fp32":
        lam = out.flip(0).double().numpy()
        benchmark.extra_info["rankme_rel_err"] = _check("fp32 eigvalsh rankme", M.np_rankme(lam), ref.rankme)
    else:  # pragma: no cover - a method added without its check
        pytest.fail(f"no agreement check for {method!r}")
    if isinstance(out, dict):
        benchmark.extra_info.update(rankme=out["rankme"], alpha=out["alpha"])

    _measure_memory(benchmark, prober, kind="spectrum", method=method, n=case.n, d=case.d)


# ---------------------------------------------------------------------------------------
# Streaming accumulation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(M.STREAM_METHODS))
@pytest.mark.parametrize("shape", [_shape_param("stream", *STREAM_SHAPE, b) for b in STREAM_BATCHES])
def test_stream(benchmark, stream_data: torch.Tensor, stream_ref, shape, method: str, prober) -> None:
    n, d, batch = shape
    fn = M.STREAM_METHODS[method]
    args = M.prepare_stream(stream_data, batch)
    rounds, warmup = _rounds(method, d)
    benchmark.extra_info.update(method=method, role=M.ROLES[method], kind="stream", n=n, d=d, batch=batch)
    cov = benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=warmup, iterations=1)

    # Agreement: the covariance equals fastspec's, entry-wise to float32 product accuracy
    # relative to the largest variance (which bounds every RankMe/alpha difference).
    want = stream_ref.covariance()
    assert cov.shape == (d, d) and cov.dtype == torch.float64
    err = float((cov - want).abs().max() / want.diagonal().max())
    assert err <= 1e-5, f"{method}: covariance differs from fastspec's by {err:.2e} (relative to max variance)"
    benchmark.extra_info["cov_rel_err"] = err
    if d <= 1024:  # cheap enough to also compare RankMe directly
        lam = torch.linalg.eigvalsh(cov).double().numpy()
        _check(f"{method} rankme", M.np_rankme(lam), stream_ref.spectrum().rankme, rtol=1e-6)

    if benchmark.stats is not None:
        benchmark.extra_info["rows_per_s"] = n / benchmark.stats.stats.median
    _measure_memory(benchmark, prober, kind="stream", method=method, n=n, d=d, batch=batch)
