"""GPU benchmarks: fastspec's CUDA kernels beside torch on the same GPU, in the same run.

All ``cuda``-marked (skipped without a GPU). Run them with ``benchmarks/gpu.sh``, which builds
fastspec with FASTSPEC_CUDA=ON first. Per shape (one pytest-benchmark group each):

One shot, N×d activations already on the GPU (bf16 or fp32), spectrum + RankMe + α:
- ``gpu_fastspec``: ``fastspec.spectrum(X)`` (the kernels), ``.rankme``, ``alpha_req``
- ``gpu_fastspec_torch``: the same with ``backend="torch"`` (fastspec's torch path)
- ``gpu_torch_cov_eigvalsh``: ``torch.cov(X.float().T)`` + ``torch.linalg.eigvalsh`` (fp32)
- ``gpu_torch_svdvals``: ``torch.linalg.svdvals`` of the centred fp32 X (Garrido-style)
- parts and floors: ``gpu_fastspec_accumulate`` (the kernels' accumulation alone),
  ``gpu_floor_gemm`` (``X.T @ X`` in the input dtype: cuBLAS GEMM, IEEE fp32 or bf16 tensor
  cores), ``gpu_floor_gemm_tf32`` (fp32 input, TF32 tensor cores), ``gpu_fastspec_eig``
  (``acc.spectrum()`` on accumulated state: the eigen step as fastspec runs it),
  ``gpu_floor_xsyevd`` (a bare ``cusolverDnXsyevd`` call, float64, workspace ready) and
  ``gpu_floor_eigvalsh_fp64`` (torch's float64 ``eigvalsh``).

Streamed, N = 10⁶ rows in batches of 16384 (a pool of distinct batches on the GPU, cycled):
- ``gpu_fastspec_stream``: ``CovarianceAccumulator(d).update`` per batch, then the spectrum
- ``gpu_fastspec_torch_stream``: the same with ``backend="torch"``
- ``gpu_torch_fp64_stream``: a careful user's float64 running Σxᵀx and Σx, then float64 eigvalsh

``extra_info`` records ``flops`` (the method's own arithmetic, where it is a product:
2·N·d² for a GEMM, N·d·(d+1) for one triangle), ``tflops`` (flops / median time),
``gemm_equiv_tflops`` (2·N·d² / median: the rate a full GEMM would need to match it), and
``peak_gpu_mb`` (torch's peak allocation above what was allocated before the rounds).

Sizes: ``FASTSPEC_BENCH_FULL=1`` selects the issue's (N = 15000 and 10⁶ streamed, d in
{2048, 4096, 8192}); otherwise small ones. ``FASTSPEC_BENCH_DIMS=2048,4096`` picks dims.
No time is asserted; every method's answer is checked against fastspec's.
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

# The skipif too, not only the marker: run alone, this directory does not load tests/conftest.py.
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")]

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
USABLE, WHY = cuda_kernels.status() if torch.cuda.is_available() else (False, "no GPU")
REQUIRE = os.environ.get("FASTSPEC_REQUIRE_CUDA_KERNELS", "") == "1"


def _gpu_activations(n: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """N×d on the GPU: variance r^-1 along axis r (α ≈ 1), small column means and four
    columns of mean 20 (benchmarks/_bench_methods.py's recipe, generated on the device)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(n, d, generator=g, device="cuda", dtype=torch.float32)
    x.mul_(torch.arange(1, d + 1, device="cuda", dtype=torch.float64).pow(-0.5).float())
    mean = 0.5 * torch.randn(d, generator=g, device="cuda", dtype=torch.float32)
    mean[:4] = 20.0
    return x.add_(mean).to(dtype)


def _rankme(lam: np.ndarray) -> float:
    lam = np.abs(np.asarray(lam, dtype=np.float64))
    p = lam / lam.sum() + 1e-7
    return float(np.exp(-np.sum(p * np.log(p))))


def _sync(out: Any) -> Any:
    torch.cuda.synchronize()
    return out


# ---------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------


def _metrics(s: fastspec.Spectrum) -> dict[str, Any]:
    return {"rankme": s.rankme, "alpha": fastspec.alpha_req(s).alpha}


def gpu_fastspec(x: torch.Tensor) -> dict[str, Any]:
    return _metrics(fastspec.spectrum(x))


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


def gpu_floor_gemm(x: torch.Tensor) -> torch.Tensor:
    return _sync(x.T @ x)


def gpu_floor_gemm_tf32(x: torch.Tensor) -> torch.Tensor:
    return _sync(x.T @ x)  # run under allow_tf32 (see the test)


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


def gpu_fastspec_torch_stream(batches: list[torch.Tensor], d: int, total: int) -> dict[str, Any]:
    return _metrics(_feed(fastspec.CovarianceAccumulator(d, backend="torch"), batches, total).spectrum())


def gpu_torch_fp64_stream(batches: list[torch.Tensor], d: int, total: int) -> dict[str, Any]:
    xtx = torch.zeros(d, d, dtype=torch.float64, device="cuda")
    col = torch.zeros(d, dtype=torch.float64, device="cuda")
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
    "gpu_fastspec": "fastspec", "gpu_fastspec_torch": "baseline", "gpu_torch_cov_eigvalsh": "baseline",
    "gpu_torch_svdvals": "baseline", "gpu_fastspec_accumulate": "part", "gpu_floor_gemm": "floor",
    "gpu_floor_gemm_tf32": "floor", "gpu_fastspec_eig": "part", "gpu_floor_xsyevd": "floor",
    "gpu_floor_eigvalsh_fp64": "floor", "gpu_fastspec_stream": "fastspec", "gpu_fastspec_torch_stream": "baseline",
    "gpu_torch_fp64_stream": "baseline",
}
ONE_SHOT: dict[str, Callable[..., Any]] = {m: globals()[m] for m in (
    "gpu_fastspec", "gpu_fastspec_torch", "gpu_torch_cov_eigvalsh", "gpu_torch_svdvals", "gpu_fastspec_accumulate",
    "gpu_floor_gemm", "gpu_floor_gemm_tf32", "gpu_fastspec_eig", "gpu_floor_xsyevd", "gpu_floor_eigvalsh_fp64")}
