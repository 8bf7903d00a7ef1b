"""Distributional memorization (Wang et al., "Generalization v.s. Memorization: Tracing Language
Models' Capabilities Back to Pretraining Data", ICLR 2025), the corpus side: task items as
(prompt, output) token ids, and the ∞-gram score of each output (each output token's ∞-gram
probability given everything before it, from an index of the pretraining corpus). The model
side and the correlation of the two are :func:`fastspec.memorization`
(``fastspec.analyses.memorization``).

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
from typing import Any, Iterable, Sequence

import numpy as np

from .index import InfGramIndex

RULES = ("wang", "all")


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return rule


def infgram_output_score(probs: np.ndarray, rule: str = "wang") -> float:
    """Σ log p over the output tokens' ∞-gram probabilities ``probs`` under ``rule`` (see module)."""
    check_rule(rule)
    p = np.asarray(probs, dtype=np.float64)
    if p.size == 0:
        raise ValueError("an output needs at least one token")
    if rule == "wang":
        nonzero = p[p > 0]
        return float(np.log(nonzero).sum()) if nonzero.size else math.nan
    with np.errstate(divide="ignore"):
        return float(np.log(p).sum())


def _name(names: Sequence[str] | None, k: int) -> str:
    return names[k] if names is not None else f"item {k}"


def memorization_pairs(items: Iterable[Any], names: Sequence[str] | None = None) -> list[tuple[Any, Any]]:
    """Each item as (prompt, output); ``names`` (default ``item k``) name them in errors, e.g.
    ``items.jsonl:3`` for items read from a file."""
    out = []
    for k, item in enumerate(items):
        if isinstance(item, dict):
            prompt = item.get("prompt", item.get("input"))
            output = item.get("output", item.get("answer"))
            if prompt is None or output is None:
                raise ValueError(f"{_name(names, k)}: a dict item needs 'prompt' (or 'input') and 'output' (or 'answer') keys, got {sorted(item)}")
        else:
            try:
                prompt, output = item
            except (TypeError, ValueError):
                raise ValueError(f"{_name(names, k)}: expected a (prompt, output) pair or a dict, got {item!r}") from None
        out.append((prompt, output))
    if not out:
        raise ValueError("no items: memorization needs at least 3 (prompt, output) items")
    return out


def encode_part(tokenizer: Any, part: Any, name: str, what: str) -> np.ndarray:
    """The token ids of one item's ``what`` (prompt or output); ``name`` names the item in errors."""
    if isinstance(part, str):
        if tokenizer is None:
            raise ValueError(f"{name}: text items need a tokenizer")
        ids = tokenizer(part, add_special_tokens=False)["input_ids"]
    else:
        ids = part
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name}: the {what} is empty after tokenisation")
    return arr


def encode_items(items: Iterable[Any], tokenizer: Any = None, names: Sequence[str] | None = None
                 ) -> tuple[list[np.ndarray], list[int]]:
    """Each item's prompt + output token ids, and each prompt's length: strings are tokenised
    with ``tokenizer`` (no special tokens), token-id sequences are taken as they are.
    ``names``: how errors name each item (default ``item k``; ``file:line`` for a file)."""
    seqs, prompt_lens = [], []
    for k, (prompt, output) in enumerate(memorization_pairs(items, names)):
        p = encode_part(tokenizer, prompt, _name(names, k), "prompt")
        o = encode_part(tokenizer, output, _name(names, k), "output")
        seqs.append(np.concatenate([p, o]))
        prompt_lens.append(p.shape[0])
    return seqs, prompt_lens


def infgram_scores(index: InfGramIndex, sequences: Sequence[np.ndarray], prompt_lengths: Sequence[int], *,
                   rule: str = "wang", threads: int = 1) -> np.ndarray:
    """Per sequence, :func:`infgram_output_score` of the ∞-gram probabilities of its tokens
    after the prompt (NaN where ``rule="wang"`` leaves nothing to score)."""
    check_rule(rule)
    return output_scores(index.score(sequences, threads=threads), prompt_lengths, rule)


def output_scores(scores: Sequence[Any], prompt_lengths: Sequence[int], rule: str = "wang") -> np.ndarray:
    """:func:`infgram_scores` from the ``SequenceScore`` list that ``InfGramIndex.score`` returned."""
    return np.array([infgram_output_score(s.prob[p:], rule) for s, p in zip(scores, prompt_lengths)])
