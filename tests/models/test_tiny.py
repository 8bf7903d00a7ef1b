"""fastspec.models.tiny: the learning-rate schedule and what a training run records and reuses."""

import json
import math
import os

import pytest
import torch
from tinylm import CORPUS
from transformers import AutoModelForCausalLM, GPTNeoXForCausalLM

from fastspec.models.data import texts_digest
from fastspec.models.tiny import TinyLMConfig, lr_at, train_checkpoints


@pytest.mark.parametrize("final_lr", [0.1, 0.0])
def test_lr_warms_up_linearly_then_follows_a_cosine_to_final_lr(final_lr):
    cfg = TinyLMConfig(lr=2e-3, warmup=10, steps=110, final_lr=final_lr)
    assert lr_at(0, cfg) == pytest.approx(2e-4) and lr_at(9, cfg) == pytest.approx(2e-3)
    assert lr_at(10, cfg) == pytest.approx(2e-3)  # the cosine's start: its peak
    assert lr_at(60, cfg) == pytest.approx(2e-3 * (final_lr + 1) / 2)  # half-way: cos(π/2) = 0
    assert lr_at(35, cfg) == pytest.approx(2e-3 * (final_lr + (1 - final_lr) * (1 + math.cos(math.pi / 4)) / 2))
    assert lr_at(110, cfg) == pytest.approx(2e-3 * final_lr, abs=1e-15)


def test_a_run_records_its_texts_and_retrains_on_others(tmp_path):
    cfg = TinyLMConfig(vocab_size=300, hidden=16, layers=1, heads=2, context=32, seq_len=16, batch_size=4, steps=2,
                       warmup=1, save_steps=(0, 2))
    threads = torch.get_num_threads()
    dirs = train_checkpoints(CORPUS, tmp_path, cfg, progress=False, threads=1)
    assert torch.get_num_threads() == threads  # restored
    done = json.loads((tmp_path / "training.json").read_text())
    assert done["data_sha256"] == texts_digest(CORPUS) and done["config"]["final_lr"] == 0.1
    stamp = os.path.getmtime(tmp_path / "training.json")
    assert train_checkpoints(CORPUS, tmp_path, cfg, progress=False) == dirs  # the same run: reused
    assert os.path.getmtime(tmp_path / "training.json") == stamp
    train_checkpoints(CORPUS[::-1], tmp_path, cfg, progress=False)  # other texts: trained again
    assert json.loads((tmp_path / "training.json").read_text())["data_sha256"] == texts_digest(CORPUS[::-1])


def test_an_interrupted_run_resumes_from_its_last_saved_step_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                                               capsys):
    import fastspec.models.tiny as tiny

    cfg = TinyLMConfig(vocab_size=300, hidden=16, layers=1, heads=2, context=32, seq_len=16, batch_size=4, steps=12,
                       warmup=2, save_steps=(0, 4, 8, 12))
    whole = train_checkpoints(CORPUS, tmp_path / "whole", cfg, progress=False, threads=1)

    def lr_until_10(step, c):
        if step == 10:
            raise KeyboardInterrupt
        return lr_at(step, c)

    monkeypatch.setattr(tiny, "lr_at", lr_until_10)
    with pytest.raises(KeyboardInterrupt):
        train_checkpoints(CORPUS, tmp_path / "cut", cfg, progress=False, threads=1)
    assert (tmp_path / "cut" / "resume.pt").exists() and not (tmp_path / "cut" / "training.json").exists()
    assert sorted(os.listdir(tmp_path / "cut")) == ["resume.pt", "step0", "step4", "step8"]  # no temporary left
    steps_run = []
    monkeypatch.setattr(tiny, "lr_at", lambda step, c: steps_run.append(step) or lr_at(step, c))
    resumed = train_checkpoints(CORPUS, tmp_path / "cut", cfg, progress=True, threads=1)
    assert steps_run == [8, 9, 10, 11]  # from step 8's saved state, not from the start
    assert "resuming the training at step 8 of 12" in capsys.readouterr().out
    assert not (tmp_path / "cut" / "resume.pt").exists()
    for a, b in zip(whole, resumed):
        sa, sb = (AutoModelForCausalLM.from_pretrained(d).state_dict() for d in (a, b))
        assert all(torch.equal(sa[k], sb[k]) for k in sa), os.path.basename(a)
    want = json.loads((tmp_path / "whole" / "training.json").read_text())
    assert json.loads((tmp_path / "cut" / "training.json").read_text()) == want  # the losses too


def test_a_step_directory_half_written_when_the_run_stops_is_not_left(tmp_path, monkeypatch):
    cfg = TinyLMConfig(vocab_size=300, hidden=16, layers=1, heads=2, context=32, seq_len=16, batch_size=4, steps=4,
                       warmup=1, save_steps=(0, 2, 4))
    save = GPTNeoXForCausalLM.save_pretrained

    def save_then_stop(self, path, **kwargs):
        save(self, path, **kwargs)
        if "step2" in path:  # the weights are written, the tokenizer not yet
            raise KeyboardInterrupt

    monkeypatch.setattr(GPTNeoXForCausalLM, "save_pretrained", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_checkpoints(CORPUS, tmp_path, cfg, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["resume.pt", "step0"]  # no step2, whole or partial
    monkeypatch.undo()
    dirs = train_checkpoints(CORPUS, tmp_path, cfg, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["step0", "step2", "step4", "training.json"]
    assert all(os.path.exists(os.path.join(d, "tokenizer.json")) for d in dirs)


def test_a_damaged_resume_file_is_named(tmp_path):
    cfg = TinyLMConfig(vocab_size=300, hidden=16, layers=1, heads=2, context=32, seq_len=16, batch_size=4, steps=2,
                       warmup=1, save_steps=(0, 2))
    (tmp_path / "resume.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"resume\.pt cannot be read.*delete it"):
        train_checkpoints(CORPUS, tmp_path, cfg, progress=False)
