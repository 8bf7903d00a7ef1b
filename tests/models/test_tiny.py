"""fastspec.models.tiny: the learning-rate schedule and what a training run records and reuses."""

import json
import math
import os

import pytest
import torch
from tinylm import CORPUS

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
