"""Sweeps split across jobs (issue 26): ``--shard I/N`` and ``--shard slurm``, many jobs writing into
one results directory at once (settings and list bound once, checkpoints claimed, failures marked),
``--refine`` with shards, and ``fastspec status``. The jobs are real processes where the point is
that they run at once; the references are one unsharded run of the same checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from tinylm import CORPUS, checkpoints

import fastspec
from fastspec._files import this_host
from fastspec._settings import SettingError
from fastspec.cli import main
from fastspec.models import runs
from fastspec.models.checkpoints import Checkpoint
from fastspec.models.settings import SLURM_VARIABLES, TraceSettings

trace_mod = sys.modules["fastspec.models.trace"]
TEXTS = CORPUS[1::2]
KW = dict(max_length=32, batch_size=8, fit_range=(2, 20), progress=False)
ARGS = ["--max-length", "32", "--batch-size", "8", "--fit-range", "2", "20", "--quiet"]
ENV = dict(os.environ, HF_HUB_OFFLINE="1")
#: What a record holds that says how a run got there, not a result.
TIMINGS = ("seconds", "tokens_per_second")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return checkpoints(tmp_path_factory.mktemp("ckpts"), steps=(0, 2, 4, 6))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


@pytest.fixture(scope="module")
def whole(ckpts, data, tmp_path_factory):
    """One unsharded run of the four checkpoints: the reference."""
    out = tmp_path_factory.mktemp("whole")
    fastspec.trace(ckpts, data, out, **KW)
    return out


def _records(out):
    """Every record without its timings, and every spectrum file's bytes, by file name."""
    got = {}
    for path in sorted((out / "checkpoints").iterdir()):
        if path.suffix == ".json":
            got[path.name] = {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMINGS}
        elif path.suffix == ".npz":
            got[path.name] = path.read_bytes()
    return got


def _table(out):
    return pd.read_csv(out / "trace.csv")


def _leftovers(out):
    """Claims, failed markers and temporary files left in the record dir."""
    return [n for n in os.listdir(out / "checkpoints") if n.endswith((".claim", ".failed")) or "fastspec-tmp" in n]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- the shard setting ------------------------------------------------------------------------

def test_the_shard_setting_and_its_errors():
    assert TraceSettings(shard="1/4").shard == (1, 4) and TraceSettings(shard=(0, 1)).shard == (0, 1)
    assert TraceSettings().shard is None
    for bad in ("4/4", "-1/2", "1of2", (1,), (True, 2), 3):
        with pytest.raises(SettingError, match=r"shard must be 'I/N'"):
            TraceSettings(shard=bad)
    assert "shard" not in trace_mod.RESULT_SETTINGS  # shards of one sweep share one directory


@pytest.mark.parametrize("env, want", [
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, (3, 4)),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}, (1, 4)),  # no COUNT
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
      "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, (2, 4)),  # --array=1-7:2
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1"}, (0, 1)),  # MIN unset: 0
])
def test_shard_slurm_reads_the_array_variables(monkeypatch, env, want):
    for key in SLURM_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert TraceSettings(shard="slurm").shard == want


