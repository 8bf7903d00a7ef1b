"""GPU benchmarks: fastspec's CUDA kernels beside torch on the same GPU, in the same run.

All ``cuda``-marked (skipped without a GPU). Run them with ``benchmarks/gpu.sh``, which builds
fastspec with FASTSPEC_CUDA=ON first and runs them as a few short pytest processes, most
valuable first, within a time budget. Per shape (one pytest-benchmark group each):

One shot, N×d activations already on the GPU (bf16 or fp32), spectrum + RankMe + α:
- ``gpu_fastspec_torch``: ``fastspec.spectrum(X, backend="torch")`` (fastspec's torch path;
  first, since its answer is the reference the others are checked against)
- ``gpu_fastspec``: ``fastspec.spectrum(X)`` (the kernels: SSYRK-fp32 products, the default),
  ``.rankme``, ``alpha_req``
- ``gpu_fastspec_tf32x3``: the same through ``CovarianceAccumulator(d, products="tf32x3")``
  (the kernels' 3×TF32 tensor-core products); skipped, with the reason, where ``products=``
  is not accepted (TypeError) or not implemented (NotImplementedError)
- ``gpu_torch_cov_eigvalsh``: ``torch.cov(X.float().T)`` + ``torch.linalg.eigvalsh`` (fp32)
- ``gpu_torch_svdvals``: ``torch.linalg.svdvals`` of the centred fp32 X (Garrido-style)
- parts and floors: ``gpu_fastspec_accumulate`` and ``gpu_fastspec_accumulate_tf32x3`` (the
  kernels' accumulation alone, each product path), ``gpu_floor_gemm`` (``X.T @ X`` in the
  input dtype: cuBLAS GEMM, IEEE fp32 or bf16 tensor cores), ``gpu_floor_gemm_tf32`` (fp32
  input, TF32 tensor cores), ``gpu_fastspec_eig`` (``acc.spectrum()`` on accumulated state: the
  eigen step as fastspec runs it), ``gpu_floor_xsyevd`` (a bare ``cusolverDnXsyevd`` call,
  float64, workspace ready) and ``gpu_floor_eigvalsh_fp64`` (torch's float64 ``eigvalsh``).
  benchmarks/gpu_floors.py times the floors that need no build (a bare cuBLAS SSYRK too).

Streamed, N = 10⁶ rows in batches of 16384 (a pool of distinct batches on the GPU, cycled):
- ``gpu_fastspec_torch_stream``: ``CovarianceAccumulator(d, backend="torch").update`` per
  batch, then the spectrum (first: the reference)
- ``gpu_fastspec_stream``: the same with the kernels (SSYRK-fp32 products)
- ``gpu_fastspec_tf32x3_stream``: the same with ``products="tf32x3"`` (skipped as above)
- ``gpu_torch_fp64_stream``: a careful user's float64 running Σxᵀx and Σx, then float64 eigvalsh

``extra_info`` records ``flops`` (the method's own arithmetic, where it is a product:
2·N·d² for a GEMM, N·d·(d+1) for one triangle, also for 3×TF32, whose three products count as
the one they stand for), ``tflops`` (flops / median time), ``gemm_equiv_tflops`` (2·N·d² /
median: the rate a full GEMM would need to match it), and ``peak_gpu_mb`` (torch's peak
allocation above what was allocated before the rounds).

Sizes: ``FASTSPEC_BENCH_FULL=1`` selects the issue's (N = 15000 and 10⁶ streamed, d in
{2048, 4096, 8192}); otherwise small ones. ``FASTSPEC_BENCH_DIMS=2048,4096`` picks dims.
``FASTSPEC_BENCH_CASES=spectrum:15000:4096:fp32,stream:1000000:8192:bf16`` picks the shapes
instead (kind:N:d:dtype). ``FASTSPEC_BENCH_METHODS=gpu_fastspec,gpu_floor_gemm`` keeps only those
methods, ``FASTSPEC_BENCH_METHODS=-gpu_torch_svdvals`` drops one (an unknown name is an error).
``FASTSPEC_BENCH_ROUNDS`` fixes the rounds. ``FASTSPEC_BENCH_DEVICE=cpu`` (gpu.sh's dry mode)
runs the torch paths on the CPU, unmarked, the kernels' methods skipping with the reason.
With ``FASTSPEC_BENCH_JSONL`` set, benchmarks/conftest.py appends each result to that file as
it completes. No time is asserted; every method's answer is checked against fastspec's torch
path (float64 state) on the same data.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")

import fastspec  # noqa: E402
from fastspec.spectral import kernels as cuda_kernels  # noqa: E402  (an internal stage is timed: cuSOLVER alone)

DEVICE = os.environ.get("FASTSPEC_BENCH_DEVICE", "cuda")
if DEVICE not in ("cuda", "cpu"):
    raise ValueError(f"FASTSPEC_BENCH_DEVICE must be cuda or cpu, got {DEVICE!r}")
ON_CUDA = DEVICE == "cuda"
# The skipif too, not only the marker: run alone, this directory does not load tests/conftest.py.
# On the CPU (FASTSPEC_BENCH_DEVICE=cpu: gpu.sh's dry mode) nothing is marked: the torch paths run.
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")] \
    if ON_CUDA else []

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
if FULL:
    ONE_SHOT_N, STREAM_N, STREAM_BATCH, DIMS = 15000, 1_000_000, 16384, [2048, 4096, 8192]
else:
    ONE_SHOT_N, STREAM_N, STREAM_BATCH, DIMS = 3000, 40000, 4096, [256, 512]
if os.environ.get("FASTSPEC_BENCH_DIMS"):
    DIMS = [int(v) for v in os.environ["FASTSPEC_BENCH_DIMS"].split(",")]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
STREAM_POOL = 8  # distinct batches cycled through in the streamed case
SEED = 0
if ON_CUDA and torch.cuda.is_available():
    USABLE, WHY = cuda_kernels.status()
else:
    USABLE, WHY = False, "no GPU" if ON_CUDA else "FASTSPEC_BENCH_DEVICE=cpu"
REQUIRE = os.environ.get("FASTSPEC_REQUIRE_CUDA_KERNELS", "") == "1"


def _cases(spec: str) -> list[tuple[str, int, int, str]]:
    """(kind, N, d, dtype) per shape: FASTSPEC_BENCH_CASES's, else every dim and dtype of both kinds."""
    if not spec.strip():
        return [(kind, n, d, t) for kind, n in (("spectrum", ONE_SHOT_N), ("stream", STREAM_N)) for d in DIMS
                for t in DTYPES]
    cases = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        if len(parts) != 4 or parts[0] not in ("spectrum", "stream") or parts[3] not in DTYPES \
                or not (parts[1].isdigit() and parts[2].isdigit()):
            raise ValueError(f"FASTSPEC_BENCH_CASES: {item!r} is not kind:N:d:dtype (kind spectrum or stream, "
                             f"dtype one of {tuple(DTYPES)})")
        cases.append((parts[0], int(parts[1]), int(parts[2]), parts[3]))
    return cases


