"""The command line, run as a user runs it (console script in a subprocess) and in-process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from reference import make_activations, ref_eigenvalues, ref_rankme, rel
from safetensors.torch import save_file

from fastspec.cli import main

D = 128
LAM = np.arange(1, D + 1, dtype=np.float64) ** -1.0
X = make_activations(3000, LAM, mean=np.full(D, 3.0), seed=40, dtype=torch.float32)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _check_metrics(out: dict, x: torch.Tensor):
    want = ref_eigenvalues(x)
    assert (out["n_samples"], out["dim"]) == tuple(x.shape)
    assert rel(out["rankme"], ref_rankme(want)) < 1e-6
    assert rel(out["rankme_sv"], ref_rankme(ref_eigenvalues(x, center=False), sv=True)) < 1e-6
    assert out["alpha"] is not None and 0 < out["alpha_r2"] <= 1


def test_synthetic_demo_console_script_writes_table_json_and_png(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "fastspec")
    proc = subprocess.run([exe, "demo", "--synthetic", "--n", "3000", "--dim", "256", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "RankMe (eig, centred)" in proc.stdout and "construction" in proc.stdout
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert rel(result["measured"]["alpha"], 1.0) < 0.05  # finite-sample noise only
    assert rel(result["measured"]["rankme"], result["implied"]["rankme"]) < 0.05
    png = (tmp_path / "spectrum.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # beside a float64 np.cov of the same rows, fastspec is exact; the naive formula is not
    ref = result["float64_reference"]
    assert rel(result["measured"]["rankme"], ref["rankme"]) < 1e-6 and "float64 ref" in proc.stdout
    assert rel(result["naive_fp32_one_pass_rankme"], ref["rankme"]) > 1e-3


def test_synthetic_demo_narrower_than_the_fit_range_reports_alpha_as_none(tmp_path, capsys):
    code, out, _ = _run(capsys, "demo", "--synthetic", "--n", "2000", "--dim", "64", "--out", str(tmp_path))
    assert code == 0 and "alpha: none (fit_range (11, 100) needs at least 100 eigenvalues" in out
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["measured"]["alpha"] is None and (tmp_path / "spectrum.png").stat().st_size > 10_000


@pytest.mark.parametrize("fmt", ["npy", "pt", "pt-dict", "safetensors"])
def test_spectrum_reads_each_file_format(tmp_path, capsys, fmt):
    path = tmp_path / f"acts.{fmt.split('-')[0]}"
    key = None
    if fmt == "npy":
        np.save(path, X.numpy())
    elif fmt == "pt":
        torch.save(X, path)
    elif fmt == "pt-dict":
        torch.save({"layer3": X, "layer4": X[:10]}, path)
        key = "layer3"
    else:
        save_file({"acts": X, "other": X[:5].clone()}, str(path))
        key = "acts"
    argv = ["spectrum", str(path), "--quiet", "--out", str(tmp_path / "m.json")] + (["--key", key] if key else [])
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    metrics = json.loads(out)
    assert metrics == json.loads((tmp_path / "m.json").read_text())
    _check_metrics(metrics, X)
    assert "eigenvalues" not in metrics


def test_spectrum_of_wide_file_uses_all_rows(tmp_path, capsys):
    x = make_activations(90, LAM, seed=41, dtype=torch.float32)  # N < d
    np.save(tmp_path / "w.npy", x.numpy())
    code, out, err = _run(capsys, "spectrum", str(tmp_path / "w.npy"), "--quiet", "--eigenvalues", "--fit-range", "5", "50")
    assert code == 0
    metrics = json.loads(out)
    assert len(metrics["eigenvalues"]) == 90 and metrics["alpha_fit_range"] == [5, 50]
    assert metrics["rank_limited"] and metrics["rank_bound"] == 89
    assert "warning" in err and "the rank is at most 89, and so is RankMe" in err
    assert rel(metrics["rankme"], ref_rankme(ref_eigenvalues(x))) < 1e-6


@pytest.mark.parametrize(
    "setup, argv_tail, match",
    [
        (lambda p: None, [], r"no such file"),
        (lambda p: p.write_bytes(b"\x93NUMPY garbage"), [], r"not a readable .npy file"),
        (lambda p: np.save(p, np.zeros((4, 5, 6), np.float32)), [], r"expected a 2-D array .* got shape \(4, 5, 6\)"),
        (lambda p: np.save(p, np.zeros((40, 5), np.int64)), [], r"bad file \(1\).npy: dtype int64 is not supported"),
        (lambda p: np.save(p, np.zeros((40, 5), bool)), [], r"bad file \(1\).npy: dtype bool is not supported"),
        (lambda p: np.save(p, np.zeros((40, 5), np.complex64)), [], r"bad file \(1\).npy: dtype complex64 is not"),
        (lambda p: np.save(p, np.zeros((40, 5), np.float32)), ["--key", "x"], r"holds one array"),
    ],
)
def test_spectrum_errors_name_the_file(tmp_path, capsys, setup, argv_tail, match):
    path = tmp_path / "bad file (1).npy"
    setup(path)
    code, _, err = _run(capsys, "spectrum", str(path), "--quiet", *argv_tail)
    assert code == 2
    assert err.startswith("fastspec spectrum: error:")
    assert __import__("re").search(match, err), err


def test_spectrum_errors_for_containers(tmp_path, capsys):
    torch.save({"a": X, "b": X}, tmp_path / "two.pt")
    code, _, err = _run(capsys, "spectrum", str(tmp_path / "two.pt"), "--quiet")
    assert code == 2 and "holds 2 tensors ['a', 'b']; choose one with --key" in err
    code, _, err = _run(capsys, "spectrum", str(tmp_path / "two.pt"), "--quiet", "--key", "c")
    assert code == 2 and "no tensor named 'c'" in err
    (tmp_path / "t.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    code, _, err = _run(capsys, "spectrum", str(tmp_path / "t.safetensors"), "--quiet")
    assert code == 2 and "t.safetensors" in err
    save_file({"a": X[:100].clone(), "b": X[100:200].clone()}, tmp_path / "two.safetensors")
    code, _, err = _run(capsys, "spectrum", str(tmp_path / "two.safetensors"), "--quiet")
    assert code == 2 and "holds 2 tensors ['a', 'b']; choose one with --key" in err and "not a readable" not in err
    torch.save({"layers": {"3": X[:300]}, "step": 7}, tmp_path / "nested.pt")
    code, out, _ = _run(capsys, "spectrum", str(tmp_path / "nested.pt"), "--quiet")  # the one tensor, found
    assert code == 0 and json.loads(out)["key"] == "layers.3"
    torch.save({"step": 7, "name": "x"}, tmp_path / "none.pt")
    code, _, err = _run(capsys, "spectrum", str(tmp_path / "none.pt"), "--quiet")
    assert code == 2 and "holds a dict with no tensors in it" in err
    (tmp_path / "x.csv").write_text("1,2\n")
    code, _, err = _run(capsys, "spectrum", str(tmp_path / "x.csv"), "--quiet")
    assert code == 2 and "unsupported file type '.csv'" in err


def test_spectrum_nan_in_file(tmp_path, capsys):
    x = X.clone()
    x[2500, 7] = float("nan")
    np.save(tmp_path / "n.npy", x.numpy())
    code, _, err = _run(capsys, "spectrum", str(tmp_path / "n.npy"), "--quiet")
    assert code == 2 and f"{tmp_path / 'n.npy'}: acts" not in err
    assert f"{tmp_path / 'n.npy'}: batch: 1 non-finite value(s)" in err and "row 2500, column 7" in err
    assert "pass --nan-policy omit to drop rows" in err and "nan_policy=" not in err  # the CLI's own words
    with pytest.warns(UserWarning, match="dropped 1 row"):
        code, out, _ = _run(capsys, "spectrum", str(tmp_path / "n.npy"), "--quiet", "--nan-policy", "omit")
    assert code == 0 and json.loads(out)["n_dropped"] == 1


def test_explicit_fit_range_beyond_the_spectrum_is_an_error(tmp_path, capsys):
    np.save(tmp_path / "small.npy", make_activations(500, np.ones(30), seed=42).numpy())
    code, out, _ = _run(capsys, "spectrum", str(tmp_path / "small.npy"), "--quiet")
    assert code == 0 and json.loads(out)["alpha"] is None  # the default range: null, with the reason
    assert "needs at least 100 eigenvalues" in json.loads(out)["alpha_error"]
    code, _, err = _run(capsys, "spectrum", str(tmp_path / "small.npy"), "--quiet", "--fit-range", "10", "100")
    assert code == 2 and "small.npy: fit_range (10, 100) needs at least 100 eigenvalues; this spectrum has 30" in err


def test_spectrum_of_a_file_of_tiny_values_is_the_float64_answer(tmp_path, capsys):
    """float32 values of 1e-25 square below float32's range; the CLI must not print 1.00002."""
    x = (np.random.default_rng(3).standard_normal((200, 16)) * 1e-25).astype("f4")
    np.save(tmp_path / "tiny.npy", x)
    code, out, _ = _run(capsys, "spectrum", str(tmp_path / "tiny.npy"), "--quiet")
    assert code == 0
    assert rel(json.loads(out)["rankme"], ref_rankme(ref_eigenvalues(torch.from_numpy(x.astype(np.float64))))) < 1e-6


