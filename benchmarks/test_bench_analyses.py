"""The paper's other analyses: fastspec beside the code a user would otherwise write.

``pass@k``: ``fastspec.pass_at_k`` over a whole table of problems at once, beside the
per-problem loop of Chen et al. (2021)'s released estimator (``1 − prod(1 − k/arange(n−c+1,
n+1))`` for each problem, in a Python loop). Both give the same numbers (checked).

Multiple-choice scoring (the inner loop of ``fastspec.ablate``, once per k and mode):
``fastspec.models.scoring.continuation_logprobs`` (length-sorted batches, log-softmax only at the
scored positions) beside one forward pass per (question, choice) with a full log-softmax, as
in a hand-written evaluation loop. Same model, same sequences, same sums (checked).

Sizes: small by default (CI); ``FASTSPEC_BENCH_FULL=1``: 10,000 problems with n = 512
samples (the paper's setting) and k = 1, 16, 256; 200 items × 4 choices on a model of
Pythia-70m's shape.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")

import fastspec  # noqa: E402
from fastspec.models.scoring import continuation_logprobs  # noqa: E402  (an internal stage: the scoring inside ablate)

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
PROBLEMS, SAMPLES, KS = (10_000, 512, (1, 16, 256)) if FULL else (500, 64, (1, 8, 32))
ITEMS = 200 if FULL else 24
SHAPE = dict(hidden=512, layers=6, heads=8, vocab=50304) if FULL else dict(hidden=64, layers=2, heads=4, vocab=4096)


def chen_loop(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Chen et al.'s estimator, one problem at a time."""
    out = np.empty(len(n))
    for i, (ni, ci) in enumerate(zip(n, c)):
        out[i] = 1.0 if ni - ci < k else 1.0 - np.prod(1.0 - k / np.arange(ni - ci + 1, ni + 1))
    return out


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    n = np.full(PROBLEMS, SAMPLES)
    c = rng.binomial(SAMPLES, rng.beta(0.3, 2.0, PROBLEMS))  # most problems hard, a few easy: as on AMC-23
    return n, c


@pytest.mark.parametrize("method", ["fastspec", "chen_loop"])
def test_pass_at_k(benchmark, counts, method):
    n, c = counts
    fn = (lambda: [fastspec.pass_at_k(n, c, k) for k in KS]) if method == "fastspec" else \
        (lambda: [chen_loop(n, c, k) for k in KS])
    benchmark.group = f"pass@k: {PROBLEMS} problems, n={SAMPLES}, k={KS}"
    got = benchmark.pedantic(fn, rounds=3, iterations=1)
    for k, values in zip(KS, got):
        np.testing.assert_allclose(values, chen_loop(n, c, k), rtol=1e-9, atol=1e-12)
    benchmark.extra_info["problems_per_s"] = PROBLEMS * len(KS) / benchmark.stats.stats.mean


@pytest.fixture(scope="module")
def scoring():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=SHAPE["vocab"], hidden_size=SHAPE["hidden"], num_hidden_layers=SHAPE["layers"],
                        num_attention_heads=SHAPE["heads"], intermediate_size=4 * SHAPE["hidden"],
                        max_position_embeddings=2048)
    model = GPTNeoXForCausalLM(cfg).eval()
    rng = np.random.default_rng(0)
    seqs, plens = [], []
    for _ in range(ITEMS):  # SciQ-like: a 20–120-token question, four 1–8-token choices
        prompt = rng.integers(0, SHAPE["vocab"], int(rng.integers(20, 120))).tolist()
        for _ in range(4):
            seqs.append(prompt + rng.integers(0, SHAPE["vocab"], int(rng.integers(1, 9))).tolist())
            plens.append(len(prompt))
    return model, seqs, plens


def one_at_a_time(model, seqs, plens):
    out = []
    with torch.no_grad():
        for seq, p in zip(seqs, plens):
            logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].double(), -1)
            out.append(float(sum(logp[t - 1, seq[t]] for t in range(p, len(seq)))))
    return np.array(out)


@pytest.mark.parametrize("method", ["fastspec", "one_at_a_time"])
def test_multiple_choice_scoring(benchmark, scoring, method):
    model, seqs, plens = scoring
    fn = (lambda: continuation_logprobs(model, seqs, plens, batch_size=32)) if method == "fastspec" else \
        (lambda: one_at_a_time(model, seqs, plens))
    benchmark.group = f"multiple-choice scoring: {ITEMS} items × 4 choices, hidden {SHAPE['hidden']}, " \
                      f"{SHAPE['layers']} layers, vocab {SHAPE['vocab']}"
    got = benchmark.pedantic(fn, rounds=2 if FULL else 3, iterations=1)
    # float32 forwards batched vs alone differ by rounding: ~1e-4 on sums of up to 8 log-probs
    np.testing.assert_allclose(got, one_at_a_time(model, seqs[:len(got)], plens), rtol=0, atol=2e-3)
    benchmark.extra_info["sequences_per_s"] = len(seqs) / benchmark.stats.stats.mean
