"""A 6-checkpoint hub sweep with prefetch against the same sweep without it (issue 14).

The loopback Hub (tests/hubserver.py) is slowed so that one checkpoint's download takes as
long as tracing it, where prefetching the next checkpoint while tracing the current one can
save the most: ideally 6 downloads + 6 traces become 1 download + 6 traces (7/12 = 0.58 of
the time). The sweep runs in a process of its own (``_hub_bench.py``: huggingface_hub reads
HF_ENDPOINT when it is imported), which times both variants alternately; pytest-benchmark
times the whole and ``extra_info`` holds the two sweeps' times and their ratio. No time is
asserted. Small by default (CI); ``FASTSPEC_BENCH_FULL=1``: a wider model, more texts, two
rounds of each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"


def test_hub_sweep_with_and_without_prefetch(benchmark, tmp_path):
    out = tmp_path / "hub.json"
    script = os.path.join(os.path.dirname(__file__), "_hub_bench.py")
    cmd = [sys.executable, script, str(out), *(["--full"] if FULL else [])]
    benchmark.group = "hub sweep: 6 checkpoints, download time = trace time"
    benchmark.pedantic(lambda: subprocess.run(cmd, check=True, capture_output=True, timeout=1200, cwd=tmp_path),
                       rounds=1, iterations=1)
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"prefetch0", "prefetch1", "prefetch2"} and result["checkpoints"] == 6
    benchmark.extra_info.update(result)
