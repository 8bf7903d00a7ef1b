"""Extraction for all-layer tracing: fastspec.extract beside the loop a user would write.

Same model, same documents, same run. ``naive_hidden_states``: batches in data order padded
on the right, ``AutoModelForCausalLM(..., output_hidden_states=True)`` (every position of
every layer, and the LM head's logits), the last token of every layer sliced and kept.
``fastspec``: ``fastspec.extract(model, tok, docs, layers="all")``: hooks keep the pooled rows
only, batches sorted by length, no LM head, accumulators fed in float64.

``extra_info``: tokens/s (non-pad tokens), peak resident memory of one run in a fresh process
above its footprint before the call. Both results are checked to be the same rows (mean and
covariance per layer). Sizes: small by default (CI); ``FASTSPEC_BENCH_FULL=1`` uses
Pythia-70m's shape with 128 documents of up to 512 tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")


import _bench_extract as B  # noqa: E402  (benchmarks/ is on pytest's pythonpath)
ROUNDS = int(os.environ.get("FASTSPEC_BENCH_ROUNDS", "2" if B.FULL else "3"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = B.build(str(tmp_path_factory.mktemp("bench-model")))
    model, tok = B.load(path)
    docs = B.texts()
    return path, model, tok, docs, B.n_tokens(tok, docs)


def _probe(method: str, path: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("_bench_extract.py")), "--probe", method, path],
                          capture_output=True, text=True, timeout=1800, cwd=os.path.dirname(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method", ["fastspec", "naive_hidden_states"])
def test_extract_all_layers(benchmark, setup, method):
    path, model, tok, docs, n_tok = setup
    fn = B.run_fastspec if method == "fastspec" else B.run_naive
    benchmark.group = f"extract all layers: hidden {B.SHAPE['hidden']}, {B.SHAPE['layers']} layers, " \
                      f"{len(docs)} docs ≤ {B.MAX_LENGTH} tokens"
    result = benchmark.pedantic(fn, args=(model, tok, docs), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    # Both compute the same rows: compare with the other method on two layers.
    other = B.run_naive(model, tok, docs) if method == "fastspec" else B.run_fastspec(model, tok, docs)
    accs, rows = (result, other) if method == "fastspec" else (other, result)
    for layer in (1, len(rows) - 1):
        r = rows[layer].double().numpy()
        np.testing.assert_allclose(accs[layer].mean.numpy(), r.mean(0), rtol=0, atol=1e-4 * np.abs(r).max())
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(kind="extract", method=method, n_tokens=n_tok, tokens_per_s=n_tok / median, **_probe(method, path))