def test_out_of_memory_is_a_one_line_error(capsys, monkeypatch):
    import fastspec.cli as cli

    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(cli, "file_metrics", exhausted)
    code, _, err = _run(capsys, "spectrum", "x.npy", "--quiet")
    assert code == 2 and err.startswith("fastspec spectrum: error: out of memory") and "Traceback" not in err


def test_backends_command(capsys):
    code, out, _ = _run(capsys, "backends")
    assert code == 0
    assert "torch_cpu" in out and "cuda_kernels" in out and "infgram" in out


def test_grid_zero_is_refused_not_read_as_no_grid(tmp_path, capsys):
    """Issue 24 item 11: --grid 0 traced every revision without a word (Pythia-1B: 154 × 2 GB)."""
    code, _, err = _run(capsys, "trace", "org/x", "--revisions", "step0", "step1", "step2", "--grid", "0", "--data",
                        str(tmp_path / "d.txt"), "--out", str(tmp_path / "o"))
    assert code == 2 and "must be a positive number of revisions to keep, got 0" in err


def test_progress_bars_stay_out_of_logs(tmp_path):
    """Issue 24 item 16: on a stream that is not a terminal (a log), progress bars print
    nothing, where every update was a line of its own (a demo's log held ~800)."""
    import subprocess
    import sys

    # from tmp_path: python -m puts the working directory first, and the source tree has no _C
    run = subprocess.run([sys.executable, "-m", "fastspec", "toy", "--steps", "300", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "%|" not in run.stderr and "step/s" not in run.stderr, run.stderr[-2000:]
    assert "wrote" in run.stdout


@pytest.mark.parametrize("argv, patched, resumes", [
    (["demo", "--out", "OUT"], "run_trace_demo", True),
    (["toy", "--out", "OUT"], "run_conditions", False),
])
def test_ctrl_c_ends_a_command_with_one_line_and_status_130(argv, patched, resumes, tmp_path, monkeypatch, capsys):
    import fastspec.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, patched, interrupted)
    assert main([str(tmp_path) if a == "OUT" else a for a in argv]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"fastspec {argv[0]}: interrupted (what was finished is kept" in err
    assert ("run the same command again to resume" in err) == resumes
