"""`fastspec correlate`, `pass-at-k`, `ablate` and `report` on a traced run of tiny checkpoints,
as a user chains them: every command writes into the results directory and the report
gathers what is there."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from tinylm import CORPUS, checkpoints

import fastspec
from fastspec.cli import main

BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyses")
    ckpts = checkpoints(root / "ckpts", steps=(0, 2, 4, 6))
    data = root / "data.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in CORPUS))
    out = root / "run"
    fastspec.trace(ckpts, str(data), str(out), n=120, max_length=32, fit_range=(2, 20), progress=False)
    return root, ckpts, data, out


def test_chain_of_commands_and_the_report(run, capsys):
    root, ckpts, data, out = run
    # the report works on a bare trace (drawing its figures) and says what is missing
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Toy model" in md and "Not in this directory. Make it with `fastspec toy" in md
    assert (out / "trajectories.png").stat().st_size > 20_000

    scores = root / "scores.csv"
    pd.DataFrame({"step": [0, 2, 4, 6], "accuracy": [0.25, 0.3, 0.28, 0.4]}).to_csv(scores, index=False)
    assert main(["correlate", str(out), str(scores), "--out", str(out)]) == 0
    corr = pd.read_csv(out / "correlations.csv")
    assert set(corr["metric"]) == {"rankme", "alpha"} and corr["n"].eq(4).all()

    counts = root / "counts.csv"
    pd.DataFrame({"step": [0, 0, 6, 6], "problem": [1, 2, 1, 2], "n": [8] * 4, "c": [0, 1, 4, 8]}).to_csv(counts, index=False)
    assert main(["pass-at-k", str(counts), "--k", "1", "4", "--by", "step", "--out", str(out)]) == 0
    pk = pd.read_csv(out / "pass_at_k.csv")
    assert pk["pass@1"].tolist() == pytest.approx([1 / 16, 0.75])
    assert (out / "pass_at_k.png").stat().st_size > 10_000

    items = root / "items.jsonl"
    words = ["hill", "town", "sea"]  # CORPUS lines read "<w1> <w2> the <n> <w3> of the <w4>…", w4 one of these
    items.write_text("\n".join(json.dumps({"question": " ".join(t.split()[:7]), "choices": words,
                                           "answer": words.index(t.split()[7])}) for t in CORPUS[::4]) + "\n")
    assert main(["ablate", ckpts[-1], "--items", str(items), "--basis-data", str(data), "--k", "1", "8", "32",
                 "--out", str(out), "--quiet"]) == 0
    ab = pd.read_csv(out / "ablation.csv")
    assert ab["mode"].tolist() == ["none", "retain", "retain", "retain", "remove", "remove", "remove"]
    assert ab.loc[3, "accuracy"] == ab.loc[0, "accuracy"]  # retain k = d = 32
    assert main(["toy", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()

    proc = subprocess.run([f"{BIN}/fastspec", "report", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for section in ("Geometry across checkpoints", "Correlations with per-checkpoint scores", "pass@k",
                    "Top-k eigenvector ablation", "Toy model"):
        assert f"## {section}" in md and f"<h2>{section}</h2>" in page
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert set(images) == {"trajectories.png", "heatmap.png", "pass_at_k.png", "ablation.png", "toy.png"}
    # every section this chain made is there; memorization, which it did not run, says how to make it
    assert md.count("Not in this directory") == 1 and "fastspec memorization --checkpoints" in md
    assert re.search(r"\| skewed\+bottleneck\+CE \| 8 \|.*\| yes \|", md)  # the main toy run compresses
    assert len(re.findall(r"\| no \|", md)) == 3  # and its three controls do not
    assert set(re.findall(r'<img src="([^"]+)"', page)) == set(images)
    assert all((out / p).is_file() for p in images)
    # the numbers in the page are the ones in the files
    r = corr.set_index(["metric", "score"]).loc[("rankme", "accuracy")]
    assert f"{r.pearson_r:.3f} ({r.pearson_p:.2e})" in md
    assert np.isclose(float(re.search(r"unablated: ([0-9.]+)", md).group(1)), ab.loc[0, "accuracy"], atol=1e-3)


def test_errors_exit_2_with_the_reason(run, tmp_path, capsys):
    root, ckpts, data, out = run
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no such results directory" in capsys.readouterr().err
    assert main(["correlate", str(out), str(tmp_path / "scores.csv")]) == 2
    assert "scores.csv" in capsys.readouterr().err
    assert main(["pass-at-k", str(tmp_path / "t.csv")]) == 2
    assert "no such table" in capsys.readouterr().err
    assert main(["ablate", ckpts[-1], "--items", str(tmp_path / "i.jsonl"), "--basis-data", str(data)]) == 2
    assert "no such items file" in capsys.readouterr().err