def test_shard_slurm_names_what_is_missing(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key in SLURM_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SettingError, match=r"shard='slurm' reads the Slurm job array's task, and SLURM_ARRAY_TASK_ID "
                                           r"is not set"):
        TraceSettings(shard="slurm")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    with pytest.raises(SettingError, match=r"SLURM_ARRAY_TASK_COUNT is not set"):
        TraceSettings(shard="slurm")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "9")  # --array=1,4,9: not a range
    with pytest.raises(SettingError, match=r"not an evenly spaced range"):
        TraceSettings(shard="slurm")
    # on the command line: the flag is named, before any model loads
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert main(["trace", "nowhere", "--data", "nothing.txt", "--out", "never", "--shard", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "--shard slurm reads the Slurm job array's task, and SLURM_ARRAY_TASK_ID is not set" in err
    assert not os.path.exists("never")


def test_without_shard_no_slurm_variable_is_read(ckpts, whole, data, tmp_path, monkeypatch):
    """Inside an array task, a run without --shard is one whole sweep; with --shard slurm the
    same environment gives task 1 of 2: checkpoints 1 and 3."""
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    frame = fastspec.trace(ckpts[:2], data, tmp_path / "all", **KW)
    assert frame["step"].drop_duplicates().tolist() == [0, 2]  # not only step2 (task 1 of 2)
    half = fastspec.trace(ckpts, data, tmp_path / "half", shard="slurm", **KW)
    assert half["step"].drop_duplicates().tolist() == [2, 6]
    want = _records(whole)
    assert _records(tmp_path / "half") == {k: v for k, v in want.items() if "step2" in k or "step6" in k}
    assert json.loads((tmp_path / "half" / "config.json").read_text()).get("shard", "absent") == "absent"
    # more tasks than checkpoints: a task with none has nothing to do, and says so by an empty frame
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "8")
    idle = fastspec.trace(ckpts, data, tmp_path / "idle", shard="slurm", **KW)
    assert idle.empty and list(idle.columns) == list(frame.columns)


# -- many jobs, one directory -----------------------------------------------------------------

def test_two_shard_jobs_at_once_equal_one_unsharded_run(ckpts, whole, data, tmp_path):
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "fastspec", "trace", *ckpts, "--data", str(data), "--out", str(out), *ARGS]
    jobs = [subprocess.Popen([*cmd, "--shard", f"{i}/2"], env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for job in jobs:
        stdout, stderr = job.communicate(timeout=600)
        assert job.returncode == 0, stderr
    assert _records(out) == _records(whole)
    pd.testing.assert_frame_equal(_table(out), _table(whole))
    pd.testing.assert_frame_equal(fastspec.load_trace(out), fastspec.load_trace(whole))
    assert _leftovers(out) == []
    plan = json.loads((out / "checkpoints" / runs.PLAN_FILE).read_text())
    assert [e["checkpoint"] for e in plan["checkpoints"]] == [Checkpoint(c).label for c in ckpts]
    state = runs.status(out)
    assert state.complete and state.count("done") == 4


RACER = """
import os, sys, time
from fastspec.cli import main  # imported before the start, so both start at once
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
sys.exit(main(sys.argv[2:]))
"""


def test_two_jobs_racing_on_one_checkpoint_leave_one_record(ckpts, whole, data, tmp_path):
    """Two processes of the same shard start on one checkpoint at the same instant: one claims
    and traces it, the other leaves it to that one (and says so); one record, equal to the
    unsharded run's, no claim left."""
    out, go = tmp_path / "raced", tmp_path / "go"
    argv = ["trace", ckpts[1], "--data", str(data), "--out", str(out), *ARGS, "--shard", "0/1"]
    jobs = [subprocess.Popen([sys.executable, "-c", RACER, str(go), *argv], env=ENV, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(0.5)
    go.write_text("")
    errs = []
    for job in jobs:
        _, stderr = job.communicate(timeout=600)
        assert job.returncode == 0, stderr
        errs.append(stderr)
    left = [e for e in errs if "in progress in another job" in e or "done by another job meanwhile" in e]
    assert len(left) == 1, errs
    name = Checkpoint(ckpts[1]).slug
    assert sorted(os.listdir(out / "checkpoints")) == sorted([name + ".json", name + ".npz", runs.PLAN_FILE])
    want = {k: v for k, v in _records(whole).items() if k.startswith(name)}
    got = _records(out)
    assert got[name + ".json"].pop("index") == 0 and want[name + ".json"].pop("index") == 1  # its place in the list
    assert got == want


STUCK = """
import sys, time
from fastspec.cli import main
trace_mod = sys.modules["fastspec.models.trace"]  # the module, not the function fastspec.models exports
marker = sys.argv[1]

def stuck(self, *args, **kwargs):  # claimed, then working for ever
    open(marker, "w").close()
    time.sleep(600)

trace_mod._Checkpoints.measure = stuck
sys.exit(main(sys.argv[2:]))
"""


def test_a_job_ended_by_sigterm_releases_its_claim(ckpts, data, tmp_path):
    """What Slurm sends at a job's time limit: the claim goes with the job (not left for other
    jobs to wait out for CLAIM_STALE seconds), and no failed marker is written."""
    out, marker = tmp_path / "out", tmp_path / "working"
    argv = ["trace", ckpts[0], "--data", str(data), "--out", str(out), *ARGS, "--shard", "0/1"]
    job = subprocess.Popen([sys.executable, "-c", STUCK, str(marker), *argv], env=ENV, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.05)
    assert any(n.endswith(".claim") for n in os.listdir(out / "checkpoints"))
    job.terminate()
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 143, stderr
    assert _leftovers(out) == []
    assert runs.status(out).count("pending") == 1


def test_a_torchrun_job_is_one_shard_its_rank_0_claiming_for_every_rank(ckpts, whole, data, tmp_path):
    """Shard 0/2 as a torchrun job of two processes (gloo), shard 1/2 as one process, into one
    directory; step4 (shard 0's) is held by another job: every rank of the torchrun job leaves
    it (a rank that went on alone would wait for the others in the all-reduce, for ever). The
    torchrun job's numbers agree with one process's to float32 rounding (as in test_cli_trace's
    torchrun test), the single process's exactly."""
    import numpy as np

    out = tmp_path / "ranks"
    fastspec.trace(ckpts, data, out, shard=(1, 2), **KW)  # step2, step6; binds the list
    held = out / "checkpoints" / (Checkpoint(ckpts[2]).slug + ".claim")
    held.write_text(json.dumps({"host": this_host(), "pid": os.getppid(), "since": "then", "token": "t"}))
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "fastspec", "trace", *ckpts, "--data", str(data), "--out", str(out), *ARGS,
                        "--shard", "0/2"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**ENV, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-6000:]
    assert p.stderr.count("in progress in another job") == 1  # said once, by rank 0
    got, want = _records(out), _records(whole)
    step0, step4 = (Checkpoint(c).slug for c in (ckpts[0], ckpts[2]))
    assert step4 + ".json" not in got and held.exists()
    for name in want:
        if name.startswith(step4):
            continue
        if not name.startswith(step0):
            assert got[name] == want[name], name
        elif name.endswith(".json"):
            a, b = got[name]["layers"], want[name]["layers"]
            np.testing.assert_allclose([x["rankme"] for x in a], [x["rankme"] for x in b], rtol=3e-5)
    state = runs.status(out)
    assert [c.state for c in state.checkpoints] == ["done", "done", "running", "done"]


def test_a_checkpoint_another_job_holds_is_left_to_it_and_a_dead_jobs_is_taken_over(ckpts, whole, data, tmp_path):
    out = tmp_path / "held"
    fastspec.trace(ckpts, data, out, shard=(0, 4), **KW)  # step0
    held, dead = (out / "checkpoints" / (Checkpoint(c).slug + ".claim") for c in ckpts[1:3])
    # a live job of this machine (this test's parent process) holds one; a job that died holds the other
    held.write_text(json.dumps({"host": this_host(), "pid": os.getppid(), "since": "then", "token": "x"}))
    dead.write_text(json.dumps({"host": this_host(), "pid": _dead_pid(), "since": "then", "token": "y"}))
    frame = fastspec.trace(ckpts, data, out, **KW)
    assert list(frame.attrs["left_to_other_jobs"]) == [Checkpoint(ckpts[1]).label]
    assert "in progress in another job" in frame.attrs["left_to_other_jobs"][Checkpoint(ckpts[1]).label]
    assert frame["step"].drop_duplicates().tolist() == [0, 4, 6] and held.exists() and not dead.exists()
    # a claim of another machine is alive while refreshed, a dead job's once it is not
    other = {"host": "elsewhere", "pid": 1, "since": "then", "token": "z"}
    held.write_text(json.dumps(other))
    old = time.time() - runs.CLAIM_STALE - 5
    os.utime(held, (old, old))
    fastspec.trace(ckpts, data, out, **KW)
    assert _records(out) == _records(whole) and _leftovers(out) == []


def test_a_failure_leaves_a_marker_with_the_error_and_a_later_run_retries_it(ckpts, whole, data, tmp_path,
                                                                             monkeypatch):
    real = trace_mod.extract

    def broken(model, *args, **kwargs):
        if model.config.name_or_path.endswith("step4"):
            raise RuntimeError("CUDA out of memory (made up)")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(trace_mod, "extract", broken)
    out = tmp_path / "failing"
    with pytest.raises(RuntimeError, match="made up"):
        fastspec.trace(ckpts, data, out, shard=(0, 2), **KW)
    marker = out / "checkpoints" / (Checkpoint(ckpts[2]).slug + ".failed")
    failed = json.loads(marker.read_text())
    assert failed["error"] == "RuntimeError: CUDA out of memory (made up)" and failed["pid"] == os.getpid()
    state = runs.status(out)
    assert [c.state for c in state.checkpoints] == ["done", "pending", "failed", "pending"]
    assert state.checkpoints[2].error == failed["error"] and not state.complete
    assert not list((out / "checkpoints").glob("*.claim"))
    monkeypatch.setattr(trace_mod, "extract", real)
    fastspec.trace(ckpts, data, out, shard=(0, 2), **KW)
    fastspec.trace(ckpts, data, out, shard=(1, 2), **KW)
    assert not marker.exists() and _records(out) == _records(whole) and runs.status(out).complete


def test_a_shard_with_other_settings_or_another_list_is_refused(ckpts, data, tmp_path):
    out = tmp_path / "bound"
    fastspec.trace(ckpts, data, out, shard=(0, 2), **KW)
    with pytest.raises(ValueError, match=r"holds a trace made with other settings \(batch_size: 8 there, 4 now\)"):
        fastspec.trace(ckpts, data, out, shard=(1, 2), **{**KW, "batch_size": 4})
    with pytest.raises(ValueError, match=r"is being swept over another list of checkpoints \(2 of its 4 checkpoints "
                                         r"are not done\); every shard of a sweep must resolve the same list"):
        fastspec.trace(ckpts[:3], data, out, shard=(1, 2), **KW)
    # before any record: a job that bound other settings and is running (here: a live process) wins
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    config = {"batch_size": 4, "bound_by": {"host": this_host(), "pid": os.getppid(), "since": "then"}}
    (fresh / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"is bound to a trace with other settings \(.*batch_size: 4 there, 8 now.*\), "
                                         r"and the job that bound it \(.* pid \d+, since then\) is running"):
        fastspec.trace(ckpts[:1], data, fresh, shard=(0, 2), **KW)
    # one that died bound nothing that counts: this run binds its own
    config["bound_by"]["pid"] = _dead_pid()
    (fresh / "config.json").write_text(json.dumps(config))
    fastspec.trace(ckpts[:1], data, fresh, shard=(0, 2), **KW)
    assert json.loads((fresh / "config.json").read_text())["batch_size"] == 8


def test_refine_with_shards_waits_for_every_checkpoint_given(ckpts, data, tmp_path):
    """Given step0, step4, step6 (step2 a candidate): shard 0/2 traces step0 and step6 and does
    not refine, saying why; shard 1/2 traces step4, finds them all done and refines with step2,
    the one candidate; a job while another holds the refinement claim says so."""
    given, out = [ckpts[0], ckpts[2], ckpts[3]], tmp_path / "refined"
    first = fastspec.trace(given, data, out, shard=(0, 2), refine=1, candidates=ckpts, **KW)
    assert first["step"].drop_duplicates().tolist() == [0, 6]
    assert "--refine waits for every checkpoint given to be done, and 1 of 3 are not" in first.attrs["not_refined"]
    assert "run this command again" in first.attrs["not_refined"]
    claim = out / "checkpoints" / runs.REFINE_CLAIM
    claim.write_text(json.dumps({"host": this_host(), "pid": os.getppid(), "since": "then", "token": "r"}))
    held = fastspec.trace(given, data, out, shard=(1, 2), refine=1, candidates=ckpts, **KW)
    assert "another job is refining this directory" in held.attrs["not_refined"]
    assert held["step"].drop_duplicates().tolist() == [0, 4, 6]
    claim.unlink()
    last = fastspec.trace(given, data, out, shard=(1, 2), refine=1, candidates=ckpts, **KW)
    assert last.attrs["not_refined"] is None
    assert last.drop_duplicates("checkpoint").set_index("step")["chosen_by"].to_dict() == {
        0: "given", 2: "refine", 4: "given", 6: "given"}
    assert _leftovers(out) == [] and not claim.exists() and runs.status(out).complete


# -- status and reading a directory being written ---------------------------------------------

def test_status_per_checkpoint_with_exit_codes(ckpts, data, tmp_path, capsys):
    out = tmp_path / "status"
    fastspec.trace(ckpts, data, out, shard=(0, 2), **KW)  # step0, step4
    slugs = [Checkpoint(c).slug for c in ckpts]
    running = {"host": this_host(), "pid": os.getppid(), "since": "2026-12-03T10:00:00+00:00", "token": "a",
               "checkpoint": Checkpoint(ckpts[1]).label}
    (out / "checkpoints" / (slugs[1] + ".claim")).write_text(json.dumps(running))
    stale = {**running, "pid": _dead_pid(), "token": "b"}
    (out / "checkpoints" / (slugs[3] + ".claim")).write_text(json.dumps(stale))
    state = runs.status(out)
    assert [(c.state, c.pid) for c in state.checkpoints] == [
        ("done", None), ("running", os.getppid()), ("done", None), ("stale", stale["pid"])]
    assert "is gone" in state.checkpoints[3].note and state.checkpoints[1].since == running["since"]
    recs = [json.loads(p.read_text()) for p in sorted((out / "checkpoints").glob("*.json"))]
    seconds = [sum(r["seconds"].values()) for r in recs]
    assert state.tokens_per_second == pytest.approx(sum(r["n_tokens"] for r in recs) / sum(seconds), rel=1e-12)
    # two to go, one job holding a claim: two mean checkpoints' time
    assert state.seconds_left == pytest.approx(2 * sum(seconds) / 2, rel=1e-12)
    assert main(["status", str(out)]) == 3
    text = capsys.readouterr().out
    assert f"{out}: 2 of 4 checkpoints done, 1 running, 1 stale" in text
    assert f"running  {this_host()} pid {os.getppid()} since 2026-12-03T10:00:00+00:00" in text
    assert "tokens/s per job; time left: about" in text
    fastspec.trace(ckpts, data, out, shard=(1, 2), **KW)  # takes over the stale one; the live one stays its
    (out / "checkpoints" / (slugs[1] + ".claim")).unlink()
    fastspec.trace(ckpts, data, out, shard=(1, 2), **KW)
    assert main(["status", str(out)]) == 0
    assert "4 of 4 checkpoints done" in capsys.readouterr().out
    (tmp_path / "plain").mkdir()
    assert main(["status", str(tmp_path / "plain")]) == 2
    assert "not a results directory" in capsys.readouterr().err


def test_status_of_a_directory_from_before_the_plan(whole, tmp_path):
    """A results directory written before the sweep's list was recorded: its records are done,
    nothing is known to be pending, and it still resumes (old configs have no bound_by)."""
    old = tmp_path / "old"
    os.makedirs(old / "checkpoints")
    for path in (whole / "checkpoints").iterdir():
        if path.suffix in (".json", ".npz"):
            (old / "checkpoints" / path.name).write_bytes(path.read_bytes())
    config = json.loads((whole / "config.json").read_text())
    config.pop("bound_by")
    (old / "config.json").write_text(json.dumps(config))
    state = runs.status(old)
    assert not state.planned and state.complete and state.count("done") == 4
    assert "(the sweep's list is not recorded" in state.format()


def test_load_trace_of_a_directory_being_written_returns_what_is_done(whole, tmp_path):
    out = tmp_path / "writing"
    os.makedirs(out / "checkpoints")
    names = sorted(p.name for p in (whole / "checkpoints").iterdir() if p.suffix == ".json")
    for name in names[:2]:
        for suffix in (".json", ".npz"):
            (out / "checkpoints" / (name[:-5] + suffix)).write_bytes((whole / "checkpoints" / (name[:-5] + suffix))
                                                                      .read_bytes())
    # a third in a shard's hands: its claim, its arrays half-written, its record not yet renamed into place
    third = names[2][:-5]
    (out / "checkpoints" / (third + ".claim")).write_text(json.dumps({"host": "elsewhere", "pid": 7, "token": "c"}))
    (out / "checkpoints" / f".{third}.npz.fastspec-tmp-elsewhere-7").write_bytes(b"PK\x03")
    (out / "checkpoints" / f".{third}.json.fastspec-tmp-elsewhere-7").write_text('{"checkpoint": ')
    frame = fastspec.load_trace(out, eigenvalues=True)
    want = fastspec.load_trace(whole, eigenvalues=True)
    want = want[want["checkpoint"].isin(frame["checkpoint"].unique())].reset_index(drop=True)
    assert frame["checkpoint"].nunique() == 2
    pd.testing.assert_frame_equal(frame.drop(columns="eigenvalues"), want.drop(columns="eigenvalues"))


# -- the parts ---------------------------------------------------------------------------------

def test_a_claim_is_exclusive_refreshed_and_released(tmp_path):
    path = str(tmp_path / "x.claim")
    mine = runs.Claim.take(path, checkpoint="x")
    info = json.loads((tmp_path / "x.claim").read_text())
    assert isinstance(mine, runs.Claim) and info["pid"] == os.getpid() and info["checkpoint"] == "x"
    os.utime(path, (0, 0))
    mine.refresh()
    assert os.stat(path).st_mtime > time.time() - 60 and mine.mine()
    # another job (a live process of this machine) took it over: this one finds it held
    runs._HELD.discard(path)
    (tmp_path / "x.claim").write_text(json.dumps(dict(info, pid=os.getppid(), token="another job's")))
    held = runs.Claim.take(path, checkpoint="x")
    assert isinstance(held, dict) and held["pid"] == os.getppid()
    mine.release()  # no longer its claim: left alone
    assert os.path.exists(path) and not mine.mine()
    mine.refresh()
    assert mine.lost


def test_taking_over_a_dead_jobs_claim_never_takes_a_fresh_one(tmp_path, monkeypatch):
    """Two jobs find the same dead job's claim: the first moves it aside and claims afresh; the
    second's rename then moves that fresh claim, sees it is not the one it judged stale, and
    puts it back: one holder."""
    path = tmp_path / "y.claim"
    path.write_text(json.dumps({"host": this_host(), "pid": _dead_pid(), "since": "then", "token": "dead"}))
    fresh = {"host": this_host(), "pid": os.getppid(), "since": "now", "token": "first job's"}
    real = os.replace

    def first_job_wins_meanwhile(src, dst):
        if src == str(path) and json.loads(path.read_text())["token"] == "dead":
            path.write_text(json.dumps(fresh))  # the first job took it over between our read and our rename
        return real(src, dst)

    monkeypatch.setattr(os, "replace", first_job_wins_meanwhile)
    held = runs.Claim.take(str(path), checkpoint="y")
    assert isinstance(held, dict) and held["token"] == "first job's"
    assert json.loads(path.read_text()) == fresh and os.listdir(tmp_path) == ["y.claim"]
