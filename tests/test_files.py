"""fastspec._files: every result is written to a temporary name and renamed into place; a
failed write keeps the previous result, names the path and leaves no temporary file; a
killed run's temporary files are removed by the next run."""

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest
from tinylm import CORPUS, checkpoints

import fastspec
from fastspec import _files

BIN = os.path.dirname(sys.executable)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    _files.write_json(path, {"good": 1})
    with pytest.raises(RuntimeError, match="half-way"), _files.replacing(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write('{"trunc')
        raise RuntimeError("half-way")
    assert json.loads(path.read_text()) == {"good": 1}
    assert os.listdir(tmp_path) == ["m.json"]


def test_an_os_error_names_the_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*file/out.csv"):
        _files.write_text(tmp_path / "file" / "out.csv", "a,b\n")  # its parent is a file


def test_strict_json_has_no_nan_or_infinity(tmp_path):
    text = _files.json_text({"a": float("-inf"), "b": [float("nan"), 1.5], "c": float("inf")})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": None}
    assert "Infinity" not in text and "NaN" not in text


def _limited_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


def test_create_json_lets_the_first_writer_win_with_its_whole_content(tmp_path, monkeypatch):
    """Many writers racing to create one file (the binding of a shared results directory; the
    kernel decides link(2), so threads race as processes do): exactly one creates it, the file
    holds that one's complete content, no temporary is left; without hard links (some
    filesystems refuse link(2)) O_EXCL decides the same way."""
    import errno
    from multiprocessing.pool import ThreadPool

    path = tmp_path / "bound.json"
    with ThreadPool(8) as pool:
        won = pool.starmap(_files.create_json, [(str(path), {"writer": i, "pad": "x" * 100_000}) for i in range(8)])
    assert sum(won) == 1 and json.loads(path.read_text())["writer"] == won.index(True)
    assert os.listdir(tmp_path) == ["bound.json"]

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    other = tmp_path / "nolink.json"
    assert _files.create_json(other, {"a": 1}) and not _files.create_json(other, {"a": 2})
    assert json.loads(other.read_text()) == {"a": 1} and sorted(os.listdir(tmp_path)) == ["bound.json", "nolink.json"]
    with pytest.raises(OSError, match=r"cannot write .*missing/x.json"):
        _files.create_json(tmp_path / "missing" / "x.json", {})


def test_ulimit_f_keeps_the_good_result_of_the_cli(tmp_path):
    """(ulimit -f 1; fastspec spectrum X.npy --out m.json --eigenvalues): exit 2 naming m.json,
    and the previous m.json is intact."""
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((600, 300)).astype("f4"))
    out = tmp_path / "m.json"
    first = subprocess.run([f"{BIN}/fastspec", "spectrum", str(x), "--out", str(out), "--quiet"], capture_output=True,
                           text=True)
    assert first.returncode == 0, first.stderr
    good = out.read_text()
    proc = subprocess.run([f"{BIN}/fastspec", "spectrum", str(x), "--out", str(out), "--eigenvalues", "--quiet"],
                          capture_output=True, text=True, preexec_fn=_limited_file_size)
    assert proc.returncode == 2 and f"cannot write {out}" in proc.stderr, proc.stderr
    assert out.read_text() == good
    assert sorted(os.listdir(tmp_path)) == ["m.json", "x.npy"]


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = _files.temporary_name("x").split(_files.TMP_MARK)[1].rsplit("-", 1)[0]
    stale = tmp_path / f".a.npz{_files.TMP_MARK}{host}-{int(dead.stdout)}"
    live = tmp_path / f".b.npz{_files.TMP_MARK}{host}-{os.getppid()}"
    other_host = tmp_path / f".c.npz{_files.TMP_MARK}elsewhere-{int(dead.stdout)}"
    for p in (stale, live, other_host):
        p.write_text("partial")
    assert _files.remove_stale(tmp_path) == [str(stale)]
    assert not stale.exists() and live.exists() and other_host.exists()


def test_trace_removes_what_a_killed_run_left(tmp_path):
    ckpts = checkpoints(tmp_path / "ckpts")[:1]
    out = tmp_path / "run"
    fastspec.trace(ckpts, CORPUS[:20], out, max_length=32, batch_size=8, fit_range=(2, 10), progress=False)
    leftover = out / "checkpoints" / f".x.npz{_files.TMP_MARK}{_files._HOST}-999999999"
    leftover.write_bytes(b"PK\x03")
    fastspec.trace(ckpts, CORPUS[:20], out, max_length=32, batch_size=8, fit_range=(2, 10), progress=False)
    assert not leftover.exists()


def test_a_failed_index_build_leaves_nothing_and_a_failed_rebuild_keeps_the_old_index(tmp_path):
    from fastspec import InfGramIndex

    with pytest.raises(ValueError, match=r"token id 9 is outside \[0, 5\)"):
        InfGramIndex.build([np.array([1, 2, 3]), np.array([1, 9])], tmp_path / "new", vocab_size=5, progress=False)
    assert os.listdir(tmp_path) == []
    InfGramIndex.build([np.array([1, 2, 1, 2])], tmp_path / "idx", vocab_size=5, progress=False)
    with pytest.raises(ValueError):
        InfGramIndex.build([np.array([1, 2]), np.array([7])], tmp_path / "idx", vocab_size=5, progress=False,
                           overwrite=True)
    assert InfGramIndex(tmp_path / "idx").count([1, 2]) == 2
    assert os.listdir(tmp_path) == ["idx"]
    assert InfGramIndex.build([np.array([3, 3])], tmp_path / "idx", vocab_size=5, progress=False,
                              overwrite=True).count([3]) == 2
