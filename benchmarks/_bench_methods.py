"""The methods the benchmarks time, the data they run on, and the peak-memory probe.

This file is shared by ``test_bench_spectrum.py`` (which loads it by path) and by the
memory-probe process (which runs it as a script: ``python _bench_methods.py --serve``).
It imports nothing from the benchmarks or tests directories, so either can load it.

Each baseline is written the way its users write it, not tuned for the benchmark.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np
import torch

# ---------------------------------------------------------------------------------------
# Data: N×d float32 activations with a power-law spectrum and a few large-mean columns.
# ---------------------------------------------------------------------------------------

#: Columns with a large mean, as LLM activations have (DESIGN.md): index and mean.
LARGE_MEAN_COLUMNS = 4
LARGE_MEAN = 20.0


def make_activations(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """N×d float32, variance r^-1 along axis r (so alpha ≈ 1), mean ~ N(0, 0.25) per column
    and 20 on the first four. Made in place: no transient copy, so the memory probe's
    baseline is just the matrix. The same (n, d, seed) gives the same matrix everywhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float32)
    scale = torch.arange(1, d + 1, dtype=torch.float64).pow(-0.5).to(torch.float32)
    mean = 0.5 * torch.randn(d, generator=g, dtype=torch.float32)
    mean[: min(LARGE_MEAN_COLUMNS, d)] = LARGE_MEAN
    return x.mul_(scale).add_(mean)


# ---------------------------------------------------------------------------------------
# Plain NumPy RankMe and alpha, as a user would write them next to a torch eigensolver.
# ---------------------------------------------------------------------------------------


def np_rankme(eigenvalues: np.ndarray, eps: float = 1e-7) -> float:
    lam = np.abs(np.asarray(eigenvalues, dtype=np.float64))
    p = lam / lam.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def np_alpha(eigenvalues: np.ndarray, start: int = 11, stop: int = 100) -> float:
    """Weighted (1/rank) least squares of log λ on [-log rank, 1] over 0-based [start, stop)."""
    lam = np.sort(np.abs(np.asarray(eigenvalues, dtype=np.float64)))[::-1]
    ranks = np.arange(start, stop, dtype=np.float64) + 1.0
    design = np.stack([-np.log(ranks), np.ones_like(ranks)], axis=1)
    w = np.sqrt(1.0 / ranks)
    coef, *_ = np.linalg.lstsq(design * w[:, None], np.log(lam[start:stop]) * w, rcond=None)
    return float(coef[0])


# ---------------------------------------------------------------------------------------
# Spectrum + RankMe + alpha of N×d activations. Each takes what `prepare_spectrum` made and
# returns a dict of what it computed (for the agreement checks).
# ---------------------------------------------------------------------------------------


def run_fastspec(x: torch.Tensor) -> dict[str, Any]:
    import fastspec

    s = fastspec.spectrum(x)
    return {"rankme": s.rankme, "alpha": fastspec.alpha_req(s).alpha}


def run_reptrix(x: torch.Tensor) -> dict[str, Any]:
    """Reptrix as its users call it: two functions, each recomputing its own PCA.

    ``fit_range`` is built fresh per call: Reptrix increments that array in place."""
    import reptrix.alpha
    import reptrix.rankme

    rank = reptrix.rankme.get_rankme(x)
    alpha, _ypred, _r2, _r2_100 = reptrix.alpha.get_alpha(x, fit_range=np.arange(10, 100))
    return {"rankme": float(rank), "alpha": float(alpha)}


def run_torch_svdvals(x: torch.Tensor) -> dict[str, Any]:
    """Garrido-style: singular values of the (here centred) N×d matrix, λ = σ²/(N−1)."""
    sv = torch.linalg.svdvals(x - x.mean(0))
    lam = sv.double().numpy() ** 2 / (x.shape[0] - 1)
    return {"rankme": np_rankme(lam), "alpha": np_alpha(lam)}


def run_torch_cov_eigvalsh(x: torch.Tensor) -> dict[str, Any]:
    """Hand-written: torch.cov (float32) then torch.linalg.eigvalsh (float32)."""
    lam = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0).double().numpy()
    return {"rankme": np_rankme(lam), "alpha": np_alpha(lam)}


def run_floor_gemm(x: torch.Tensor) -> torch.Tensor:
    """The floor's product: XᵀX (float32, full d×d GEMM), nothing else."""
    return x.T @ x


def run_floor_eigvalsh(cov32: torch.Tensor) -> torch.Tensor:
    """The floor's eigensolver: float32 eigvalsh of a d×d covariance, nothing else."""
    return torch.linalg.eigvalsh(cov32)


SPECTRUM_METHODS: dict[str, Callable[..., Any]] = {
    "fastspec": run_fastspec,
    "reptrix": run_reptrix,
    "torch_svdvals": run_torch_svdvals,
    "torch_cov_eigvalsh": run_torch_cov_eigvalsh,
    "floor_gemm": run_floor_gemm,
    "floor_eigvalsh_fp32": run_floor_eigvalsh,
}

