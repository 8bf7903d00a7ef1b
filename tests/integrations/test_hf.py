"""fastspec.integrations.hf.GeometryCallback inside a real transformers.Trainer (tests/hf_worker.py),
in one process and under torchrun: its trace equals fastspec.trace run afterwards on the
checkpoints the Trainer saved at the same steps; and the online phase rule, the collapse
warning and the callback's errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hf_worker import FIT_RANGE, PROBE
from tinylm import save_model

import fastspec
from fastspec.cli import main
from fastspec.integrations._online import PHASE_CODES, OnlineGeometry, RankCollapseWarning
from fastspec.integrations.hf import GeometryCallback

WORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hf_worker.py")
COLS = ["step", "layer", "rankme", "rankme_sv", "alpha"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(str(tmp_path_factory.mktemp("hf") / "model"), "gpt_neox", layers=2, hidden=32)


def train(model_dir, out, geometry, *args, torchrun=False):
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] if torchrun
           else [sys.executable]) + [WORKER, model_dir, str(out), "--geometry", str(geometry), *map(str, args)]
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(os.path.join(out, "logged.json")) as fh:
        return json.load(fh), run


def traced_afterwards(out, tmp_path, steps):
    return fastspec.trace([os.path.join(out, f"checkpoint-{s}") for s in steps], PROBE, tmp_path / "after",
                          batch_size=8, fit_range=FIT_RANGE, progress=False)


def assert_same(callback_dir, after):
    got = fastspec.load_trace(callback_dir)
    assert got["step"].tolist() == after["step"].tolist() and got["layer"].tolist() == after["layer"].tolist()
    # Same weights and probe batches; the float32 forward passes differ only in summation order (thread
    # counts differ between the processes): 1e-7 relative here.
    np.testing.assert_allclose(got[COLS].to_numpy(float), after[COLS].to_numpy(float), rtol=1e-5, atol=1e-9)


def test_trainer_run_traces_what_fastspec_trace_finds_in_its_checkpoints(model_dir, tmp_path):
    logged, _ = train(model_dir, tmp_path / "out", tmp_path / "geo", "--steps", 20, "--save-steps", 10)
    after = traced_afterwards(tmp_path / "out", tmp_path, (0, 10, 20))
    assert_same(tmp_path / "geo", after)
    got = fastspec.load_trace(tmp_path / "geo")
    assert got.drop_duplicates("step")["chosen_by"].tolist() == ["callback:start", "callback:save", "callback:save"]
    # What went through Trainer.log (log_history) is what was written, layer by layer.
    assert [h["step"] for h in logged["geometry"]] == [0, 10, 20]
    for h in logged["geometry"]:
        for _, row in got[got["step"] == h["step"]].iterrows():
            for metric in ("rankme", "rankme_sv", "alpha"):
                np.testing.assert_allclose(h[f"geometry/{metric}/layer_{row['layer']}"], row[metric], rtol=1e-12)
    # The phases logged are fastspec.phases' on the trajectory so far (the Trainer's warmup is 3 steps).
    for layer in got["layer"].unique():
        for h in logged["geometry"]:
            so_far = got[(got["layer"] == layer) & (got["step"] <= h["step"])]
            want = fastspec.phases(so_far, layer=int(layer), warmup_steps=3)["phase"].iloc[-1]
            assert h[f"geometry/phase/layer_{layer}"] == PHASE_CODES[want]
    # on_phase_change: every layer's first phase (old None), then each change, in step order.
    firsts = [c for c in logged["phase_changes"] if c[2] is None]
    assert sorted(c[1] for c in firsts) == sorted(got["layer"].unique()) and all(c[0] == 0 for c in firsts)
    # The directory is a trace: fastspec plot reads it.
    assert main(["plot", str(tmp_path / "geo")]) == 0
    assert (tmp_path / "geo" / "phases.csv").exists()


def test_torchrun_two_processes_trace_what_one_process_finds_in_their_checkpoints(model_dir, tmp_path):
    train(model_dir, tmp_path / "out", tmp_path / "geo", "--steps", 10, "--save-steps", 5, torchrun=True)
    assert json.loads((tmp_path / "geo" / "config.json").read_text())["world_size"] == 2
    assert_same(tmp_path / "geo", traced_afterwards(tmp_path / "out", tmp_path, (0, 5, 10)))


def test_every_n_steps_measures_on_schedule_and_leaves_the_trainers_own_logs_in_place(model_dir, tmp_path):
    logged, _ = train(model_dir, tmp_path / "out", tmp_path / "geo", "--steps", 10, "--every", 5)
    assert [h["step"] for h in logged["geometry"]] == [0, 5, 10]
    assert [h["step"] for h in logged["losses"]] == [5, 10]  # logging_steps=5: the same steps, not displaced


def test_a_resumed_training_run_continues_the_trace_and_replaces_what_it_measures_again(model_dir, tmp_path):
    out, geo = tmp_path / "out", tmp_path / "geo"
    train(model_dir, out, geo, "--steps", 20, "--save-steps", 10)
    kept = {p: (geo / "checkpoints" / p).read_bytes() for p in os.listdir(geo / "checkpoints") if not p.startswith("step20-")}
    shutil.rmtree(out / "checkpoint-20")  # as if killed after step 20's measurement, before its save
    _, run = train(model_dir, out, geo, "--steps", 20, "--save-steps", 10, "--resume")
    assert "training resumed at step 10" in run.stdout + run.stderr
    got = fastspec.load_trace(geo)
    assert got["step"].drop_duplicates().tolist() == [0, 10, 20]
    for name, data in kept.items():  # up to the resume point: kept as it was
        assert (geo / "checkpoints" / name).read_bytes() == data
    assert_same(geo, traced_afterwards(out, tmp_path, (0, 10, 20)))


def test_online_phases_are_the_phase_rule_on_the_points_so_far_and_collapses_warn():
    changes = []
    geo = OnlineGeometry(["a probe"], tol=0.1, collapse=0.5, on_phase_change=lambda *c: changes.append(c))
    rankme = [10.0, 2.0, 4.0, 8.0, 9.5, 9.0, 6.0, 4.5, 7.0, 2.0]
    alpha = [0.5, 2.0, 1.5, 1.0, 0.8, 0.85, 1.1, 1.3, 1.0, 1.9]
    for k, (r, a) in enumerate(zip(rankme, alpha)):
        point = {"step": 10 * k, "layer": 3, "rankme": r, "rankme_sv": r, "alpha": a}
        if k in (1, 7, 9):  # 10 → 2 (the warmup collapse); 9.5 → 4.5 (a later one: ≤ half the highest since
            # the last warning); 7 → 2. Any other warning fails the test (warnings are errors here).
            with pytest.warns(RankCollapseWarning, match=f"layer 3's RankMe collapsed to {r:.2f} at step {10 * k}"):
                phase = geo.record(point)
        else:
            phase = geo.record(point)
        frame = pd.DataFrame({"checkpoint": [f"s{i}" for i in range(k + 1)], "step": [10 * i for i in range(k + 1)],
                              "layer": 3, "rankme": rankme[:k + 1], "alpha": alpha[:k + 1]})
        assert phase == fastspec.phases(frame, layer=3, tol=0.1)["phase"].iloc[-1]
    # One point is no trend yet; then the collapse, the rise to 9.5, the fall (> tol from it), and so on.
    assert changes == [(0, 3, None, "flat"), (10, 3, "flat", "warmup"), (20, 3, "warmup", "entropy-seeking"),
                       (60, 3, "entropy-seeking", "compression-seeking"), (80, 3, "compression-seeking", "entropy-seeking"),
                       (90, 3, "entropy-seeking", "compression-seeking")]


def test_arguments_are_checked_before_training():
    with pytest.raises(ValueError, match="every_n_steps"):
        GeometryCallback(PROBE, every_n_steps=0)
    with pytest.raises(ValueError, match="no probe texts"):
        GeometryCallback([])
    with pytest.raises(TypeError, match="sequence of probe strings"):
        GeometryCallback("one text")
    with pytest.raises(ValueError, match="collapse"):
        GeometryCallback(PROBE, collapse=1.5)
    with pytest.raises(ValueError, match="fit_range"):
        GeometryCallback(PROBE, fit_range=(5, 2))


def test_a_trainer_the_callback_cannot_serve_is_refused_before_training(model_dir, tmp_path):
    from hf_worker import make_trainer

    trainer, _ = make_trainer(model_dir, str(tmp_path / "out"), steps=1, save_steps=None)
    cb = GeometryCallback(PROBE, fit_range=FIT_RANGE).attach(trainer)
    with pytest.raises(ValueError, match="neither .* pass every_n_steps=N"):  # no evaluation, no save
        trainer.train()
    cb.every_n_steps = 1
    trainer.processing_class = trainer.callback_handler.processing_class = None
    with pytest.raises(ValueError, match="needs a tokenizer"):
        trainer.train()
    assert trainer.state.global_step == 0  # refused before the first step


def test_a_probe_text_that_tokenises_to_nothing_is_refused_before_training_without_at_start(model_dir, tmp_path):
    """Issue 24 item 12: with at_start=False an empty probe text passed the start checks and
    stopped training at its first measurement."""
    from hf_worker import make_trainer

    trainer, _ = make_trainer(model_dir, str(tmp_path / "out"), steps=2, save_steps=None)
    GeometryCallback([*PROBE[:4], ""], every_n_steps=1, at_start=False, fit_range=FIT_RANGE).attach(trainer)
    with pytest.raises(ValueError, match=r"probe texts: 1 texts tokenise to nothing \(first: texts\[4\] = ''\)"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_nan_weights_say_which_step_diverged_with_advice_that_works(model_dir):
    """Issue 24 item 13: NaN weights ended training with advice to pass nan_policy='omit', which
    the callbacks do not take."""
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(model_dir)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    geometry = OnlineGeometry(PROBE, layers=[1], max_length=32, fit_range=FIT_RANGE)
    with pytest.raises(ValueError, match=r"at training step 7 \(evaluate\), the model's layer 1: .* non-finite") as err:
        geometry.measure(model, tok, 7, "evaluate")
    assert "training has diverged" in str(err.value) and "nan_policy" not in str(err.value)
