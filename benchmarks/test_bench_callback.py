"""Training throughput with fastspec's GeometryCallback beside the same Trainer run without it (issue 16).

A tiny GPT-NeoX (the demo's shape: 4 layers, width 128, a BPE vocabulary of 2048 trained on
Python's own docstrings) is trained by a real ``transformers.Trainer`` on blocks of those
docstrings, once plain and once with :class:`fastspec.integrations.hf.GeometryCallback`
measuring every layer on a fixed probe of held-out paragraphs every 50 steps (``at_start``
off: the setting measured is the steady state). The two runs alternate (which goes first, too), ``extra_info`` holds
each one's ``trainer.train()`` seconds, the overhead (callback / plain − 1) and the number of
probe and training tokens, and the two runs' losses are checked to be equal (the callback must
not perturb training). No time is asserted. Small by default (CI: 20 steps of batch 4, measured
every 10 on 32 texts); ``FASTSPEC_BENCH_FULL=1``: the issue's setting, 500 steps of batch 16
(2048 tokens), measured every 50 on 512 texts, two rounds of each.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (pip install '.[test]')")

from hf_worker import Blocks  # noqa: E402  (tests/hf_worker.py: the Trainer tests' dataset)

from fastspec.integrations.hf import GeometryCallback  # noqa: E402
from fastspec.models.data import stdlib_docstrings  # noqa: E402
from fastspec.models.tiny import model_config, train_tokenizer  # noqa: E402

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
STEPS, EVERY, PROBE, BATCH, ROUNDS = (500, 50, 512, 16, 2) if FULL else (20, 10, 32, 4, 1)
SEQ = 128


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    paragraphs = stdlib_docstrings(max_paragraphs=6000)
    train, probe = paragraphs[:-PROBE], paragraphs[-PROBE:]
    tok = train_tokenizer(train, 2048)
    ids = [t for text in train for t in tok(text + tok.eos_token, add_special_tokens=False)["input_ids"]]
    cfg = model_config("gpt_neox", vocab_size=len(tok), hidden=128, layers=4, heads=4, context=SEQ,
                       eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench_callback") / "init"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), tok, Blocks(ids, SEQ), probe


def run(setup, out: str, callback: bool) -> tuple[float, list[float]]:
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    path, tok, data, probe = setup
    args = TrainingArguments(output_dir=out, max_steps=STEPS, per_device_train_batch_size=BATCH, learning_rate=1e-3,
                             warmup_steps=10, save_strategy="no", logging_steps=EVERY, report_to="none", use_cpu=True,
                             seed=0, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(path).train(), args=args, train_dataset=data,
                      processing_class=tok)
    if callback:
        GeometryCallback(probe, every_n_steps=EVERY, at_start=False, collapse=None).attach(trainer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return seconds, [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_trainer_throughput_with_and_without_the_geometry_callback(benchmark, setup, tmp_path):
    times: dict[str, list[float]] = {"plain": [], "callback": []}
    losses = {}

    def both():  # alternately first, so that neither always runs on a cold or a warm machine
        order = ["plain", "callback"] if len(times["plain"]) % 2 == 0 else ["callback", "plain"]
        for name in order:
            seconds, losses[name] = run(setup, str(tmp_path / name), name == "callback")
            times[name].append(seconds)

    benchmark.group = f"Trainer, tiny GPT-NeoX: {STEPS} steps, geometry every {EVERY} on {PROBE} probe texts"
    benchmark.pedantic(both, rounds=ROUNDS, iterations=1)
    # The callback measures in eval mode without gradients and touches no RNG: training is unchanged.
    np.testing.assert_allclose(losses["callback"], losses["plain"], rtol=1e-6)
    plain, cb = min(times["plain"]), min(times["callback"])
    probe_tokens = sum(len(setup[1](t, add_special_tokens=False)["input_ids"][:SEQ]) for t in setup[3])
    benchmark.extra_info.update(
        steps=STEPS, every=EVERY, probe_texts=PROBE, probe_tokens=probe_tokens, train_tokens_per_step=BATCH * SEQ,
        measurements=STEPS // EVERY, plain_s=plain, callback_s=cb, overhead=cb / plain - 1,
        times=times, torch_threads=torch.get_num_threads())
