"""Top-k eigenvector ablation and multiple-choice scoring on a tiny random-init GPT-NeoX:
k = d retained changes nothing, k = d removed makes every position predict alike, and the
ablated log-likelihoods match an independent reference (float64 NumPy eigenvectors of the
model's own hidden states, a hand-written hook, one sequence at a time)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import tinylm

import fastspec
from fastspec.analyses.ablation import PROMPT, CHOICE, Item, Projector, accuracies, encode_items, read_items
from fastspec.models.scoring import continuation_logprobs

transformers = pytest.importorskip("transformers")

WORDS = ["hill", "town", "sea", "cat", "dog", "river"]  # the first three are one token each


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tinylm.save_model(str(tmp_path_factory.mktemp("abl") / "m"), "gpt_neox", layers=2, hidden=32)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    rng = np.random.default_rng(0)
    items = [Item({"question": " ".join(tinylm.CORPUS[i].split()[:4])}, tuple(rng.permutation(WORDS)[:4]), int(rng.integers(4)))
             for i in range(0, 180, 15)]
    acc = fastspec.extract(model, tok, tinylm.CORPUS, layers="all", max_length=None, progress=False)
    return path, model, tok, items, acc


def _scores(model, tok, items, projector=None, positions="all"):
    seqs, plens, _ = encode_items(tok, items, PROMPT, CHOICE, 64)
    hook = None if projector is None else (lambda scored: setattr(projector, "where", None if positions == "all" else scored))
    return continuation_logprobs(model, seqs, plens, batch_size=5, before_forward=hook)


def _basis(acc, k):
    return acc.mean, torch.from_numpy(acc.spectrum(top_k_eigenvectors=k).eigenvectors)


@pytest.mark.parametrize("layer,final_norm", [(0, False), (1, False), (2, True)])
def test_retaining_every_direction_changes_nothing(setup, layer, final_norm):
    _, model, tok, items, acc = setup
    base = _scores(model, tok, items)
    with Projector(model, layer, final_norm=final_norm) as proj:
        proj.set(*_basis(acc[layer], 32), "retain")
        again = _scores(model, tok, items, proj)
    # the projection is exact up to float32 rounding of the hidden states (~1e-7 relative)
    np.testing.assert_allclose(again, base, rtol=0, atol=1e-4)
    assert not np.allclose(base, base[0])  # the scores themselves differ between choices


def test_removing_every_direction_makes_every_position_predict_alike(setup):
    _, model, tok, items, acc = setup
    seqs, _, _ = encode_items(tok, items, PROMPT, CHOICE, 64)
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs[:6]], batch_first=True)
    with Projector(model, 1) as proj, torch.no_grad():
        proj.set(*_basis(acc[1], 32), "remove")
        logits = model(input_ids=ids).logits
    flat = logits.reshape(-1, logits.shape[-1])
    np.testing.assert_allclose(flat.numpy(), np.broadcast_to(flat[0].numpy(), flat.shape), rtol=0, atol=1e-4)
    # so a choice's score no longer depends on the question
    with Projector(model, 1) as proj:
        proj.set(*_basis(acc[1], 32), "remove")
        scores = _scores(model, tok, items, proj).reshape(len(items), 4)
    by_word: dict[str, list[float]] = {}
    for item, row in zip(items, scores):
        for word, s in zip(item.choices, row):
            by_word.setdefault(word, []).append(s)
    for word, values in by_word.items():
        np.testing.assert_allclose(values, values[0], rtol=0, atol=1e-4, err_msg=word)


def _reference(model, tok, items, layer_hidden, k, mode, basis_texts):
    """Eigenvectors from float64 NumPy on the model's own hidden_states (last token of each
    basis text), a hand-written hook on block 1's output, one unpadded sequence at a time,
    and a float64 log-softmax."""
    rows = []
    with torch.no_grad():
        for text in basis_texts:
            ids = tok(text, return_tensors="pt")["input_ids"]
            rows.append(model(input_ids=ids, output_hidden_states=True).hidden_states[layer_hidden][0, -1].double().numpy())
    x = np.stack(rows)
    mu = x.mean(0)
    w, v = np.linalg.eigh(np.cov(x, rowvar=False))
    u = v[:, np.argsort(w)[::-1][:k]]

    def hook(module, args, out):
        h = out[0] if isinstance(out, tuple) else out
        hd = h.double().numpy()
        along = (hd - mu) @ u @ u.T
        new = torch.from_numpy(mu + along if mode == "retain" else hd - along).to(h.dtype)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    handle = model.gpt_neox.layers[layer_hidden - 1].register_forward_hook(hook)
    try:
        out = []
        for item in items:
            context = PROMPT.format(**item.fields)
            n_ctx = len(tok(context)["input_ids"])
            for word in item.choices:
                whole = tok(context + CHOICE.format(choice=word))["input_ids"]
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([whole])).logits[0].double().numpy()
                logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
                out.append(sum(logp[t - 1, whole[t]] for t in range(n_ctx, len(whole))))
    finally:
        handle.remove()
    return np.array(out)


@pytest.mark.parametrize("mode", ["retain", "remove"])
def test_matches_an_independent_reference(setup, mode):
    _, model, tok, items, acc = setup
    want = _reference(model, tok, items, 1, 3, mode, tinylm.CORPUS)
    with Projector(model, 1) as proj:
        proj.set(*_basis(acc[1], 3), mode)
        got = _scores(model, tok, items, proj)
    # float32 forward vs float64 reference on 2-block 32-wide model: ~1e-5 absolute
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)
    assert not np.allclose(got, _scores(model, tok, items), atol=1e-3)  # the ablation did change the scores


def test_scored_positions_on_one_token_choices(setup):
    """Removing everything at the last layer, at the scored positions only: one-token choices
    are predicted from the mean alone, so each word scores the same after any question."""
    _, model, tok, items, acc = setup
    one = [Item(it.fields, ("hill", "town", "sea"), 0) for it in items]
    assert all(len(tok(" " + w)["input_ids"]) == 1 for w in ("hill", "town", "sea"))
    with Projector(model, 2) as proj:
        proj.set(*_basis(acc[2], 32), "remove")
        scores = _scores(model, tok, one, proj, positions="scored").reshape(len(one), 3)
    np.testing.assert_allclose(scores, np.broadcast_to(scores[0], scores.shape), rtol=0, atol=1e-4)
    assert np.ptp(_scores(model, tok, one).reshape(len(one), 3)[:, 0]) > 1e-3  # but not without the ablation


def test_accuracies_hand_computed():
    """lm-eval-harness 0.4's process_results: acc_norm divides by len(choice) in characters,
    acc_bytes by its UTF-8 bytes (the choice without the leading-space delimiter)."""
    items = [Item({}, ("a", "bb"), 0), Item({}, ("a", "bb", "c"), 2), Item({}, ("aaaa", "é"), 1)]
    scores = np.array([-1.0, -1.5,      # item 0: choice 0 wins; per char -1 vs -0.75 (choice 1)
                       -2.0, -3.0, -2.0,  # item 1: tie between 0 and 2 goes to the first: wrong
                       -4.0, -1.5])     # item 2: choice 1 wins; per char -1 vs -1.5: choice 0;
    lengths = np.array([[1, 1], [2, 2],  # per byte ("é" is 2 bytes) -1 vs -0.75: choice 1
                        [1, 1], [2, 2], [1, 1],
                        [4, 4], [1, 2]])
    got = accuracies(scores, lengths, items)
    assert got == {"accuracy": pytest.approx(2 / 3), "acc_norm": pytest.approx(0 / 3), "acc_bytes": pytest.approx(1 / 3)}


def test_choice_lengths_are_lm_eval_s_without_the_delimiter(setup):
    _, model, tok, items, _ = setup
    _, _, lengths = encode_items(tok, [Item({"question": "q"}, ("café", "x"), 0)], PROMPT, CHOICE, 64)
    assert lengths == [(4, 5), (1, 1)]  # " café" would be 5 characters and 6 bytes


def test_ablate_end_to_end_and_hook_removed(setup, tmp_path):
    path, model, tok, items, acc = setup
    before = dict(model.gpt_neox.layers[0]._forward_hooks)
    frame = fastspec.ablate(model, [{"question": it.fields["question"], "choices": list(it.choices), "answer": it.answer}
                                    for it in items], tinylm.CORPUS, tok, layer=1, ks=[1, 32], progress=False)
    assert list(frame["mode"]) == ["none", "retain", "retain", "remove", "remove"]
    assert frame.attrs["layer"] == 1 and frame.attrs["chance"] == 0.25 and frame.attrs["basis_samples"] == 180
    base = frame.loc[0, "accuracy"]
    assert frame.loc[2, "accuracy"] == base  # retain k = d
    hooks = dict(model.gpt_neox.layers[0]._forward_hooks)
    assert hooks == before  # (transformers may keep capture hooks of its own there)
    # an error inside the run still removes the hook
    calls = []

    def boom(scored):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"), Projector(model, 1) as proj:
        proj.set(*_basis(acc[1], 2), "retain")
        seqs, plens, _ = encode_items(tok, items, PROMPT, CHOICE, 64)
        continuation_logprobs(model, seqs, plens, batch_size=4, before_forward=boom)
    assert dict(model.gpt_neox.layers[0]._forward_hooks) == hooks
    # from a directory and a .jsonl, as the CLI does
    jl = tmp_path / "items.jsonl"
    jl.write_text("\n".join(json.dumps({"question": it.fields["question"], "choices": list(it.choices), "answer": it.answer})
                            for it in items) + "\n")
    again = fastspec.ablate(path, jl, acc[1], layer=1, ks=[1, 32], progress=False)
    pd.testing.assert_frame_equal(again[["mode", "k", "accuracy", "acc_norm"]], frame[["mode", "k", "accuracy", "acc_norm"]])


def test_bad_input(setup, tmp_path):
    _, model, tok, items, acc = setup
    with pytest.raises(ValueError, match="at most|more than the 32 eigenvectors"):
        fastspec.ablate(model, [{"question": "q", "choices": ["a", "b"], "answer": 0}], acc[1], tok, layer=1, ks=[33],
                        progress=False)
    with pytest.raises(ValueError, match="basis accumulator has dim 8, but layer 1 of this model has 32"):
        fastspec.ablate(model, [{"question": "q", "choices": ["a", "b"], "answer": 0}],
                        fastspec.CovarianceAccumulator(8).update(torch.randn(20, 8)), tok, layer=1, progress=False)
    with pytest.raises(ValueError, match="unknown layer 7"):
        fastspec.ablate(model, [{"question": "q", "choices": ["a", "b"], "answer": 0}], acc[1], tok, layer=7, progress=False)
    with pytest.raises(ValueError, match="needs field 'support'"):
        fastspec.ablate(model, [{"question": "q", "choices": ["a", "b"], "answer": 0}], acc[1], tok, layer=1, ks=[1],
                        prompt="{support} {question}", progress=False)
    with pytest.raises(ValueError, match="positions must be one of"):
        fastspec.ablate(model, [], acc[1], tok, positions="last", progress=False)
    with pytest.raises(ValueError, match="ks must be positive integers"):
        fastspec.ablate(model, [], acc[1], tok, ks=[0], progress=False)
    bad = tmp_path / "bad.jsonl"
    for text, match in [('{"question": "q", "choices": ["a", "b"], "answer": 2}\n', r"bad.jsonl:1: 'answer' must be an index"),
                        ('{"question": "q", "choices": ["a"], "answer": 0}\n', "at least 2 non-empty strings"),
                        ('\n{"question": "q", "choices": ["a", "b"]}\n', r"bad.jsonl:2: item has no 'answer'"),
                        ('{"question": "q", \n', r"bad.jsonl:1: not JSON"),
                        ("", "holds no items")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_items(bad)
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        read_items(tmp_path / "nothere.jsonl")