STREAM: dict[str, Callable[..., Any]] = {m: globals()[m] for m in (
    "gpu_fastspec_stream", "gpu_fastspec_torch_stream", "gpu_torch_fp64_stream")}
NEEDS_KERNELS = {"gpu_fastspec", "gpu_fastspec_accumulate", "gpu_fastspec_eig", "gpu_floor_xsyevd", "gpu_fastspec_stream"}


def _rounds(method: str, d: int, kind: str) -> tuple[int, int]:
    """(rounds, warmup_rounds): one warm-up (handles, kernels' first launch), then 3 rounds;
    one round of the slow baselines at full size (svdvals and the streamed runs at d ≥ 4096)."""
    override = os.environ.get("FASTSPEC_BENCH_ROUNDS")
    if override:
        return max(1, int(override)), 1
    if FULL and d >= 4096 and (method == "gpu_torch_svdvals" or kind == "stream"):
        return 1, 0 if method == "gpu_torch_svdvals" else 1
    return 3, 1


# ---------------------------------------------------------------------------------------
# Fixtures: one shape's data at a time
# ---------------------------------------------------------------------------------------


def _param(kind: str, n: int, d: int, dtype: str) -> Any:
    group = f"gpu {kind} N={n} d={d} {dtype}"
    return pytest.param((n, d, dtype), id=f"N={n},d={d},{dtype}", marks=pytest.mark.benchmark(group=group))


class Case:
    def __init__(self, n: int, d: int, dtype: str):
        self.n, self.d, self.dtype = n, d, dtype
        self.x = _gpu_activations(n, d, DTYPES[dtype], SEED)
        # The reference answer: fastspec's float64 torch path on the same GPU.
        self.ref = fastspec.spectrum(self.x, backend="torch")


@pytest.fixture(scope="module", params=[_param("spectrum", ONE_SHOT_N, d, t) for d in DIMS for t in DTYPES])
def case(request) -> Case:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    c = Case(*request.param)
    yield c
    del c.x
    torch.cuda.empty_cache()


@pytest.fixture(scope="module", params=[_param("stream", STREAM_N, d, t) for d in DIMS for t in DTYPES])
def stream_case(request) -> Any:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    n, d, dtype = request.param
    pool = [_gpu_activations(STREAM_BATCH, d, DTYPES[dtype], SEED + i) for i in range(STREAM_POOL)]
    ref = _feed(fastspec.CovarianceAccumulator(d, backend="torch"), pool, n).spectrum()
    yield n, d, dtype, pool, ref
    del pool
    torch.cuda.empty_cache()


def _check_kernels(method: str) -> None:
    if method in NEEDS_KERNELS and not USABLE:
        if REQUIRE:
            pytest.fail(f"FASTSPEC_REQUIRE_CUDA_KERNELS=1, but the kernels are not available: {WHY}")
        pytest.skip(f"fastspec's CUDA kernels are not available: {WHY}")


