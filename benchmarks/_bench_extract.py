"""Extraction benchmark: the model, the texts, the two methods, and a peak-memory probe.

Loaded by path from ``test_bench_extract.py``, and run as a script (``--probe METHOD DIR``)
in a fresh process to measure one run's peak resident memory above its footprint just
before the call (model, tokenizer and texts loaded).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
import torch

FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
# Full: Pythia-70m's shape (random weights; speed does not depend on them), 128 documents up
# to 512 tokens as the paper ran. Small (CI): a tiny model, 32 documents up to 128 tokens.
if FULL:
    SHAPE = dict(hidden=512, layers=6, heads=8, vocab=50304, context=2048)
    N_TEXTS, MAX_LENGTH, BATCH = 128, 512, 16
else:
    SHAPE = dict(hidden=64, layers=2, heads=4, vocab=4096, context=256)
    N_TEXTS, MAX_LENGTH, BATCH = 32, 128, 8


def texts(n: int = N_TEXTS, seed: int = 0) -> list[str]:
    """Documents of 1 to 24 docstring paragraphs: lengths as uneven as real web text."""
    from fastspec.models.data import stdlib_docstrings  # setup, not timed: the corpus

    paras = stdlib_docstrings(max_paragraphs=4000)
    rng = np.random.default_rng(seed)
    out, i = [], 0
    for _ in range(n):
        k = int(rng.integers(1, 25))
        out.append(" ".join(paras[i:i + k]))
        i = (i + k) % (len(paras) - 25)
    return out


def build(path: str) -> str:
    """Save a random-init GPT-NeoX of SHAPE and a BPE tokenizer trained on docstrings."""
    from transformers import AutoModelForCausalLM

    from fastspec.models.tiny import model_config, train_tokenizer  # setup, not timed: the model

    tok = train_tokenizer(texts(400, seed=1), vocab_size=4096)
    cfg = model_config("gpt_neox", vocab_size=SHAPE["vocab"], hidden=SHAPE["hidden"], layers=SHAPE["layers"],
                       heads=SHAPE["heads"], context=SHAPE["context"], eos_id=tok.eos_token_id,
                       pad_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def load(path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fastspec.models.hf import quiet_transformers  # setup, not timed

    with quiet_transformers():
        return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def run_fastspec(model: Any, tok: Any, docs: list[str]) -> dict[int, Any]:
    """All layers into accumulators (final_norm=True so the last layer is the same tensor as
    the baseline's hidden_states[-1])."""
    import fastspec

    return fastspec.extract(model, tok, docs, layers="all", max_length=MAX_LENGTH, batch_size=BATCH,
                            final_norm=True, progress=False)


def run_naive(model: Any, tok: Any, docs: list[str]) -> list[torch.Tensor]:
    """What a user writes: batches in data order padded on the right, the causal LM with
    ``output_hidden_states=True``, the last token of every layer sliced and kept."""
    tok.padding_side = "right"
    rows: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for i in range(0, len(docs), BATCH):
            enc = tok(docs[i:i + BATCH], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            out = model(**enc, output_hidden_states=True)
            last = enc["attention_mask"].sum(1) - 1
            if not rows:
                rows = [[] for _ in out.hidden_states]
            for layer, h in enumerate(out.hidden_states):
                rows[layer].append(h[torch.arange(h.shape[0]), last])
    return [torch.cat(r) for r in rows]


def n_tokens(tok: Any, docs: list[str]) -> int:
    return sum(len(x) for x in tok(docs, truncation=True, max_length=MAX_LENGTH)["input_ids"])


def probe(method: str, path: str) -> dict[str, Any]:
    """One run in this (fresh) process: peak RSS above the footprint before the call."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _bench_methods import _reset_hwm, _status_kb

    model, tok = load(path)
    docs = texts()
    fn = {"fastspec": run_fastspec, "naive_hidden_states": run_naive}[method]
    fn(model, tok, docs[:BATCH])  # warm up: first-call allocations are not the method's
    before = _status_kb("VmRSS")
    exact = _reset_hwm()
    start = time.perf_counter()
    fn(model, tok, docs)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    return {"peak_rss_mb": (peak - before) / 1024, "peak_rss_total_mb": peak / 1024, "hwm_reset": exact,
            "seconds": seconds}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        print(json.dumps(probe(sys.argv[2], sys.argv[3])))
    else:
        sys.exit("usage: _bench_extract.py --probe fastspec|naive_hidden_states MODEL_DIR")
