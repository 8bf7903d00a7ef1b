"""Distributional memorization on a tiny random-init GPT-2 and a BPE tokenizer trained here:
model scores against a per-item forward pass, ∞-gram scores against per-token
``infgram_prob`` calls, both rules, and Spearman against scipy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import fastspec
from fastspec.ngram.memorization import infgram_output_score

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer):
    tok_dir, texts = tiny_tokenizer
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    root = tmp_path_factory.mktemp("mem")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(str(root / "model"))
    tok.save_pretrained(str(root / "model"))
    docs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    index = fastspec.InfGramIndex.build([np.array(d) for d in docs], root / "index", vocab_size=len(tok), progress=False)
    rng = np.random.default_rng(1)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away", "paris", "france", "zebra", "quokka"]
    items = [(f"Question: {' '.join(rng.choice(words, 3))}? Answer:", " " + " ".join(rng.choice(words, int(rng.integers(1, 4)))))
             for _ in range(24)]
    return model, tok, index, items, root


def _manual(model, tok, index, items):
    """Per item, one at a time: Σ log p_model over the output, and the ∞-gram probs of its tokens."""
    model_scores, probs = [], []
    for prompt, output in items:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        o = tok(output, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + o])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        model_scores.append(sum(float(logp[len(p) + k - 1, t]) for k, t in enumerate(o)))
        probs.append(np.array([index.infgram_prob(p + o[:k], t).prob for k, t in enumerate(o)]))
    return np.array(model_scores), probs


@pytest.mark.parametrize("rule", ["wang", "all"])
def test_memorization_matches_a_manual_computation(setup, rule):
    model, tok, index, items, _ = setup
    res = fastspec.memorization(items, index, model, tok, rule=rule, batch_size=5)
    model_scores, probs = _manual(model, tok, index, items)
    np.testing.assert_allclose(res.model_scores, model_scores, rtol=1e-5, atol=1e-6)
    if rule == "wang":
        want = np.array([np.log(p[p > 0]).sum() if (p > 0).any() else math.nan for p in probs])
    else:
        with np.errstate(divide="ignore"):
            want = np.array([np.log(p).sum() for p in probs])
    np.testing.assert_allclose(res.infgram_scores, want, rtol=1e-12)
    keep = ~np.isnan(want)
    rho, pvalue = stats.spearmanr(want[keep], model_scores[keep])
    assert res.rho == pytest.approx(rho, abs=1e-9) and res.pvalue == pytest.approx(pvalue, rel=1e-6)
    assert res.n_items == keep.sum() and res.n_excluded == (~keep).sum() and res.rule == rule
    # the items use unseen words (zebra, quokka): some ∞-gram probabilities are 0
    assert any((p == 0).any() for p in probs)
    if rule == "all":
        assert np.isneginf(res.infgram_scores).any()


def test_paper_rule_drops_zeros_and_all_zero_is_nan():
    assert infgram_output_score(np.array([0.5, 0.0, 0.25]), "wang") == pytest.approx(math.log(0.125))
    assert math.isnan(infgram_output_score(np.array([0.0, 0.0]), "wang"))
    assert infgram_output_score(np.array([0.5, 0.0]), "all") == -math.inf
    with pytest.raises(ValueError, match="rule"):
        infgram_output_score(np.array([0.5]), "paper")


def test_memorization_from_directories_and_cli(setup, tmp_path, capsys):
    model, tok, index, items, root = setup
    res = fastspec.memorization([{"prompt": p, "output": o} for p, o in items], index.path, str(root / "model"))
    direct = fastspec.memorization(items, index, model, tok)
    assert res.rho == pytest.approx(direct.rho, abs=1e-9)
    items_file = tmp_path / "items.jsonl"
    items_file.write_text("".join(json.dumps({"prompt": p, "output": o}) + "\n" for p, o in items))
    from fastspec.cli import main

    assert main(["memorization", "--index", index.path, "--model", str(root / "model"), "--items", str(items_file)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rho"] == pytest.approx(direct.rho, abs=1e-9) and out["rule"] == "wang"
    # rule "all" scores an output with an unseen token −∞: strict JSON has no -Infinity, so null
    every = fastspec.memorization(items, index, model, tok, rule="all")
    assert np.isneginf(every.infgram_scores).any()
    assert main(["memorization", "--index", index.path, "--model", str(root / "model"), "--items", str(items_file),
                 "--rule", "all", "--out", str(tmp_path / "m.json")]) == 0
    capsys.readouterr()
    text = (tmp_path / "m.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    written = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert [v is None for v in written["infgram_scores"]] == np.isneginf(every.infgram_scores).tolist()


def test_token_id_items_match_text_items(setup):
    model, tok, index, items, _ = setup
    ids = [(tok(p, add_special_tokens=False)["input_ids"], tok(o, add_special_tokens=False)["input_ids"]) for p, o in items]
    a = fastspec.memorization(ids, index, model, rule="all")
    b = fastspec.memorization(items, index, model, tok, rule="all")
    np.testing.assert_array_equal(a.infgram_scores, b.infgram_scores)
    assert a.rho == b.rho


def test_memorization_errors(setup):
    model, tok, index, items, root = setup
    with pytest.raises(ValueError, match="rule"):
        fastspec.memorization(items, index, model, tok, rule="paper")
    with pytest.raises(ValueError, match="item 1"):
        fastspec.memorization([items[0], ("only one",)], index, model, tok)
    with pytest.raises(ValueError, match="at least 3"):
        fastspec.memorization(items[:2], index, model, tok)
    with pytest.raises(ValueError, match="item 0: the output is empty"):
        fastspec.memorization([("Question: x? Answer:", "")] + items, index, model, tok)
    with pytest.raises(ValueError, match="item 0: prompt \\+ output is 70 tokens, longer than the model's 64"):
        fastspec.memorization([(list(range(60)), list(range(10)))] + items, index, model, tok)
    with pytest.raises(OSError, match="no-such-model"):
        fastspec.memorization(items, index, str(root / "no-such-model"))


@pytest.fixture(scope="module")
def traced_ckpts(tmp_path_factory):
    """Three checkpoints of a tiny GPT-NeoX, an index of its training corpus in its own
    tokenizer, and prompt → continuation items from that corpus."""
    from tinylm import CORPUS, checkpoints

    root = tmp_path_factory.mktemp("memtrace")
    ckpts = checkpoints(root / "ckpts")
    tok = transformers.AutoTokenizer.from_pretrained(ckpts[0])
    docs = [np.array(tok(t, add_special_tokens=False)["input_ids"]) for t in CORPUS]
    index = fastspec.InfGramIndex.build(docs, root / "index", vocab_size=len(tok), progress=False)
    # prompts from one sentence, continuations from another: some seen after it, some not
    items = [{"prompt": " ".join(a.split()[:4]), "output": " " + " ".join(b.split()[3:3 + k % 3 + 1])}
             for k, (a, b) in enumerate(zip(CORPUS[::5], CORPUS[3::5]))]
    return ckpts, tok, index, items


def test_memorization_trace_scores_every_checkpoint_resumably(traced_ckpts, tmp_path, monkeypatch):
    import sys

    import pandas as pd

    mod = sys.modules["fastspec.analyses.memorization"]  # the attribute of that name is the function

    ckpts, tok, index, items = traced_ckpts
    queries = []
    real_score = type(index).score
    monkeypatch.setattr(type(index), "score", lambda self, *a, **k: queries.append(1) or real_score(self, *a, **k))
    frame = fastspec.memorization_trace(ckpts[:2], items, index, tmp_path, progress=False)
    assert len(queries) == 1  # one tokenizer: the ∞-gram side is queried once for both checkpoints
    assert frame["step"].tolist() == [0, 3] and (frame["rule"] == "wang").all()
    for ckpt, row in zip(ckpts, frame.itertuples()):
        direct = fastspec.memorization(items, index, ckpt)
        assert row.rho == pytest.approx(direct.rho, abs=1e-9) and row.n_items == direct.n_items
    calls = []
    real = mod._correlate
    monkeypatch.setattr(mod, "_correlate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = fastspec.memorization_trace(ckpts, items, index, tmp_path, progress=False)  # resumes: one new
    assert len(calls) == 1 and again["step"].tolist() == [0, 3, 6]
    with pytest.raises(ValueError, match=r"other settings \(rule: .wang. there, .all. now\)"):
        fastspec.memorization_trace(ckpts, items, index, tmp_path, rule="all", progress=False)
    full = pd.read_csv(tmp_path / "suffix_lengths.csv")
    assert full["checkpoint"].unique().tolist() == [*(f"{c}" for c in again["checkpoint"]), "pooled"]
    table = full[full["checkpoint"] == "pooled"]
    assert table["bin"].tolist() == ["<=3", "4", "5", "6", "7", "8", ">8"] and table["share"].sum() == pytest.approx(1)
    for _, rows in full.groupby("checkpoint"):  # one tokenizer: every checkpoint's rows are the pooled ones
        np.testing.assert_allclose(rows["share"].to_numpy(), table["share"].to_numpy(), rtol=1e-12)
    # the shares against per-token infgram_prob calls
    n = []
    for it in items:
        p = tok(it["prompt"], add_special_tokens=False)["input_ids"]
        o = tok(it["output"], add_special_tokens=False)["input_ids"]
        n += [index.infgram_prob(p + o[:k], t).effective_n for k, t in enumerate(o)]
    n = np.array(n)
    assert table["share"].iloc[0] == pytest.approx(np.mean(n <= 3)) and table["share"].iloc[-1] == pytest.approx(np.mean(n > 8))


def test_memorization_trace_from_the_command_line(traced_ckpts, tmp_path, capsys):
    from fastspec.cli import main

    ckpts, _, index, items = traced_ckpts
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    assert main(["memorization", "--checkpoints", *ckpts[:2], "--index", index.path, "--items",
                 str(tmp_path / "items.jsonl"), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert "memorization.csv" in capsys.readouterr().out and (tmp_path / "r" / "suffix_lengths.csv").exists()
    assert main(["memorization", "--checkpoints", *ckpts[:1], "--index", index.path, "--items",
                 str(tmp_path / "items.jsonl")]) == 2
    assert "--checkpoints needs --out" in capsys.readouterr().err


def test_the_report_shows_memorization_beside_the_trace(traced_ckpts, tmp_path):
    """The paper's Figure 4 (memorization and RankMe against step, phases shaded) and Table 1,
    with the trace's jackknife standard errors."""
    from tinylm import CORPUS

    from fastspec.report import write_report

    ckpts, _, index, items = traced_ckpts
    fastspec.trace(ckpts, CORPUS, tmp_path / "trace", folds=3, max_length=32, batch_size=8, fit_range=(2, 20),
                   progress=False)
    fastspec.memorization_trace(ckpts, items, index, tmp_path, progress=False)
    md, _ = write_report(tmp_path)
    with open(md) as fh:
        text = fh.read()
    assert "## Distributional memorization across checkpoints" in text and "RankMe SE" in text
    for png in ("memorization.png", "suffix_lengths.png"):
        assert (tmp_path / png).stat().st_size > 10_000 and f"]({png})" in text


