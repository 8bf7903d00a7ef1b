"""Every command, handed a missing file, an empty file, a directory where a file belongs or a
file where a directory belongs: exit code 2 and one line that names the path."""

import os

import pytest

from fastspec.cli import main

# (command line, the path the error must name); "D" is a directory, "F" a file holding one
# line of text, "E*" empty files, anything else does not exist.
CASES = {
    "spectrum missing": (["spectrum", "missing.npy"], "missing.npy"),
    "spectrum empty": (["spectrum", "E.npy"], "E.npy"),
    "spectrum dir": (["spectrum", "D"], "D"),
    "trace missing data": (["trace", "D", "--data", "missing.txt", "--out", "o"], "missing.txt"),
    "trace missing checkpoint": (["trace", "D/step1", "--data", "F.txt", "--out", "o"], "D/step1"),
    "trace empty data": (["trace", "D", "--data", "E.txt", "--out", "o"], "E.txt"),
    "trace dir data": (["trace", "D", "--data", "D", "--out", "o"], "D"),
    "plot missing": (["plot", "missing_dir"], "missing_dir"),
    "plot empty dir": (["plot", "D"], "D"),
    "plot file": (["plot", "F.txt"], "F.txt"),
    "status missing": (["status", "missing_dir"], "missing_dir"),
    "status empty dir": (["status", "D"], "D"),
    "status file": (["status", "F.txt"], "F.txt"),
    "index build missing": (["index", "build", "missing.npy", "ix"], "missing.npy"),
    "index build empty": (["index", "build", "E.npy", "ix"], "E.npy"),
    "index build dir": (["index", "build", "D", "ix"], "D"),
    "index build onto a file": (["index", "build", "missing.npy", "F.txt"], "missing.npy"),
    "index count missing": (["index", "count", "missing_ix", "1"], "missing_ix"),
    "index count empty dir": (["index", "count", "D", "1"], "D"),
    "index count file": (["index", "count", "F.txt", "1"], "F.txt"),
    "index verify missing": (["index", "verify", "missing_ix"], "missing_ix"),
    "index verify file": (["index", "verify", "F.txt"], "F.txt"),
    "memorization missing items": (["memorization", "--index", "D", "--model", "D", "--items", "missing.jsonl"],
                                   "missing.jsonl"),
    "memorization empty items": (["memorization", "--index", "D", "--model", "D", "--items", "E.jsonl"], "E.jsonl"),
    "memorization dir items": (["memorization", "--index", "D", "--model", "D", "--items", "D"], "D"),
    "memorization file index": (["memorization", "--index", "F.txt", "--model", "D", "--items", "F.jsonl"], "F.txt"),
    "ablate missing model": (["ablate", "missing_model", "--items", "F.jsonl", "--basis-data", "F.txt", "--out", "o"],
                             "missing_model"),
    "ablate file model": (["ablate", "F.txt", "--items", "F.jsonl", "--basis-data", "F.txt", "--out", "o"], "F.txt"),
    "pass-at-k missing": (["pass-at-k", "missing.csv", "--k", "1", "--out", "o"], "missing.csv"),
    "pass-at-k empty": (["pass-at-k", "E.csv", "--k", "1", "--out", "o"], "E.csv"),
    "pass-at-k dir": (["pass-at-k", "D", "--k", "1", "--out", "o"], "D"),
    "pass-at-k out is a file": (["pass-at-k", "counts.csv", "--k", "1", "--out", "F.txt"], "F.txt"),
    "correlate missing": (["correlate", "missing_dir", "counts.csv", "--out", "o"], "missing_dir"),
    "correlate empty dir": (["correlate", "D", "counts.csv", "--out", "o"], "D"),
    "correlate empty scores": (["correlate", "counts.csv", "E.csv", "--out", "o"], "E.csv"),
    "report missing": (["report", "missing_dir"], "missing_dir"),
    "report empty dir": (["report", "D"], "D"),
    "report file": (["report", "F.txt"], "F.txt"),
    "toy out is a file": (["toy", "--out", "F.txt", "--steps", "5", "--quiet"], "F.txt"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_paths_are_one_line_naming_the_path(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing here may reach for a hub
    (tmp_path / "D").mkdir()
    for empty in ("E.npy", "E.txt", "E.jsonl", "E.csv"):
        (tmp_path / empty).write_text("")
    (tmp_path / "F.txt").write_text("some text\n")
    (tmp_path / "F.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    (tmp_path / "counts.csv").write_text("step,n,c\n0,4,1\n")
    argv, path = CASES[name]
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"fastspec {argv[0]}"), err
    assert path in err[0], err
    assert "Traceback" not in err[0] and os.listdir(tmp_path / "D") == []