def _record(benchmark, flops: float | None, n: int, d: int, base_mem: int) -> None:
    benchmark.extra_info["peak_gpu_mb"] = round((torch.cuda.max_memory_allocated() - base_mem) / 2**20, 1)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
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
    benchmark.extra_info.update(method=method, role=ROLES[method], kind="spectrum", n=n, d=d, dtype=case.dtype)
    flops: float | None = None
    if method in ("gpu_fastspec_eig", "gpu_floor_xsyevd", "gpu_floor_eigvalsh_fp64"):
        acc = fastspec.CovarianceAccumulator(d).update(x)
        m2 = acc._scatter(center=True)
        if method == "gpu_fastspec_eig":
            args: tuple = (acc,)
        elif method == "gpu_floor_xsyevd":
            args = (m2, torch.empty_like(m2), torch.empty(d, dtype=torch.float64, device="cuda"))
        else:
            args = (torch.triu(m2) + torch.triu(m2, 1).T,)
    else:
        args = (x,)
    if method in ("gpu_floor_gemm", "gpu_floor_gemm_tf32"):
        flops = 2.0 * n * d * d
    elif method == "gpu_fastspec_accumulate":
        flops = float(n) * d * (d + 1)
    if method == "gpu_floor_gemm_tf32" and x.dtype != torch.float32:
        pytest.skip("TF32 applies to float32 input only")
    rounds, warmup = _rounds(method, d, "spectrum")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn = ONE_SHOT[method]
    if method == "gpu_floor_gemm_tf32":
        # torch >= 2.9 spells it fp32_precision (the old allow_tf32 warns, and warnings are errors here).
        matmul = torch.backends.cuda.matmul
        attr, on = ("fp32_precision", "tf32") if hasattr(matmul, "fp32_precision") else ("allow_tf32", True)
        saved = getattr(matmul, attr)
        setattr(matmul, attr, on)
        try:
            out = benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=warmup, iterations=1)
        finally:
            setattr(matmul, attr, saved)
    else:
        out = benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=warmup, iterations=1)
    _record(benchmark, flops, n, d, base)

    ref = case.ref
    if isinstance(out, dict):
        benchmark.extra_info.update(out)
        # fastspec's two paths share the float32/float64 contract; the fp32 baselines are looser.
        rtol = 1e-5 if method.startswith("gpu_fastspec") else 1e-3
        benchmark.extra_info["rankme_rel_err"] = _close(method, out["rankme"], ref.rankme, rtol)
    elif method in ("gpu_fastspec_eig", "gpu_floor_xsyevd", "gpu_floor_eigvalsh_fp64"):
        lam = out if isinstance(out, np.ndarray) else out.flip(0).cpu().numpy() / (n - 1)
        benchmark.extra_info["rankme_rel_err"] = _close(method, _rankme(lam), ref.rankme, 1e-5)
    else:  # a d×d product: its diagonal is each column's sum of squares (centred, for ours)
        assert out.shape == (d, d)
        x64 = x.double()
        want = (x64 * x64).sum(0) if method.startswith("gpu_floor_gemm") else ((x64 - x64.mean(0)) ** 2).sum(0)
        err = float(((out.diagonal().double() - want).abs() / want).max())
        assert err <= (1e-2 if x.dtype == torch.bfloat16 or method.endswith("tf32") else 1e-4), f"{method}: diagonal off by {err:.2e}"


@pytest.mark.parametrize("method", list(STREAM))
def test_gpu_stream(benchmark, stream_case, method: str) -> None:
    _check_kernels(method)
    n, d, dtype, pool, ref = stream_case
    benchmark.extra_info.update(method=method, role=ROLES[method], kind="stream", n=n, d=d, dtype=dtype,
                                batch=STREAM_BATCH)
    rounds, warmup = _rounds(method, d, "stream")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = benchmark.pedantic(STREAM[method], args=(pool, d, n), rounds=rounds, warmup_rounds=warmup, iterations=1)
    rows = _n_batches(pool, n) * STREAM_BATCH
    flops = float(rows) * d * (d + 1) if method != "gpu_torch_fp64_stream" else 2.0 * rows * d * d
    _record(benchmark, flops, rows, d, base)
    if benchmark.stats is not None:
        benchmark.extra_info["rows_per_s"] = rows / benchmark.stats.stats.median
    benchmark.extra_info.update(out)
    rtol = 1e-5 if method.startswith("gpu_fastspec") else 1e-4
    benchmark.extra_info["rankme_rel_err"] = _close(method, out["rankme"], ref.rankme, rtol)