def test_memorization_trace_refuses_an_index_rebuilt_from_another_corpus(traced_ckpts, tmp_path):
    """Issue 24 item 4: only the path was bound, so an index rebuilt in place scored later
    checkpoints against another corpus. Its fingerprint is bound too."""
    from tinylm import CORPUS

    ckpts, tok, _, items = traced_ckpts
    docs = [np.array(tok(t, add_special_tokens=False)["input_ids"]) for t in CORPUS]
    where = tmp_path / "index"
    fastspec.InfGramIndex.build(docs, where, vocab_size=len(tok), progress=False)
    fastspec.memorization_trace(ckpts[:1], items, where, tmp_path / "run", progress=False)
    fastspec.InfGramIndex.build(docs[: len(docs) // 2], where, vocab_size=len(tok), progress=False, overwrite=True)
    with pytest.raises(ValueError, match=r"other settings \(index_fingerprint: '[0-9a-f]+' there, '[0-9a-f]+' now\)"):
        fastspec.memorization_trace(ckpts, items, where, tmp_path / "run", progress=False)


def test_items_from_a_file_are_named_by_file_and_line(traced_ckpts, tmp_path):
    """Issue 24 item 14: a bad item read from a .jsonl names its file and line."""
    import json

    ckpts, _, index, items = traced_ckpts
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join([json.dumps(items[0]), "", json.dumps({"prompt": "a b", "output": ""})]) + "\n")
    with pytest.raises(ValueError, match=r"items.jsonl:3: the output is empty"):
        fastspec.memorization(str(path), index, ckpts[0])
    with pytest.raises(ValueError, match=r"items.jsonl:3: the output is empty"):
        fastspec.memorization_trace(ckpts[:1], str(path), index, tmp_path / "run", progress=False)
