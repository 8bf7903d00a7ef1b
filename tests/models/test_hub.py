"""Hub checkpoints, through the real huggingface_hub/transformers download code, against the
loopback Hub of tests/hubserver.py (HF_ENDPOINT, a fresh HF_HOME; nothing leaves the machine).

huggingface_hub reads HF_ENDPOINT and HF_HOME when it is imported, so each sweep runs as a
user runs it: ``python -m fastspec trace ...`` in a subprocess with that environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hubserver import HubServer
from tinylm import CORPUS, checkpoints

import fastspec
from fastspec.models import hub
from fastspec.models.checkpoints import CheckpointError

STEPS = (0, 3, 6, 9)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubsuite")
    dirs = checkpoints(root / "ckpts", steps=STEPS)
    data = root / "data.txt"
    data.write_text("\n".join(CORPUS[:40]) + "\n")
    return dirs, data


def _branches(dirs):
    return {**{f"step{s}": d for s, d in zip(STEPS, dirs)}, "main": dirs[-1]}


def _env(server, home):
    env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1")
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    return env


def _fastspec(args, env, cwd, check=True):
    out = subprocess.run([sys.executable, "-m", "fastspec", *args], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"fastspec {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr[-4000:]}")
    return out


def _trace_args(data, out, *extra):
    return ["trace", "org/tiny", "--data", str(data), "--out", str(out), "--layers", "0,2", "--quiet", *extra]


def _cache_bytes(home):
    total = 0
    for root, _, names in os.walk(home):
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def test_all_revisions_are_listed_ordered_traced_and_equal_the_local_directories(suite, tmp_path):
    dirs, data = suite
    with HubServer({"org/tiny": _branches(dirs)}) as server:
        run = _fastspec(_trace_args(data, tmp_path / "hub", "--revisions", "all"), _env(server, tmp_path / "home"),
                        tmp_path)
        commits = dict(server.repos["org/tiny"])
        # files are fetched by commit, after the revision was resolved through the API
        assert all(f"/resolve/{commits[f'step{s}']}/" in " ".join(server.downloads()) for s in STEPS)
    assert "4 revisions of org/tiny: step0 step3 step6 step9" in run.stdout  # main names no step: left out
    frame = fastspec.load_trace(tmp_path / "hub")
    assert frame.drop_duplicates("checkpoint")["checkpoint"].tolist() == [f"org/tiny@step{s}" for s in STEPS]
    assert frame["step"].drop_duplicates().tolist() == list(STEPS)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "hub" / "checkpoints").glob("*.json"))]
    assert {r["revision"]: r["commit"] for r in records} == {f"step{s}": commits[f"step{s}"] for s in STEPS}
    local = fastspec.trace(dirs, data, tmp_path / "local", layers=[0, 2], progress=False)
    np.testing.assert_allclose(frame["rankme"].to_numpy(), local["rankme"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(frame["alpha"].to_numpy(), local["alpha"].to_numpy(), rtol=1e-9, equal_nan=True)


def test_a_glob_and_a_grid_choose_revisions_and_a_moved_branch_is_not_mixed(suite, tmp_path):
    dirs, data = suite
    out = tmp_path / "grid"
    with HubServer({"org/tiny": _branches(dirs)}) as server:
        env = _env(server, tmp_path / "home")
        run = _fastspec(_trace_args(data, out, "--revisions", "step*", "--grid", "2"), env, tmp_path)
        assert "2 revisions of org/tiny: step0 step9" in run.stdout
        server.set_branch("org/tiny", "step9", dirs[1])  # a push moves step9 to other weights
        moved = _fastspec(_trace_args(data, out, "--revisions", "step0", "step3", "step9"), env, tmp_path, check=False)
        assert moved.returncode != 0
        assert "org/tiny@step9 was traced at commit" in moved.stderr and "now resolves to" in moved.stderr
        assert len(fastspec.load_trace(out).drop_duplicates("checkpoint")) == 2  # nothing was added
        missing = _fastspec(_trace_args(data, tmp_path / "none", "--revisions", "stage*"), env, tmp_path, check=False)
        assert missing.returncode != 0 and "no branch with a training step in its name matches 'stage*'" in missing.stderr
        gone = _fastspec(["trace", "org/absent", "--revisions", "all", "--data", str(data), "--out", str(tmp_path / "x")],
                         env, tmp_path, check=False)
        assert gone.returncode != 0 and "cannot list the revisions of 'org/absent'" in gone.stderr


def test_evict_keeps_the_cache_near_prefetch_plus_one_checkpoints_and_spares_what_was_there(suite, tmp_path):
    dirs, data = suite
    home = tmp_path / "home"
    size = sum(os.path.getsize(os.path.join(dirs[0], f)) for f in os.listdir(dirs[0]))
    with HubServer({"org/tiny": _branches(dirs)}, bytes_per_second=4 * size) as server:
        env = _env(server, home)
        # step3 was in the cache before the run: it stays
        subprocess.run([sys.executable, "-c", "from huggingface_hub import snapshot_download as s; "
                        "s('org/tiny', revision='step3')"], env=env, check=True, timeout=300)
        before = _cache_bytes(home)
        peak, stop = [before], threading.Event()

        def watch():
            while not stop.is_set():
                peak.append(_cache_bytes(home))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            run = _fastspec(_trace_args(data, tmp_path / "evict", "--revisions", "all", "--evict", "--prefetch", "1"),
                            env, tmp_path)
        finally:
            stop.set()
            watcher.join()
        commits = dict(server.repos["org/tiny"])
    snapshots = home / "hub" / "models--org--tiny" / "snapshots"
    assert sorted(os.listdir(snapshots)) == [commits["step3"]]  # the others were evicted, step3 spared
    assert run.stdout.count("its files evicted") == 0  # --quiet
    # prefetch 1 + the one being traced, beyond what was there (blobs shared between revisions are kept once)
    assert max(peak) - before <= 2 * size * 1.1, (max(peak) - before, size)
    assert len(fastspec.load_trace(tmp_path / "evict").drop_duplicates("checkpoint")) == len(STEPS)


def test_grid_is_evenly_spaced_in_step_first_and_last_included():
    revs = [f"step{s}" for s in (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000)]
    assert hub.grid(revs, 4) == ["step0", "step1000", "step2000", "step3000"]
    assert hub.grid(revs, 2) == ["step0", "step3000"]
    assert hub.grid(revs, 100) == revs
    with pytest.raises(ValueError, match="positive number"):
        hub.grid(revs, 0)


def test_listing_orders_by_the_step_in_the_name_and_filters_by_glob(monkeypatch):
    class Refs:
        branches = [type("B", (), {"name": n}) for n in ("main", "stage1-step1000-tokens5B", "stage1-step200-tokens1B",
                                                          "step30", "stage2-ingredient1-step500")]

    monkeypatch.setattr(hub, "_api", lambda: type("Api", (), {"list_repo_refs": lambda self, repo: Refs()})())
    assert hub.list_revisions("org/olmo") == ["step30", "stage1-step200-tokens1B", "stage2-ingredient1-step500",
                                             "stage1-step1000-tokens5B"]
    assert hub.list_revisions("org/olmo", "stage1-*") == ["stage1-step200-tokens1B", "stage1-step1000-tokens5B"]
    with pytest.raises(CheckpointError, match=r"no branch .* matches 'x\*' \(branches: main, stage1"):
        hub.list_revisions("org/olmo", "x*")
    assert hub.is_pattern("all") and hub.is_pattern("step*000") and not hub.is_pattern("step1000")
