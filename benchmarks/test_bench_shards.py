"""Two ``fastspec trace --shard`` jobs against one job on the same checkpoints (issue 26).

The checkpoints of a tiny GPT-NeoX trained here are traced three ways, each into a fresh results
directory by real ``python -m fastspec trace`` processes:

- ``one_job``: one job, ``--shard`` not given, one thread (``OMP_NUM_THREADS=1``);
- ``two_shards``: two jobs ``--shard 0/2`` and ``--shard 1/2`` started together into one
  directory, one thread each: two tasks of a Slurm array, each with what the one job had;
- ``one_job_all_cores``: one job with every core, the same hardware as ``two_shards`` used by
  one job.

``extra_info`` holds each way's wall time (process start to exit, imports included) and the
ratios. The records (all but their timings) and ``trace.csv`` of ``two_shards`` must equal
``one_job``'s exactly (asserted): the same thread count gives the same float32 forward passes.
``one_job_all_cores`` reduces its float32 forward passes over another number of threads, so
it agrees to a relative 1e-5 (asserted; about 1e-7 is seen). No time is asserted. Small by
default (CI: 4 checkpoints, 64 texts, without ``one_job_all_cores``); with
``FASTSPEC_BENCH_FULL=1``: 8 checkpoints of a wider model, 600 texts, all three ways, two
rounds of each.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")

from tinylm import CORPUS  # noqa: E402  (tests/tinylm.py: the test corpus)

from fastspec.models.tiny import TinyLMConfig, train_checkpoints  # noqa: E402

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
STEPS, HIDDEN, LAYERS, TEXTS, ROUNDS = ((0, 5, 10, 15, 20, 25, 30, 35), 128, 4, 600, 2) if FULL else \
    ((0, 2, 4, 6), 32, 2, 64, 1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_shards")
    cfg = TinyLMConfig(arch="gpt_neox", vocab_size=300, hidden=HIDDEN, layers=LAYERS, heads=4, context=64, seq_len=16,
                       batch_size=8, steps=max(STEPS), lr=1e-2, warmup=2, save_steps=STEPS)
    ckpts = train_checkpoints(CORPUS, str(root / "ckpts"), cfg, progress=False)
    data = root / "texts.txt"
    data.write_text("\n".join((CORPUS * (TEXTS // len(CORPUS) + 1))[:TEXTS]) + "\n")
    return root, ckpts, data


#: way → (jobs, threads per job); CI's small run leaves out the all-cores job (a process start)
WAYS = {"one_job": (1, 1), "two_shards": (2, 1), **({"one_job_all_cores": (1, os.cpu_count() or 1)} if FULL else {})}


def sweep(setup, out: str, shards: int, threads: int) -> float:
    """Wall seconds of ``shards`` jobs (1: no --shard) of ``threads`` threads each tracing
    every checkpoint into ``out``."""
    root, ckpts, data = setup
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "fastspec", "trace", *ckpts, "--data", str(data), "--out", out, "--max-length", "32",
           "--batch-size", "16", "--fit-range", "2", "20", "--quiet"]
    start = time.perf_counter()
    jobs = [subprocess.Popen([*cmd, *([] if shards == 1 else ["--shard", f"{i}/{shards}"])], env=env, cwd=root,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(shards)]
    for job in jobs:
        _, err = job.communicate(timeout=1800)
        assert job.returncode == 0, err
    return time.perf_counter() - start


def results(out: str) -> tuple[dict, str]:
    recs = {}
    for name in sorted(os.listdir(os.path.join(out, "checkpoints"))):
        if name.endswith(".json"):
            with open(os.path.join(out, "checkpoints", name)) as fh:
                recs[name] = {k: v for k, v in json.load(fh).items() if k not in ("seconds", "tokens_per_second")}
    with open(os.path.join(out, "trace.csv")) as fh:
        return recs, fh.read()


def test_two_shard_jobs_against_one_job(benchmark, setup, tmp_path):
    times: dict[str, list[float]] = {name: [] for name in WAYS}
    outs: dict[str, str] = {}

    def each():  # in turn, and reversed every other round: none always runs on a cold or a warm machine
        order = list(WAYS) if len(times["one_job"]) % 2 == 0 else list(WAYS)[::-1]
        for name in order:
            outs[name] = str(tmp_path / f"{name}{len(times[name])}")
            times[name].append(sweep(setup, outs[name], *WAYS[name]))

    benchmark.group = f"trace: {len(STEPS)} checkpoints, one job or two --shard jobs"
    benchmark.pedantic(each, rounds=ROUNDS, iterations=1)
    one, two = results(outs["one_job"]), results(outs["two_shards"])
    assert one == two
    best = {k: min(v) for k, v in times.items()}
    info = {"checkpoints": len(STEPS), "texts": TEXTS, "hidden": HIDDEN, "layers": LAYERS, "cores": os.cpu_count(),
            **{f"{k}_s": v for k, v in best.items()}, "two_shards_over_one_job": best["two_shards"] / best["one_job"],
            "times": times, "equal": True}
    if "one_job_all_cores" in outs:
        a, b = (pd.read_csv(io.StringIO(results(outs[k])[1])) for k in ("one_job", "one_job_all_cores"))
        worst = 0.0
        for col in ("rankme", "rankme_sv", "alpha"):
            x, y = a[col].to_numpy(float), b[col].to_numpy(float)
            np.testing.assert_allclose(y, x, rtol=1e-5, equal_nan=True)
            ok = np.isfinite(x)
            worst = max(worst, float(np.max(np.abs(y[ok] - x[ok]) / np.abs(x[ok]), initial=0.0)))
        info.update(two_shards_over_one_job_all_cores=best["two_shards"] / best["one_job_all_cores"],
                    all_cores_max_rel_diff=worst)
    benchmark.extra_info.update(info)
