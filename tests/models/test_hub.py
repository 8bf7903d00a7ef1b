"""Hub checkpoints, through the real huggingface_hub/transformers download code, against the
loopback Hub of tests/hubserver.py (HF_ENDPOINT, a fresh HF_HOME; nothing leaves the machine).

huggingface_hub reads HF_ENDPOINT and HF_HOME when it is imported, so each sweep runs as a
user runs it: ``python -m fastspec trace ...`` in a subprocess with that environment."""

from __future__ import annotations

import json
import os
import re
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
        # issue 24 item 8: the advice keeps the step (a commit as the revision would lose it)
        assert "use a new directory" in moved.stderr and "would lose its step" in moved.stderr
        # issue 24 item 7: every recorded checkpoint is checked, also one not given again (as a
        # refinement is not), so no refinement is chosen from a stale result
        unlisted = _fastspec(_trace_args(data, out, "--revisions", "step0", "step3"), env, tmp_path, check=False)
        assert unlisted.returncode != 0 and "org/tiny@step9 was traced at commit" in unlisted.stderr
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


def _snapshots(home):
    folder = home / "hub" / "models--org--tiny" / "snapshots"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def test_evict_spares_a_users_snapshots_when_a_blob_link_of_the_repo_is_broken(suite, tmp_path):
    """Issue 24 item 1: scan_cache_dir() skips a repository with one broken blob link, so the
    snapshots held before the run came back empty, and a re-download that repaired the link
    let the evictions delete the user's step3 and step6. They are read from the folders now."""
    dirs, data = suite
    home = tmp_path / "home"
    with HubServer({"org/tiny": _branches(dirs)}) as server:
        env = _env(server, home)
        for rev in ("step3", "step6"):
            subprocess.run([sys.executable, "-c", "from huggingface_hub import snapshot_download as s; "
                            f"s('org/tiny', revision='{rev}')"], env=env, check=True, timeout=300)
        commits = dict(server.repos["org/tiny"])
        held = sorted([commits["step3"], commits["step6"]])
        snap = home / "hub" / "models--org--tiny" / "snapshots" / commits["step6"]
        link = next(p for p in snap.iterdir() if p.is_symlink() and p.name == "config.json")
        os.remove(os.path.realpath(link))  # the blob goes: its link is broken
        _fastspec(_trace_args(data, tmp_path / "out", "--revisions", "all", "--evict"), env, tmp_path)
    assert _snapshots(home) == held  # both of the user's snapshots are still there
    assert json.loads((tmp_path / "out" / "downloads.json").read_text())["downloads"] == {}


def test_evict_keeps_a_commit_that_another_revision_of_the_run_shares(suite, tmp_path):
    """Issue 24 item 2: main is step9's commit (as Pythia's main is step143000's); evicting one
    deleted the other's prefetched snapshot and the run died."""
    dirs, data = suite
    home = tmp_path / "home"
    with HubServer({"org/tiny": _branches(dirs)}) as server:
        env = _env(server, home)
        _fastspec(_trace_args(data, tmp_path / "out", "--revisions", "step9", "main", "step0", "--evict",
                              "--prefetch", "2"), env, tmp_path)
    labels = set(fastspec.load_trace(tmp_path / "out")["checkpoint"])
    assert labels == {"org/tiny@step9", "org/tiny@main", "org/tiny@step0"}
    assert _snapshots(home) == []  # all evicted in the end, once no checkpoint of the run needed them


