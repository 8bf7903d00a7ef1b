"""The Ray Data aggregation beside ``fastspec.spectrum`` on the same rows (issue 26): what
running on Ray costs over one in-process call.

The same float32 activations (N rows, d features, a power-law spectrum with non-zero column
means) are held once as a NumPy array and once as a Ray dataset of ``BLOCKS`` blocks already in
Ray's object store (``ray.data.from_numpy(...).materialize()``, outside the timing), on a local
Ray instance of 2 CPUs. Timed, each round: ``fastspec.spectrum(x)`` (one process, one call),
and ``ds.aggregate(CovarianceAggregate(..., result="spectrum"))`` (each block reduced to an
accumulator state in a Ray task, the states merged by Chan's update, one eigensolve). The
eigenvalues agree to 1e-5 of λ₁ (checked each round: float32 products both sides, different
chunking). ``extra_info`` holds both times and the overhead ratio; no time is asserted.
Small by default (CI: N = 20 000, d = 64, 4 blocks); ``FASTSPEC_BENCH_FULL=1``: N = 200 000,
d = 512, 8 blocks.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from localray import local_ray
from reference import make_activations

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")
ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'fastspec[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'fastspec[ray]')")

import fastspec  # noqa: E402
from fastspec.integrations.ray import CovarianceAggregate  # noqa: E402

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
N, D, BLOCKS = (200_000, 512, 8) if FULL else (20_000, 64, 4)
ROUNDS = 3


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    lam = np.arange(1, D + 1, dtype=np.float64) ** -1.0
    x = make_activations(N, lam, mean=np.linspace(0, 3, D), seed=0, dtype=torch.float32).numpy()
    with local_ray(tmp_path_factory.mktemp("ray")):  # as tests/integrations/test_ray.py
        yield x, ray.data.from_numpy(np.array_split(x, BLOCKS)).materialize()


def test_ray_aggregate_beside_spectrum(benchmark, rows):
    x, ds = rows
    agg = CovarianceAggregate("data", D, result="spectrum")
    times: dict[str, list[float]] = {"spectrum": [], "ray": []}
    got = {}

    def both():  # alternately first, so that neither always runs on a cold or a warm machine
        order = ["spectrum", "ray"] if len(times["ray"]) % 2 == 0 else ["ray", "spectrum"]
        for name in order:
            start = time.perf_counter()
            got[name] = fastspec.spectrum(x) if name == "spectrum" else ds.aggregate(agg)[agg.name]
            times[name].append(time.perf_counter() - start)
        want = got["spectrum"].eigenvalues
        assert got["ray"].n_samples == N
        assert np.abs(got["ray"].eigenvalues - want).max() < 1e-5 * want[0]

    benchmark.group = f"covariance spectrum, N={N}, d={D}, float32, {BLOCKS} Ray blocks"
    # The first round starts Ray's workers (a Python process each, importing torch): a warm-up.
    benchmark.pedantic(both, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    one, on_ray = min(times["spectrum"][1:]), min(times["ray"][1:])
    benchmark.extra_info.update(n=N, d=D, blocks=BLOCKS, spectrum_s=one, ray_s=on_ray, overhead=on_ray / one,
                                times=times, torch_threads=torch.get_num_threads())