CASES = _cases(os.environ.get("FASTSPEC_BENCH_CASES", ""))


def _gpu_activations(n: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """N×d on the device: variance r^-1 along axis r (α ≈ 1), small column means and four
    columns of mean 20 (benchmarks/_bench_methods.py's recipe, generated on the device)."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(n, d, generator=g, device=DEVICE, dtype=torch.float32)
    x.mul_(torch.arange(1, d + 1, device=DEVICE, dtype=torch.float64).pow(-0.5).float())
    mean = 0.5 * torch.randn(d, generator=g, device=DEVICE, dtype=torch.float32)
    mean[:4] = 20.0
    return x.add_(mean).to(dtype)


def _rankme(lam: np.ndarray) -> float:
    lam = np.abs(np.asarray(lam, dtype=np.float64))
    p = lam / lam.sum() + 1e-7
    return float(np.exp(-np.sum(p * np.log(p))))


def _sync(out: Any = None) -> Any:
    if ON_CUDA:
        torch.cuda.synchronize()
    return out


# ---------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------


def _metrics(s: fastspec.Spectrum) -> dict[str, Any]:
    return {"rankme": s.rankme, "alpha": fastspec.alpha_req(s).alpha}


def gpu_fastspec(x: torch.Tensor) -> dict[str, Any]:
    return _metrics(fastspec.spectrum(x))


def gpu_fastspec_tf32x3(x: torch.Tensor) -> dict[str, Any]:
    return _metrics(fastspec.CovarianceAccumulator(x.shape[1], products="tf32x3").update(x).spectrum())


def gpu_fastspec_torch(x: torch.Tensor) -> dict[str, Any]:
    return _metrics(fastspec.spectrum(x, backend="torch"))


def gpu_torch_cov_eigvalsh(x: torch.Tensor) -> dict[str, Any]:
    lam = torch.linalg.eigvalsh(torch.cov(x.float().T)).flip(0).double().cpu().numpy()
    return {"rankme": _rankme(lam)}


def gpu_torch_svdvals(x: torch.Tensor) -> dict[str, Any]:
    xf = x.float()
    sv = torch.linalg.svdvals(xf - xf.mean(0))
    lam = sv.double().cpu().numpy() ** 2 / (x.shape[0] - 1)
    return {"rankme": _rankme(lam)}


def gpu_fastspec_accumulate(x: torch.Tensor) -> torch.Tensor:
    acc = fastspec.CovarianceAccumulator(x.shape[1]).update(x)
    return _sync(acc._state().m2)


def gpu_fastspec_accumulate_tf32x3(x: torch.Tensor) -> torch.Tensor:
    acc = fastspec.CovarianceAccumulator(x.shape[1], products="tf32x3").update(x)
    return _sync(acc._state().m2)


def gpu_floor_gemm(x: torch.Tensor) -> torch.Tensor:
    return _sync(x.T @ x)


def gpu_floor_gemm_tf32(x: torch.Tensor) -> torch.Tensor:
    return _sync(x.T @ x)  # run with TF32 on (see the test)


def gpu_fastspec_eig(acc: fastspec.CovarianceAccumulator) -> np.ndarray:
    return acc.spectrum().eigenvalues


def gpu_floor_xsyevd(m2: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    a.copy_(m2)
    cuda_kernels.solve(a, w)  # one cusolverDnXsyevd call (it waits for its info)
    return w


def gpu_floor_eigvalsh_fp64(sym: torch.Tensor) -> torch.Tensor:
    return _sync(torch.linalg.eigvalsh(sym))


def gpu_fastspec_stream(batches: list[torch.Tensor], d: int, total: int) -> dict[str, Any]:
    return _metrics(_feed(fastspec.CovarianceAccumulator(d), batches, total).spectrum())


def gpu_fastspec_tf32x3_stream(batches: list[torch.Tensor], d: int, total: int) -> dict[str, Any]:
    return _metrics(_feed(fastspec.CovarianceAccumulator(d, products="tf32x3"), batches, total).spectrum())


def gpu_fastspec_torch_stream(batches: list[torch.Tensor], d: int, total: int) -> dict[str, Any]:
    return _metrics(_feed(fastspec.CovarianceAccumulator(d, backend="torch"), batches, total).spectrum())


def gpu_torch_fp64_stream(batches: list[torch.Tensor], d: int, total: int) -> dict[str, Any]:
    xtx = torch.zeros(d, d, dtype=torch.float64, device=DEVICE)
    col = torch.zeros(d, dtype=torch.float64, device=DEVICE)
    n = 0
    for i in range(_n_batches(batches, total)):
        b = batches[i % len(batches)].double()
        xtx.addmm_(b.T, b)
        col += b.sum(0)
        n += b.shape[0]
    mu = col / n
    lam = torch.linalg.eigvalsh((xtx - n * torch.outer(mu, mu)) / (n - 1)).flip(0).cpu().numpy()
    return {"rankme": _rankme(lam)}


def _n_batches(batches: list[torch.Tensor], total: int) -> int:
    return -(-total // batches[0].shape[0])


def _feed(acc: fastspec.CovarianceAccumulator, batches: list[torch.Tensor], total: int) -> fastspec.CovarianceAccumulator:
    for i in range(_n_batches(batches, total)):
        acc.update(batches[i % len(batches)])
    return acc


ROLES = {
    "gpu_fastspec_torch": "baseline", "gpu_fastspec": "fastspec", "gpu_fastspec_tf32x3": "fastspec",
    "gpu_torch_cov_eigvalsh": "baseline", "gpu_torch_svdvals": "baseline", "gpu_fastspec_accumulate": "part",
    "gpu_fastspec_accumulate_tf32x3": "part", "gpu_floor_gemm": "floor", "gpu_floor_gemm_tf32": "floor",
    "gpu_fastspec_eig": "part", "gpu_floor_xsyevd": "floor", "gpu_floor_eigvalsh_fp64": "floor",
    "gpu_fastspec_torch_stream": "baseline", "gpu_fastspec_stream": "fastspec", "gpu_fastspec_tf32x3_stream": "fastspec",
    "gpu_torch_fp64_stream": "baseline",
}
# Run in this order within a shape. The torch path comes first: its answer is the reference.
ONE_SHOT_METHODS = (
    "gpu_fastspec_torch", "gpu_fastspec", "gpu_fastspec_tf32x3", "gpu_torch_cov_eigvalsh", "gpu_torch_svdvals",
    "gpu_fastspec_accumulate", "gpu_fastspec_accumulate_tf32x3", "gpu_floor_gemm", "gpu_floor_gemm_tf32",
    "gpu_fastspec_eig", "gpu_floor_xsyevd", "gpu_floor_eigvalsh_fp64")
STREAM_METHODS = ("gpu_fastspec_torch_stream", "gpu_fastspec_stream", "gpu_fastspec_tf32x3_stream",
                  "gpu_torch_fp64_stream")
# The 3×TF32 product path (CovarianceAccumulator(products="tf32x3")): skipped where not offered.
TF32X3 = {"gpu_fastspec_tf32x3", "gpu_fastspec_accumulate_tf32x3", "gpu_fastspec_tf32x3_stream"}
NEEDS_KERNELS = {"gpu_fastspec", "gpu_fastspec_accumulate", "gpu_fastspec_eig", "gpu_floor_xsyevd",
                 "gpu_fastspec_stream"} | TF32X3
# Milliseconds per call even at full size: enough rounds for a stable median.
CHEAP = {"gpu_fastspec_accumulate", "gpu_fastspec_accumulate_tf32x3", "gpu_floor_gemm", "gpu_floor_gemm_tf32"}


def _selected(methods: tuple[str, ...], spec: str) -> list[str]:
    """FASTSPEC_BENCH_METHODS: names to keep, or -names to drop (a typo is an error, not an
    empty run)."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    keep = {s for s in items if not s.startswith("-")}
    drop = {s[1:] for s in items if s.startswith("-")}
    unknown = (keep | drop) - set(ROLES)
    if unknown:
        raise ValueError(f"FASTSPEC_BENCH_METHODS names unknown methods {sorted(unknown)}; known: {list(ROLES)}")
    return [m for m in methods if (not keep or m in keep) and m not in drop]


ONE_SHOT: dict[str, Callable[..., Any]] = {
    m: globals()[m] for m in _selected(ONE_SHOT_METHODS, os.environ.get("FASTSPEC_BENCH_METHODS", ""))}
STREAM: dict[str, Callable[..., Any]] = {
    m: globals()[m] for m in _selected(STREAM_METHODS, os.environ.get("FASTSPEC_BENCH_METHODS", ""))}


def _rounds(method: str, d: int, kind: str) -> tuple[int, int]:
    """(rounds, warmup_rounds). Millisecond calls: 10 after 2 warm-ups. Otherwise 3 after one
    warm-up (handles, kernels' first launch), and at full size, where a call takes seconds
    (a float64 eigensolve at d = 8192 alone does), fewer: 2 at d = 4096, 1 at d ≥ 8192; one
    unwarmed round of svdvals and of each 10⁶-row stream (the stream fixture puts a batch through
    every path first, and a tiny svdvals runs first)."""
    override = os.environ.get("FASTSPEC_BENCH_ROUNDS")
    if override:
        return max(1, int(override)), 1
    if method in CHEAP:
        return 10, 2
    if not FULL:
        return 3, 1
    if kind == "stream" or method == "gpu_torch_svdvals":
        return 1, 0
    return (1, 1) if d >= 8192 else (2, 1) if d >= 4096 else (3, 1)


# ---------------------------------------------------------------------------------------
# Fixtures: one shape's data at a time
# ---------------------------------------------------------------------------------------


def _param(kind: str, n: int, d: int, dtype: str) -> Any:
    group = f"gpu {kind} N={n} d={d} {dtype}"
    return pytest.param((n, d, dtype), id=f"N={n},d={d},{dtype}", marks=pytest.mark.benchmark(group=group))


class Case:
    """One shape's activations, and the RankMe every method is checked against: fastspec's
    torch path (float64 state) on the same data. That method's own answer is taken when it ran
    first (the same computation), so that no float64 eigensolve runs only to check."""

    def __init__(self, n: int, d: int, dtype: str):
        self.n, self.d, self.dtype = n, d, dtype
        self.x = _gpu_activations(n, d, DTYPES[dtype], SEED)
        self._rankme: float | None = None

    def _compute(self) -> float:
        return fastspec.spectrum(self.x, backend="torch").rankme

    def reference(self, answer: float | None = None) -> float:
        if self._rankme is None:
            self._rankme = answer if answer is not None else self._compute()
        return self._rankme


class StreamCase(Case):
    def __init__(self, n: int, d: int, dtype: str):
        self.n, self.d, self.dtype = n, d, dtype
        self.batch = min(STREAM_BATCH, n)
        self.pool = [_gpu_activations(self.batch, d, DTYPES[dtype], SEED + i) for i in range(STREAM_POOL)]
        self._rankme = None

    def _compute(self) -> float:
        return _feed(fastspec.CovarianceAccumulator(self.d, backend="torch"), self.pool, self.n).spectrum().rankme

    def warm(self) -> None:
        """One batch through every accumulation path and a tiny eigensolve (handles, kernels'
        first launch, the kernels' canary), so that a stream needs no warm-up round."""
        b = self.pool[0]
        fastspec.CovarianceAccumulator(self.d, backend="torch").update(b)._state()
        fastspec.CovarianceAccumulator(self.d).update(b)._state()
        try:
            fastspec.CovarianceAccumulator(self.d, products="tf32x3").update(b)._state()
        except (TypeError, NotImplementedError):
            pass  # its benchmark says so
        torch.linalg.eigvalsh(torch.eye(64, dtype=torch.float64, device=DEVICE))
        b.double().T @ b.double()
        _sync()


def _need_device() -> None:
    if ON_CUDA and not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.fixture(scope="module", params=[_param(k, n, d, t) for k, n, d, t in CASES if k == "spectrum"])
def case(request) -> Case:
    _need_device()
    c = Case(*request.param)
    yield c
    del c.x
    if ON_CUDA:
        torch.cuda.empty_cache()


@pytest.fixture(scope="module", params=[_param(k, n, d, t) for k, n, d, t in CASES if k == "stream"])
def stream_case(request) -> StreamCase:
    _need_device()
    c = StreamCase(*request.param)
    c.warm()
    yield c
    del c.pool
    if ON_CUDA:
        torch.cuda.empty_cache()


def _check_kernels(method: str) -> None:
    if method in NEEDS_KERNELS and not USABLE:
        if REQUIRE:
            pytest.fail(f"FASTSPEC_REQUIRE_CUDA_KERNELS=1, but the kernels are not available: {WHY}")
        pytest.skip(f"fastspec's CUDA kernels are not available: {WHY}")


def _no_tf32x3(err: BaseException) -> None:
    pytest.skip(f"CovarianceAccumulator(products='tf32x3') is not available here: {type(err).__name__}: {err}")


def _check_tf32x3(method: str, d: int, sample: torch.Tensor) -> None:
    """Skip a 3×TF32 method, with the reason, where ``products=`` is not accepted or not implemented."""
    if method not in TF32X3:
        return
    try:
        fastspec.CovarianceAccumulator(d, products="tf32x3").update(sample)._state()
    except (TypeError, NotImplementedError) as err:
        _no_tf32x3(err)


def _pedantic(benchmark, method: str, fn: Callable[..., Any], args: tuple, rounds: int, warmup: int) -> Any:
    try:
        return benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=warmup, iterations=1)
    except NotImplementedError as err:
        if method in TF32X3:
            _no_tf32x3(err)
        raise


