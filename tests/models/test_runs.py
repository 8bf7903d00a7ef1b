"""fastspec.models.runs: the one results directory and checkpoint loop under trace, the training
callbacks and memorization_trace (their own tests run it end to end; these pin its parts)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from fastspec import CovarianceAccumulator
from fastspec.models.checkpoints import Checkpoint
from fastspec.models.runs import PartialState, ResultsDir, Sweep, check_distinct


def _dir(path, **config):
    return ResultsDir(path, {"a": 1, "b": "x", **config}, ("a", "b"), what="a test run")


def test_settings_bind_once_a_record_exists(tmp_path):
    first = _dir(tmp_path)
    assert first.open() == {}
    # no record yet: another setting is still welcome, and its config replaces the first
    assert _dir(tmp_path, a=2).open() == {}
    assert json.loads((tmp_path / "config.json").read_text())["a"] == 2
    _dir(tmp_path, a=2).write(Checkpoint("step3"), {"value": 1.5})
    with pytest.raises(ValueError, match=r"holds a test run made with other settings \(a: 2 there, 3 now\)"):
        _dir(tmp_path, a=3).open()
    done = _dir(tmp_path, a=2, c="operational").open()  # an unbound key may differ
    assert list(done) == [Checkpoint("step3").identity] and done[Checkpoint("step3").identity]["value"] == 1.5


def test_records_are_written_last_and_later_steps_can_be_dropped(tmp_path):
    results = _dir(tmp_path)
    results.open()
    for step in (1, 2, 3):
        results.write(Checkpoint(f"step{step}"), {"step_seen": step}, {"v": torch.ones(2).numpy()})
    assert len(results.records()) == 3
    assert results.drop_after(1) == [Checkpoint("step2").slug, Checkpoint("step3").slug]
    assert [r["step"] for r in results.records()] == [1]
    assert sorted(os.listdir(results.record_dir)) == sorted([Checkpoint("step1").slug + ".json",
                                                             Checkpoint("step1").slug + ".npz"])


def test_an_unreadable_record_is_named(tmp_path):
    results = _dir(tmp_path)
    results.open()
    (tmp_path / "checkpoints" / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad.json: unreadable checkpoint result"):
        results.records()


def test_a_partial_state_resumes_only_with_the_same_settings(tmp_path):
    results = _dir(tmp_path)
    results.open()
    ckpt = Checkpoint("step7")
    acc = CovarianceAccumulator(3, precision="float64").update(torch.randn(50, 3, dtype=torch.float64))
    saver = PartialState(results, ckpt, 2)
    saver.save(1, {0: acc})  # not yet time
    assert not os.path.exists(saver.path)
    saver.save(2, {0: acc})

    def make(state):
        new = CovarianceAccumulator(3, precision="float64")
        new.load_state_dict(state)
        return new

    accs, batch = PartialState(results, ckpt, 2).load(make, progress=False)
    assert batch == 2 and torch.equal(accs[0].covariance(), acc.covariance())
    other = PartialState(_dir(tmp_path, a=5), ckpt, 2)  # made under other settings: discarded
    assert other.load(make, progress=False) == (None, 0) and not os.path.exists(saver.path)


def test_the_sweep_skips_what_is_done_and_refuses_a_listed_twice(tmp_path):
    (tmp_path / "ck" / "step1").mkdir(parents=True)
    (tmp_path / "ck" / "step2").mkdir()
    ckpts = [Checkpoint(str(tmp_path / "ck" / f"step{k}")) for k in (1, 2)]
    with pytest.raises(ValueError, match=r"listed twice \(as .*step1 and .*step1/\)"):
        check_distinct([ckpts[0], Checkpoint(ckpts[0].source + "/")])
    seen = []
    results = _dir(tmp_path / "out")
    with Sweep(results, progress=False) as sweep:
        sweep.run(sweep.pending(ckpts[:1]), lambda i, c, fetched, waited: seen.append(c) or results.write(c, {}))
    with Sweep(_dir(tmp_path / "out"), progress=False) as sweep:
        todo = sweep.pending([Checkpoint(ckpts[0].source + "/"), ckpts[1]])
    assert seen == ckpts[:1] and [c for _, c in todo] == ckpts[1:]
