"""The demo's own scores: cloze items built from paragraphs, and next-word pass@k counts."""

from __future__ import annotations

import pytest
import tinylm

from fastspec.demo import cloze_items, next_word_counts

transformers = pytest.importorskip("transformers")


def test_cloze_items():
    paragraphs = [f"w{i} " * 3 + f"alpha{i} beta{i} gamma{i} end{i} more{i}" for i in range(40)] + ["too short"]
    items = cloze_items(paragraphs, 10, seed=3, prompt_words=4, answer_words=2)
    assert len(items) == 10
    for item in items:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        i = item["question"].split()[-1][len("alpha"):]  # the paragraph's number
        assert item["choices"][item["answer"]] == f"beta{i} gamma{i}"
    assert items == cloze_items(paragraphs, 10, seed=3, prompt_words=4, answer_words=2)
    assert {it["answer"] for it in cloze_items(paragraphs, 40, seed=0, prompt_words=4)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="only 40 paragraphs"):
        cloze_items(paragraphs, 41, seed=0, prompt_words=4)


def test_next_word_counts(tmp_path):
    path = tinylm.save_model(str(tmp_path / "m"), "gpt_neox", layers=1, hidden=32)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    items = [{"question": "a red the 1 cat of the", "choices": ["hill", "sea"], "answer": 0},
             {"question": "one small the 2", "choices": ["dog", "tree"], "answer": 1}]
    counts = next_word_counts(model, tok, items, 16, seed=0, batch=16)
    assert len(counts) == 2 and all(0 <= c <= 16 for c in counts)
    assert counts == next_word_counts(model, tok, items, 16, seed=0, batch=16)  # seeded
    # a model that always emits the answer's token is always right
    hill = tok(" hill")["input_ids"]
    assert len(hill) == 1
    bias = torch_bias(model, hill[0])
    try:
        assert next_word_counts(model, tok, items[:1], 16, seed=0) == [16]
    finally:
        bias.remove()


def torch_bias(model, token):
    """A forward hook on the LM head that makes ``token`` certain."""
    def hook(module, args, out):
        out = out.clone()
        out[..., token] += 1e4
        return out
    return model.get_output_embeddings().register_forward_hook(hook)