def _memory_base() -> int:
    if not ON_CUDA:
        return 0
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    return base


def _record(benchmark, flops: float | None, n: int, d: int, base_mem: int) -> None:
    if ON_CUDA:
        benchmark.extra_info["peak_gpu_mb"] = round((torch.cuda.max_memory_allocated() - base_mem) / 2**20, 1)
        benchmark.extra_info["device"] = torch.cuda.get_device_name()
    else:
        benchmark.extra_info["device"] = "cpu (FASTSPEC_BENCH_DEVICE=cpu)"
    if benchmark.stats is None:
        return
    t = benchmark.stats.stats.median
    benchmark.extra_info["gemm_equiv_tflops"] = 2.0 * n * d * d / t / 1e12
    if flops is not None:
        benchmark.extra_info["flops"] = flops
        benchmark.extra_info["tflops"] = flops / t / 1e12


def _close(name: str, got: float, want: float, rtol: float) -> float:
    err = abs(got - want) / abs(want)
    assert err <= rtol, f"{name}: {got!r} vs fastspec's torch path {want!r} (relative {err:.2e} > {rtol:.0e})"
    return err


# ---------------------------------------------------------------------------------------
# Benchmarks
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(ONE_SHOT))
def test_gpu_spectrum(benchmark, case: Case, method: str) -> None:
    _check_kernels(method)
    n, d, x = case.n, case.d, case.x
    _check_tf32x3(method, d, x[: min(n, 2048)])
    benchmark.extra_info.update(method=method, role=ROLES[method], kind="spectrum", n=n, d=d, dtype=case.dtype)
    flops: float | None = None
    if method in ("gpu_fastspec_eig", "gpu_floor_xsyevd", "gpu_floor_eigvalsh_fp64"):
        acc = fastspec.CovarianceAccumulator(d).update(x)
        m2 = acc._scatter(center=True)
        if method == "gpu_fastspec_eig":
            args: tuple = (acc,)
        elif method == "gpu_floor_xsyevd":
            args = (m2, torch.empty_like(m2), torch.empty(d, dtype=torch.float64, device=DEVICE))
        else:
            args = (torch.triu(m2) + torch.triu(m2, 1).T,)
    else:
        args = (x,)
    if method in ("gpu_floor_gemm", "gpu_floor_gemm_tf32"):
        flops = 2.0 * n * d * d
    elif method in ("gpu_fastspec_accumulate", "gpu_fastspec_accumulate_tf32x3"):
        flops = float(n) * d * (d + 1)
    if method == "gpu_floor_gemm_tf32" and not ON_CUDA:
        pytest.skip("TF32 is a CUDA matmul setting")
    if method == "gpu_floor_gemm_tf32" and x.dtype != torch.float32:
        pytest.skip("TF32 applies to float32 input only")
    rounds, warmup = _rounds(method, d, "spectrum")
    if method == "gpu_torch_svdvals" and warmup == 0:
        torch.linalg.svdvals(x[:64, :64].float())  # torch's cuSOLVER handle, out of the one round
    base = _memory_base()
    fn = ONE_SHOT[method]
    if method == "gpu_floor_gemm_tf32":
        # torch >= 2.9 spells it fp32_precision (the old allow_tf32 warns, and warnings are errors here).
        matmul = torch.backends.cuda.matmul
        attr, on = ("fp32_precision", "tf32") if hasattr(matmul, "fp32_precision") else ("allow_tf32", True)
        saved = getattr(matmul, attr)
        setattr(matmul, attr, on)
        try:
            out = _pedantic(benchmark, method, fn, args, rounds, warmup)
        finally:
            setattr(matmul, attr, saved)
    else:
        out = _pedantic(benchmark, method, fn, args, rounds, warmup)
    _record(benchmark, flops, n, d, base)

    if isinstance(out, dict):
        benchmark.extra_info.update(out)
        ref = case.reference(out["rankme"] if method == "gpu_fastspec_torch" else None)
        # fastspec's paths share the float32/float64 contract (3×TF32 keeps float32 accuracy);
        # the fp32 baselines are looser.
        rtol = 1e-5 if method.startswith("gpu_fastspec") else 1e-3
        benchmark.extra_info["rankme_rel_err"] = _close(method, out["rankme"], ref, rtol)
    elif method in ("gpu_fastspec_eig", "gpu_floor_xsyevd", "gpu_floor_eigvalsh_fp64"):
        lam = out if isinstance(out, np.ndarray) else out.flip(0).cpu().numpy() / (n - 1)
        benchmark.extra_info["rankme_rel_err"] = _close(method, _rankme(lam), case.reference(), 1e-5)
    else:  # a d×d product: its diagonal is each column's sum of squares (centred, for ours)
        assert out.shape == (d, d)
        x64 = x.double()
        want = (x64 * x64).sum(0) if method.startswith("gpu_floor_gemm") else ((x64 - x64.mean(0)) ** 2).sum(0)
        err = float(((out.diagonal().double() - want).abs() / want).max())
        assert err <= (1e-2 if x.dtype == torch.bfloat16 or method.endswith("tf32") else 1e-4), f"{method}: diagonal off by {err:.2e}"