#: fastspec, the baselines it is compared with, and the floor it is measured against.
ROLES = {
    "fastspec": "fastspec",
    "reptrix": "baseline",
    "torch_svdvals": "baseline",
    "torch_cov_eigvalsh": "baseline",
    "floor_gemm": "floor",
    "floor_eigvalsh_fp32": "floor",
    "fastspec_stream": "fastspec",
    "torch_fp64_stream": "baseline",
}


def prepare_spectrum(method: str, x: torch.Tensor) -> tuple[Any, ...]:
    """The arguments of a spectrum method (not timed)."""
    if method == "floor_eigvalsh_fp32":
        return (torch.cov(x.T),)
    return (x,)


# ---------------------------------------------------------------------------------------
# Streaming: ingest every batch, then produce the d×d covariance.
# ---------------------------------------------------------------------------------------


def run_fastspec_stream(batches: list[torch.Tensor], d: int) -> torch.Tensor:
    import fastspec

    acc = fastspec.CovarianceAccumulator(d)
    for b in batches:
        acc.update(b)
    return acc.covariance()


def run_torch_fp64_stream(batches: list[torch.Tensor], d: int) -> torch.Tensor:
    """What a careful user writes: float64 running Σxᵀx (in place) and column sums."""
    xtx = torch.zeros(d, d, dtype=torch.float64)
    col = torch.zeros(d, dtype=torch.float64)
    n = 0
    for b in batches:
        b = b.double()
        xtx.addmm_(b.T, b)
        col += b.sum(0)
        n += b.shape[0]
    mu = col / n
    return (xtx - n * torch.outer(mu, mu)) / (n - 1)


STREAM_METHODS: dict[str, Callable[..., Any]] = {
    "fastspec_stream": run_fastspec_stream,
    "torch_fp64_stream": run_torch_fp64_stream,
}


def prepare_stream(x: torch.Tensor, batch: int) -> tuple[Any, ...]:
    return (list(x.split(batch)), x.shape[1])


# ---------------------------------------------------------------------------------------
# Peak-memory probe. A long-lived server process imports the libraries once and does no
# computation; every probe is a fresh child forked from it, which makes its own data (fixed
# seed), resets the kernel's resident-set high-water mark, runs the method once and reports.
# ---------------------------------------------------------------------------------------


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def probe(kind: str, method: str, n: int, d: int, seed: int = 0, batch: int | None = None) -> dict[str, Any]:
    """Run one method once on fresh data in this process and report its memory (MB).

    ``peak_rss_mb``: the method's peak resident memory above what the process held just
    before the call (libraries and the N×d input included in that baseline, so this is the
    method's own working memory). ``peak_rss_total_mb``: the process's peak VmHWM.
    """
    x = make_activations(n, d, seed)
    if kind == "spectrum":
        fn, args = SPECTRUM_METHODS[method], prepare_spectrum(method, x)
    elif kind == "stream":
        assert batch is not None
        fn, args = STREAM_METHODS[method], prepare_stream(x, batch)
    else:
        raise ValueError(f"unknown probe kind {kind!r}")
    gc.collect()
    reset = _reset_hwm()  # without it, a peak from making the data could mask the method's
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - t0
    hwm = _status_kb("VmHWM")
    return {
        "peak_rss_mb": round((hwm - before) / 1024, 1),
        "peak_rss_total_mb": round(hwm / 1024, 1),
        "baseline_rss_mb": round(before / 1024, 1),
        "hwm_reset": reset,
        "probe_seconds": seconds,
    }


def _preload() -> None:
    import fastspec  # noqa: F401

    try:
        import reptrix.alpha  # noqa: F401
        import reptrix.rankme  # noqa: F401
    except ImportError:
        pass


def serve() -> None:
    """Read one JSON request per line on stdin; answer one JSON line per request on stdout."""
    _preload()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the probe child
            os.close(r)
            try:
                out = probe(**request)
            except BaseException:  # report anything, the server must go on
                out = {"error": traceback.format_exc()}
            with os.fdopen(w, "w") as f:
                f.write(json.dumps(out))
            os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            answer = f.read()
        _, status = os.waitpid(pid, 0)
        if not answer:
            answer = json.dumps({"error": f"probe process died (wait status {status})"})
        sys.stdout.write(answer.replace("\n", " ") + "\n")
        sys.stdout.flush()


class Prober:
    """Client side of :func:`serve`: one server per test session, started on first use."""

    def __init__(self) -> None:
        self._proc: Any = None

    def __call__(self, **request: Any) -> dict[str, Any]:
        import subprocess

        if self._proc is None:
            self._proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the memory-probe server exited (code {self._proc.poll()})")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"memory probe {request} failed:\n{out['error']}")
        return out

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()  # the server's loop ends at EOF
            self._proc.wait(timeout=60)
            self._proc.stdout.close()
            self._proc = None


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    elif len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        # Debugging aid: python _bench_methods.py '{"kind": "spectrum", "method": "fastspec", "n": 2000, "d": 128}'
        _preload()
        print(json.dumps(probe(**json.loads(sys.argv[1]))))
    else:
        raise SystemExit("usage: _bench_methods.py --serve | '<probe request JSON>'")
