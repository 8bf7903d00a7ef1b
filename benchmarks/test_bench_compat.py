"""fastspec.compat.reptrix beside Reptrix itself (issue 16): the same call, the same numbers.

A Reptrix user switches by changing one import; this shows what the switch buys. Both get the
same float32 activations (N rows, d features, a power-law spectrum with non-zero column means)
and return the same values (checked each time: RankMe to 1e-5 relative, α to 1e-5). Reptrix
runs scikit-learn's PCA (its default solver: randomized for these shapes when
``n_components`` < 80% of min(N, d), else LAPACK), fastspec one float64 covariance eigensolve.
No time is asserted. Small by default (CI); ``FASTSPEC_BENCH_FULL=1``: N = 15000, d = 2048.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from reference import make_activations

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")
reptrix_rankme = pytest.importorskip("reptrix.rankme", reason="reptrix is not installed (pip install --no-deps reptrix)")
reptrix_alpha = pytest.importorskip("reptrix.alpha", reason="reptrix is not installed (pip install --no-deps reptrix)")

from fastspec.compat import reptrix as compat  # noqa: E402

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
N, D = (15_000, 2048) if FULL else (3000, 256)
FUNCTIONS = {"get_rankme": (compat.get_rankme, reptrix_rankme.get_rankme),
             "get_alpha": (compat.get_alpha, reptrix_alpha.get_alpha)}


@pytest.fixture(scope="module")
def activations():
    lam = np.arange(1, D + 1, dtype=np.float64) ** -1.0
    return make_activations(N, lam, mean=np.linspace(0, 3, D), seed=0, dtype=torch.float32)


def _value(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("method", ["fastspec", "reptrix"])
@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_compat_reptrix_beside_reptrix(benchmark, activations, function, method):
    ours, theirs = FUNCTIONS[function]
    benchmark.group = f"reptrix.{function}, N={N}, d={D}, float32"
    benchmark.extra_info.update(method=method, n=N, d=D)
    fn = ours if method == "fastspec" else theirs
    got = benchmark.pedantic(fn, args=(activations,), rounds=3 if FULL else 5, iterations=1, warmup_rounds=1)
    other = (theirs if method == "fastspec" else ours)(activations)
    assert _value(got) == pytest.approx(_value(other), rel=1e-5)