@pytest.mark.parametrize("method", list(STREAM))
def test_gpu_stream(benchmark, stream_case: StreamCase, method: str) -> None:
    _check_kernels(method)
    c = stream_case
    n, d = c.n, c.d
    _check_tf32x3(method, d, c.pool[0])
    benchmark.extra_info.update(method=method, role=ROLES[method], kind="stream", n=n, d=d, dtype=c.dtype,
                                batch=c.batch)
    rounds, warmup = _rounds(method, d, "stream")
    base = _memory_base()
    out = _pedantic(benchmark, method, STREAM[method], (c.pool, d, n), rounds, warmup)
    rows = _n_batches(c.pool, n) * c.batch
    flops = float(rows) * d * (d + 1) if method != "gpu_torch_fp64_stream" else 2.0 * rows * d * d
    _record(benchmark, flops, rows, d, base)
    if benchmark.stats is not None:
        benchmark.extra_info["rows_per_s"] = rows / benchmark.stats.stats.median
    benchmark.extra_info.update(out)
    ref = c.reference(out["rankme"] if method == "gpu_fastspec_torch_stream" else None)
    rtol = 1e-5 if method.startswith("gpu_fastspec") else 1e-4
    benchmark.extra_info["rankme_rel_err"] = _close(method, out["rankme"], ref, rtol)
