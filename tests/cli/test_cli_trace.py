"""`fastspec demo`, `fastspec trace` (one process and torchrun) and `fastspec plot`, as a user runs them."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from tinylm import CORPUS, checkpoints

import fastspec
from fastspec.demo import TraceDemoConfig

BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in CORPUS))
    return root, checkpoints(root / "ckpts"), data


def _run(*argv, timeout=600):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def test_trace_then_plot(setup, tmp_path):
    root, ckpts, data = setup
    out = tmp_path / "run"
    proc = _run(f"{BIN}/fastspec", "trace", *ckpts, "--data", str(data), "--out", str(out), "--n-texts", "100",
                "--max-length", "32", "--fit-range", "2", "20", "--quiet")
    assert proc.returncode == 0, proc.stderr
    frame = fastspec.load_trace(out)
    assert len(frame) == 9 and frame["n_samples"].eq(100).all()
    assert "rankme_sv" in proc.stdout and "trace.csv" in proc.stdout
    proc = _run(f"{BIN}/fastspec", "plot", str(out), "--warmup-steps", "2")
    assert proc.returncode == 0, proc.stderr
    phases = pd.read_csv(out / "phases.csv")
    assert phases["phase"].iloc[0] == "warmup" and len(phases) == 3
    for name in ("trajectories.png", "heatmap.png"):
        assert (out / name).stat().st_size > 20_000


def test_trace_errors_exit_2_with_the_reason(setup, tmp_path):
    root, ckpts, data = setup
    proc = _run(f"{BIN}/fastspec", "trace", ckpts[0], "--data", str(tmp_path / "none.txt"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "none.txt: no such file" in proc.stderr
    proc = _run(f"{BIN}/fastspec", "trace", *ckpts, "--revisions", "a", "--data", str(data), "--out", str(tmp_path))
    assert proc.returncode == 2 and "--revisions takes exactly one model" in proc.stderr
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([f"{BIN}/fastspec", "trace", "EleutherAI/pythia-14m", "--revisions", "step3", "--data",
                           str(data), "--out", str(tmp_path / "x"), "--quiet"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "revision 'step3'" in proc.stderr


def test_torchrun_two_processes_equal_one(setup, tmp_path):
    """--nproc-per-node 2 over gloo: each rank takes every other batch; the all-reduced
    accumulators give the one-process numbers."""
    root, ckpts, data = setup
    # The torchrun line of docs/how-to/torchrun.md: torchrun --standalone --nproc-per-node K -m fastspec trace CKPT --data FILE
    # --n-texts N --out DIR (every texts, so that one process traces the same rows).
    args = ["trace", *ckpts[1:], "--data", str(data), "--n-texts", str(len(CORPUS)), "--out", None, "--max-length",
            "32", "--batch-size", "8", "--fit-range", "2", "20", "--quiet"]
    one, two = tmp_path / "one", tmp_path / "two"
    args[args.index(None)] = str(one)
    assert (p := _run(f"{BIN}/fastspec", *args)).returncode == 0, p.stderr
    args[args.index(str(one))] = str(two)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "fastspec", *args], capture_output=True, text=True, timeout=600, env=env,
                       cwd=tmp_path)  # not the source tree, which has no built _C
    assert p.returncode == 0, p.stderr[:6000]
    a, b = fastspec.load_trace(one, eigenvalues=True), fastspec.load_trace(two, eigenvalues=True)
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
    assert a["n_samples"].tolist() == b["n_samples"].tolist() == [len(CORPUS)] * len(a)
    # The rows agree to float32 rounding only (other batch shapes, other thread counts), so the
    # eigenvalues agree to ~1e-7·λ₁; this tiny model's spectra are near-degenerate, which
    # moves RankMe by up to ~1e-5 (α, fitted on the noisy tail here, is not compared).
    for x, y in zip(a["eigenvalues"], b["eigenvalues"]):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-6 * x[0])
    np.testing.assert_allclose(b["rankme"], a["rankme"], rtol=3e-5)
    np.testing.assert_allclose(b["rankme_sv"], a["rankme_sv"], rtol=3e-5)


def test_no_option_abbreviates_one_of_torchrun_s():
    """torchrun parses the whole line: an option of ours that is a prefix of one of its own
    (as --n is of --nnodes and --nproc-per-node) makes it stop with "ambiguous option"."""
    from torch.distributed.run import get_args_parser

    from fastspec.cli import build_parser

    theirs = {o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")}
    sub = next(a for a in build_parser()._actions if a.choices and "trace" in a.choices)
    for name in ("trace",):
        ours = {o for a in sub.choices[name]._actions for o in a.option_strings if o.startswith("--")}
        clash = {o: sorted(t for t in theirs if t.startswith(o) and t != o) for o in ours}
        assert not {o: c for o, c in clash.items() if c}, f"fastspec {name} options that abbreviate torchrun's"


def test_demo_trains_traces_and_labels_at_a_small_size(tmp_path):
    """Every output of the demo at 20 steps: the ablation's k stops at the width, 32, and
    the run ends with its report and the comparison with the paper."""
    proc = _run(f"{BIN}/fastspec", "demo", "--steps", "20", "--n-trace", "120", "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "RankMe" in proc.stdout and "phase" in proc.stdout
    frame = fastspec.load_trace(tmp_path / "trace")
    assert frame["step"].max() == 20 and frame["n_samples"].eq(120).all() and frame["dim"].eq(32).all()
    assert pd.read_csv(tmp_path / "ablation.csv")["k"].max() == 32
    for name in ("trajectories.png", "heatmap.png", "phases.csv", "scores.csv", "correlations.md", "pass_at_k.png",
                 "ablation.png", "toy.png", "phase_scores.csv", "report.md", "report.html"):
        assert (tmp_path / name).exists(), name
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert sorted(scores["step"]) == sorted(frame["step"].unique()) and scores["cloze_accuracy"].between(0, 1).all()
    counts = pd.read_csv(tmp_path / "pass_at_k_counts.csv")
    n = TraceDemoConfig().n_samples
    assert counts["c"].between(0, n).all() and (counts["n"] == n).all()
    # standard errors beside the scores: binomial for the cloze, over the problems for pass@1
    p = scores["cloze_accuracy"]
    np.testing.assert_allclose(scores["cloze_accuracy_se"], np.sqrt(p * (1 - p) / TraceDemoConfig().n_items))
    per = (counts["c"] / counts["n"]).groupby(counts["step"])
    np.testing.assert_allclose(scores.set_index("step")["pass@1_se"].sort_index().to_numpy(),
                               (per.std(ddof=1) / np.sqrt(per.size())).sort_index().to_numpy())
    report = (tmp_path / "report.md").read_text()
    assert "Not in this directory" not in report and report.count("![") == 7  # memorization and Table 1 too
    assert "## Against the paper, phase by phase" in report and "Phases found on the last layer" in report
    assert "phases: warmup: steps 0–20" in proc.stdout and "against the paper" in proc.stdout
    memo = pd.read_csv(tmp_path / "memorization.csv")
    assert sorted(memo["step"]) == sorted(frame["step"].unique()) and memo["rho"].between(-1, 1).all()
    assert "memorization" in scores.columns and (tmp_path / "suffix_lengths.csv").exists()
    # a second run reuses the model and the finished trace
    again = _run(f"{BIN}/fastspec", "demo", "--steps", "20", "--n-trace", "120", "--out", str(tmp_path), "--quiet")
    assert again.returncode == 0 and again.stdout == proc.stdout
