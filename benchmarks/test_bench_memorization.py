"""Memorization across checkpoints, and the cost of row folds (issue 15).

``memorization_trace``: ``fastspec.memorization_trace`` over a suite of checkpoints beside the
loop a user would write (load each checkpoint, score each item in its own forward pass, one
∞-gram query per output token, ``scipy.stats.spearmanr``). Both give the same ρ per
checkpoint and the same per-item scores (checked). fastspec queries the ∞-gram once for the
suite (its checkpoints share one tokenizer) and scores the items in length-sorted batches.
The index is of Python's own docstrings in a BPE trained on them; the items are prompt →
continuation pairs from held-out paragraphs (the demo's recipe). ``tokens_per_s`` counts the
scored output tokens of every checkpoint.

``folds``: ``CovarianceAccumulator(d, folds=K)`` against ``folds=1`` on the same rows. Each row
goes to one fold, so the products cost what one accumulator's cost; the jackknife's 2K extra
eigensolves are timed apart (``jackknife``, given the full spectra as ``trace`` does).

Sizes: small by default (CI); ``FASTSPEC_BENCH_FULL=1``: 10 checkpoints of Pythia-70m's shape
(hidden 512, 6 layers, 8 heads, vocab 50304) and 300 items; folds at d = 2048, N = 15000.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from scipy import stats

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")

import fastspec  # noqa: E402
from fastspec.demo import memorization_items  # noqa: E402
from fastspec.models.data import stdlib_docstrings  # noqa: E402
from fastspec.models.tiny import train_tokenizer  # noqa: E402

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
CKPTS, ITEMS, PARAGRAPHS = (10, 300, None) if FULL else (3, 40, 3_000)  # None: every paragraph
SHAPE = dict(hidden=512, layers=6, heads=8, vocab=50304, tokenizer=8192) if FULL else \
    dict(hidden=64, layers=2, heads=4, vocab=2048, tokenizer=2048)
FOLD_D, FOLD_N, FOLD_KS = (2048, 15_000, (1, 10)) if FULL else (256, 3_000, (1, 10))


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    root = tmp_path_factory.mktemp("memsuite")
    paragraphs = stdlib_docstrings(max_paragraphs=PARAGRAPHS)
    train, held = paragraphs[: int(0.9 * len(paragraphs))], paragraphs[int(0.9 * len(paragraphs)):]
    tok = train_tokenizer(train, SHAPE["tokenizer"])
    ids = tok(train, add_special_tokens=False)["input_ids"]
    index = fastspec.InfGramIndex.build([np.asarray(x) for x in ids if x], root / "index", vocab_size=len(tok),
                                        progress=False)
    items = memorization_items(held, ITEMS)
    assert len(items) == ITEMS
    cfg = GPTNeoXConfig(vocab_size=SHAPE["vocab"], hidden_size=SHAPE["hidden"], num_hidden_layers=SHAPE["layers"],
                        num_attention_heads=SHAPE["heads"], intermediate_size=4 * SHAPE["hidden"],
                        max_position_embeddings=2048, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    ckpts = []
    for k in range(CKPTS):  # differently seeded weights stand in for the checkpoints of a run
        torch.manual_seed(k)
        path = root / f"step{1000 * k}"
        GPTNeoXForCausalLM(cfg).save_pretrained(path)
        tok.save_pretrained(path)
        ckpts.append(str(path))
    return ckpts, items, index


def naive_loop(ckpts, items, index):
    """Per checkpoint: load it, one forward pass per item, one ∞-gram query per output token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = []
    for path in ckpts:
        model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
        infgram, model_scores = [], []
        for it in items:
            p = tok(it["prompt"], add_special_tokens=False)["input_ids"]
            o = tok(it["output"], add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([p + o])).logits[0].double(), -1)
            model_scores.append(float(sum(logp[len(p) + k - 1, t] for k, t in enumerate(o))))
            probs = [index.infgram_prob(p + o[:k], t).prob for k, t in enumerate(o)]
            nonzero = [math.log(q) for q in probs if q > 0]  # the paper's rule: zeros dropped
            infgram.append(sum(nonzero) if nonzero else math.nan)
        a, b = np.array(infgram), np.array(model_scores)
        keep = ~np.isnan(a)
        out.append((float(stats.spearmanr(a[keep], b[keep]).statistic), a, b))
    return out