def test_a_resumed_evict_run_evicts_what_an_interrupted_one_left(suite, tmp_path):
    """Issue 24 item 3: a run that dies with a downloaded snapshot on disk (here: weights that
    do not load; kill -9 leaves the same state) leaked it for good, and the next run counted it
    as the user's. downloads.json records each download before it starts."""
    import shutil

    dirs, data = suite
    broken = tmp_path / "broken"
    shutil.copytree(dirs[1], broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: downloads, then fails to load
    home = tmp_path / "home"
    with HubServer({"org/tiny": {"step0": dirs[0], "step3": str(broken)}}) as server:
        env = _env(server, home)
        died = _fastspec(_trace_args(data, tmp_path / "out", "--revisions", "step0", "step3", "--evict"), env,
                         tmp_path, check=False)
        assert died.returncode == 2 and "org/tiny@step3" in died.stderr
        left = json.loads((tmp_path / "out" / "downloads.json").read_text())["downloads"]
        assert list(left) == ["org/tiny@step3"] and _snapshots(home) == [server.repos["org/tiny"]["step3"]]
        _fastspec(_trace_args(data, tmp_path / "out", "--revisions", "step0", "--evict"), env, tmp_path)
    assert _snapshots(home) == [] and json.loads((tmp_path / "out" / "downloads.json").read_text())["downloads"] == {}


def test_grid_is_evenly_spaced_in_step_first_and_last_included():
    revs = [f"step{s}" for s in (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000)]
    assert hub.grid(revs, 4) == ["step0", "step1000", "step2000", "step3000"]
    assert hub.grid(revs, 2) == ["step0", "step3000"]
    assert hub.grid(revs, 100) == revs
    for bad in (0, -2, True, 2.0, None):  # 0 read as "no grid" traced every revision (issue 24)
        with pytest.raises(ValueError, match=rf"grid \(--grid N\) must be a positive number of revisions to keep, "
                                             rf"got {re.escape(repr(bad))}: .* give no grid"):
            hub.grid(revs, bad)


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


@pytest.fixture(scope="module")
def turning(tmp_path_factory):
    """17 revisions (step0 … step160) of a tiny model whose embedding keeps r(step) of its 32
    directions at full scale, r = 32 − round(|step − 70| / 6): layer 0's RankMe rises to a
    known peak at step 70 and falls after it (mean-pooled: the texts end in few distinct words)."""
    import torch
    from tinylm import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("turning")
    base = save_model(str(root / "base"), "gpt_neox", layers=2, hidden=32)
    tok = AutoTokenizer.from_pretrained(base)
    dirs = {}
    for step in range(0, 161, 10):
        model = AutoModelForCausalLM.from_pretrained(base)
        r = 32 - round(abs(step - 70) / 6)
        with torch.no_grad():
            model.get_input_embeddings().weight[:, r:] *= 0.05
        path = root / f"step{step}"
        model.save_pretrained(path)
        tok.save_pretrained(path)
        dirs[f"step{step}"] = str(path)
    data = root / "data.txt"
    data.write_text("\n".join(CORPUS) + "\n")
    return dirs, data


def test_refine_bisects_towards_the_turning_point(turning, tmp_path):
    dirs, data = turning
    out = tmp_path / "refine"
    with HubServer({"org/turn": dirs}) as server:
        run = _fastspec(["trace", "org/turn", "--revisions", "all", "--grid", "4", "--refine", "4", "--layers", "0",
                         "--pooling", "mean",
                         "--data", str(data), "--out", str(out), "--fit-range", "2", "20"], _env(server, tmp_path / "h"),
                        tmp_path)
    assert "4 revisions of org/turn: step0 step50 step110 step160" in run.stdout
    frame = fastspec.load_trace(out)
    how = dict(zip(frame["step"], frame["chosen_by"]))
    assert [s for s, h in how.items() if h == "grid"] == [0, 50, 110, 160]
    refined = [int(s) for s, h in how.items() if h == "refine"]
    assert len(refined) == 4 and 70 in refined, refined  # the known turning point was found
    assert int(frame.loc[frame["rankme"].idxmax(), "step"]) == 70


def test_memorization_across_hub_revisions(suite, tmp_path):
    """fastspec memorization --checkpoints with hub revisions: fetched by commit (recorded),
    the same ρ as scoring the local directories."""
    from transformers import AutoTokenizer

    dirs, _ = suite
    tok = AutoTokenizer.from_pretrained(dirs[0])
    docs = [np.array(tok(t, add_special_tokens=False)["input_ids"]) for t in CORPUS]
    index = fastspec.InfGramIndex.build(docs, tmp_path / "index", vocab_size=len(tok), progress=False)
    items = [{"prompt": " ".join(a.split()[:4]), "output": " " + " ".join(b.split()[3:3 + k % 3 + 1])}
             for k, (a, b) in enumerate(zip(CORPUS[::5], CORPUS[3::5]))]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    with HubServer({"org/tiny": _branches(dirs)}) as server:
        _fastspec(["memorization", "--checkpoints", "org/tiny@step0", "org/tiny@step6", "--index", str(tmp_path / "index"),
                   "--items", str(tmp_path / "items.jsonl"), "--out", str(tmp_path / "memo"), "--quiet"],
                  _env(server, tmp_path / "home"), tmp_path)
        commits = dict(server.repos["org/tiny"])
    import pandas as pd

    table = pd.read_csv(tmp_path / "memo" / "memorization.csv")
    assert table["checkpoint"].tolist() == ["org/tiny@step0", "org/tiny@step6"] and table["step"].tolist() == [0, 6]
    for row, d in zip(table.itertuples(), (dirs[0], dirs[2])):
        assert row.rho == pytest.approx(fastspec.memorization(items, index, d).rho, abs=1e-9)
    recs = [json.loads(p.read_text()) for p in sorted((tmp_path / "memo" / "memorization").glob("*.json"))]
    assert sorted(r["commit"] for r in recs) == sorted([commits["step0"], commits["step6"]])


def test_torchrun_with_hub_checkpoints_downloads_once_on_rank_0(suite, tmp_path):
    """Two gloo processes: rank 0 fetches (and evicts) each revision, rank 1 waits for the
    files; every file body is served once, and the numbers are one process's. With --refine
    (the choice broadcast from rank 0) and --save-every (a partial state per rank, deleted
    once each checkpoint is done)."""
    dirs, data = suite
    args = [*_trace_args(data, tmp_path / "two", "--revisions", "all", "--grid", "2", "--evict", "--refine",
                         "1", "--save-every", "1"), "--max-length", "32"]
    with HubServer({"org/tiny": _branches(dirs)}) as server:
        env = {**_env(server, tmp_path / "home"), "OMP_NUM_THREADS": "1"}
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "fastspec", *args], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
        assert p.returncode == 0, p.stderr[-6000:]
        bodies = server.downloads()
    assert len(bodies) == len(set(bodies))  # no file downloaded twice (rank 1 read rank 0's)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    two = fastspec.load_trace(tmp_path / "two")
    # step3 bisects 0..9 (3 and 6 are equally near its middle: the earlier wins)
    assert two.drop_duplicates("step")[["step", "chosen_by"]].values.tolist() == [[0, "grid"], [3, "refine"],
                                                                                [9, "grid"]]
    assert not list((tmp_path / "two" / "checkpoints").glob("*.partial*"))
    one = fastspec.trace([dirs[0], dirs[1], dirs[3]], data, tmp_path / "one", layers=[0, 2], max_length=32,
                         progress=False)
    np.testing.assert_allclose(two["rankme"].to_numpy(), one["rankme"].to_numpy(), rtol=3e-5)
    snapshots = tmp_path / "home" / "hub" / "models--org--tiny" / "snapshots"
    assert not snapshots.exists() or not os.listdir(snapshots)  # evicted (the last one takes the folder with it)
