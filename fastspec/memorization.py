"""Distributional memorization (Wang et al., "Generalization v.s. Memorization: Tracing Language
Models' Capabilities Back to Pretraining Data", ICLR 2025), as the seed paper measures it.

For task items (prompt, output): the ∞-gram score of the output (each output token's ∞-gram
probability given everything before it, from an index of the pretraining corpus) and the
model's score (the sum of the output tokens' log-probabilities under a Hugging Face causal
LM), then their Spearman correlation across items, with its p-value (``scipy.stats.spearmanr``).

Two rules for the ∞-gram score, both sums of natural-log probabilities over output tokens:

- ``rule="wang"`` (the paper's scripts, exactly): tokens with ∞-gram probability 0 are
  dropped (treated as probability 1); an item whose output tokens all have probability 0
  scores NaN and is left out of the correlation.
- ``rule="all"`` (no dropping): every output token counts; a zero probability makes the
  item's score −∞, which ranks it below every item with a finite score (ties share a rank).
  Dropping zeros rewards an output for containing unseen tokens, which this rule does not.

Prompt and output are tokenised separately (no special tokens) and concatenated, so that the
output tokens are the same on both sides whatever the tokenizer does at the seam.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .infgram import InfGramIndex
from .scoring import context_limit, continuation_logprobs, load_causal_lm

__all__ = ["MemorizationResult", "memorization", "infgram_output_score"]

RULES = ("wang", "all")


@dataclass(frozen=True)
class MemorizationResult:
    """Spearman ρ of the ∞-gram scores against the model scores, over ``n_items`` items."""

    rho: float
    pvalue: float
    n_items: int          # items in the correlation
    n_excluded: int       # items left out (rule="wang": every output token had ∞-gram prob 0)
    rule: str
    infgram_scores: np.ndarray = field(repr=False)   # per item (NaN where excluded)
    model_scores: np.ndarray = field(repr=False)     # per item: Σ log p_model(output token)
    output_lengths: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"rho": self.rho, "pvalue": self.pvalue, "n_items": self.n_items, "n_excluded": self.n_excluded,
                "rule": self.rule, "infgram_scores": [None if math.isnan(v) else v for v in self.infgram_scores.tolist()],
                "model_scores": self.model_scores.tolist(), "output_lengths": self.output_lengths.tolist()}


def infgram_output_score(probs: np.ndarray, rule: str = "wang") -> float:
    """Σ log p over the output tokens' ∞-gram probabilities ``probs`` under ``rule`` (see module)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    p = np.asarray(probs, dtype=np.float64)
    if p.size == 0:
        raise ValueError("an output needs at least one token")
    if rule == "wang":
        nonzero = p[p > 0]
        return float(np.log(nonzero).sum()) if nonzero.size else math.nan
    with np.errstate(divide="ignore"):
        return float(np.log(p).sum())


def _items(items: Iterable[Any]) -> list[tuple[Any, Any]]:
    out = []
    for k, item in enumerate(items):
        if isinstance(item, dict):
            prompt = item.get("prompt", item.get("input"))
            output = item.get("output", item.get("answer"))
            if prompt is None or output is None:
                raise ValueError(f"item {k}: a dict item needs 'prompt' (or 'input') and 'output' (or 'answer') keys, got {sorted(item)}")
        else:
            try:
                prompt, output = item
            except (TypeError, ValueError):
                raise ValueError(f"item {k}: expected a (prompt, output) pair or a dict, got {item!r}") from None
        out.append((prompt, output))
    if not out:
        raise ValueError("no items: memorization needs at least 3 (prompt, output) items")
    return out


def _encode(tokenizer: Any, part: Any, k: int, what: str) -> np.ndarray:
    if isinstance(part, str):
        if tokenizer is None:
            raise ValueError(f"item {k}: text items need a tokenizer")
        ids = tokenizer(part, add_special_tokens=False)["input_ids"]
    else:
        ids = part
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"item {k}: the {what} is empty after tokenisation")
    return arr


def memorization(items: Iterable[Any], index: InfGramIndex | str | os.PathLike, model: Any, tokenizer: Any = None, *,
                 rule: str = "wang", batch_size: int = 8, device: Any = None, threads: int = 1) -> MemorizationResult:
    """Distributional memorization of ``model`` on ``items`` against the corpus of ``index``.

    ``items``: (prompt, output) pairs or dicts with ``prompt``/``output`` keys, as strings
    (tokenised with ``tokenizer``) or token-id sequences; the paper formats TriviaQA as
    ``("Question: {q}? Answer:", " {a}")``. ``model``: a Hugging Face causal LM or a local
    directory holding one; ``tokenizer``: a tokenizer or a local directory (default: the
    model's directory). The index must have been built with the same tokenizer. ``rule``:
    ``"wang"`` (the paper's) or ``"all"`` (see the module docstring). Returns Spearman ρ and
    its p-value over the items with a defined ∞-gram score.
    """
    from scipy import stats

    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    idx = index if isinstance(index, InfGramIndex) else InfGramIndex(index)
    model, tokenizer = load_causal_lm(model, tokenizer)
    pairs = _items(items)
    seqs, prompt_lens = [], []
    for k, (prompt, output) in enumerate(pairs):
        p = _encode(tokenizer, prompt, k, "prompt")
        o = _encode(tokenizer, output, k, "output")
        seqs.append(np.concatenate([p, o]))
        prompt_lens.append(p.shape[0])
    limit = context_limit(model)
    for k, seq in enumerate(seqs):
        if limit is not None and len(seq) > int(limit):
            raise ValueError(f"item {k}: prompt + output is {len(seq)} tokens, longer than the model's "
                             f"{int(limit)} positions")
    scores = idx.score(seqs, threads=threads)
    infgram = np.array([infgram_output_score(s.prob[p:], rule) for s, p in zip(scores, prompt_lens)])
    model_scores = continuation_logprobs(model, seqs, prompt_lens, batch_size=batch_size, device=device)
    keep = ~np.isnan(infgram)
    if keep.sum() < 3:
        raise ValueError(f"only {int(keep.sum())} of {len(pairs)} items have a defined ∞-gram score under rule={rule!r}; "
                         "a Spearman correlation needs at least 3")
    res = stats.spearmanr(infgram[keep], model_scores[keep])
    return MemorizationResult(rho=float(res.statistic), pvalue=float(res.pvalue), n_items=int(keep.sum()),
                              n_excluded=int((~keep).sum()), rule=rule, infgram_scores=infgram, model_scores=model_scores,
                              output_lengths=np.array([len(s) - p for s, p in zip(seqs, prompt_lens)]))