@pytest.mark.parametrize("method", ["fastspec", "naive_loop"])
def test_memorization_trace(benchmark, suite, tmp_path, method):
    ckpts, items, index = suite
    runs = iter(range(1000))

    def fresh():  # a new results directory per round: a trace resumes, and would skip the work
        return (ckpts, items, index, tmp_path / f"run{next(runs)}"), {"progress": False}

    fn = (lambda c, i, x, out, progress: fastspec.memorization_trace(c, i, x, out, progress=progress)) \
        if method == "fastspec" else (lambda c, i, x, out, progress: naive_loop(c, i, x))
    benchmark.group = f"memorization_trace: {CKPTS} checkpoints (hidden {SHAPE['hidden']}, {SHAPE['layers']} " \
                      f"layers, vocab {SHAPE['vocab']}), {ITEMS} items"
    got = benchmark.pedantic(fn, setup=fresh, rounds=1 if FULL else 2, iterations=1)
    want = naive_loop(ckpts[:2], items, index) if method == "fastspec" else got
    if method == "fastspec":
        assert got["step"].tolist() == [1000 * k for k in range(CKPTS)]
        # float32 forwards batched vs alone differ by rounding (~1e-4 on a sum of log-probs),
        # which can swap near-tied ranks: ρ agrees to well under one swap's worth
        np.testing.assert_allclose(got["rho"].to_numpy()[:2], [w[0] for w in want], rtol=0, atol=5e-3)
        direct = fastspec.memorization(items, index, ckpts[0])
        np.testing.assert_array_equal(np.isnan(direct.infgram_scores), np.isnan(want[0][1]))
        np.testing.assert_allclose(direct.infgram_scores, want[0][1], rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(direct.model_scores, want[0][2], rtol=0, atol=2e-3)
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(ckpts[0])
    tokens = sum(len(t(it["output"], add_special_tokens=False)["input_ids"]) for it in items) * CKPTS
    benchmark.extra_info["tokens_per_s"] = tokens / benchmark.stats.stats.mean
    benchmark.extra_info["checkpoints"] = CKPTS


@pytest.fixture(scope="module")
def fold_rows():
    from _bench_methods import make_activations

    return make_activations(FOLD_N, FOLD_D, seed=0)


def accumulate(x: torch.Tensor, folds: int) -> fastspec.CovarianceAccumulator:
    acc = fastspec.CovarianceAccumulator(x.shape[1], folds=folds)
    for start in range(0, x.shape[0], 1024):  # batches as extraction offers them
        acc.update(x[start:start + 1024])
    return acc


@pytest.mark.parametrize("folds", FOLD_KS)
def test_fold_products(benchmark, fold_rows, folds):
    """The products alone (update over every row, then the pooled scatter): the same cost for any K."""
    benchmark.group = f"folds: products, N={FOLD_N} d={FOLD_D}"
    cov = benchmark.pedantic(lambda: accumulate(fold_rows, folds).covariance(), rounds=3, iterations=1)
    ref = np.cov(fold_rows.double().numpy(), rowvar=False)  # ddof=1, as covariance()
    np.testing.assert_allclose(cov.double().numpy(), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    benchmark.extra_info["folds"] = folds


@pytest.mark.parametrize("stage", ["spectrum", "jackknife"])
def test_fold_jackknife(benchmark, fold_rows, stage):
    """Once the rows are in: the spectra of all the rows (centred and raw, what any trace
    computes) against the jackknife's extra 2K eigensolves (given those spectra)."""
    k = max(FOLD_KS)
    acc = accumulate(fold_rows, k)
    spectra = (acc.spectrum(), acc.spectrum(center=False))
    benchmark.group = f"folds: eigensolves, N={FOLD_N} d={FOLD_D} K={k}"
    fn = (lambda: (acc.spectrum(), acc.spectrum(center=False))) if stage == "spectrum" else \
        (lambda: acc.jackknife(spectra=spectra))
    got = benchmark.pedantic(fn, rounds=3 if not FULL else 2, iterations=1)
    if stage == "jackknife":
        assert got.rankme == pytest.approx(spectra[0].rankme, rel=1e-12) and got.rankme_se > 0
    benchmark.extra_info["folds"] = k
