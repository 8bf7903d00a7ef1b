"""Distributional memorization (Wang et al., ICLR 2025), as the seed paper measures it: the
Spearman correlation, across task items, of each output's ∞-gram score under the pretraining
corpus (:mod:`fastspec.ngram.memorization`, which states the two rules) against the model's
score of it (the sum of the output tokens' log-probabilities under a Hugging Face causal LM,
:func:`fastspec.models.scoring.continuation_logprobs`), with its p-value
(``scipy.stats.spearmanr``)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from scipy import stats

from ..models.scoring import context_limit, continuation_logprobs, load_causal_lm
from ..ngram import InfGramIndex
from ..ngram.memorization import check_rule, encode_items, infgram_scores

__all__ = ["MemorizationResult", "memorization"]


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
    check_rule(rule)
    idx = index if isinstance(index, InfGramIndex) else InfGramIndex(index)
    model, tokenizer = load_causal_lm(model, tokenizer)
    seqs, prompt_lens = encode_items(items, tokenizer)
    limit = context_limit(model)
    for k, seq in enumerate(seqs):
        if limit is not None and len(seq) > int(limit):
            raise ValueError(f"item {k}: prompt + output is {len(seq)} tokens, longer than the model's "
                             f"{int(limit)} positions")
    infgram = infgram_scores(idx, seqs, prompt_lens, rule=rule, threads=threads)
    model_scores = continuation_logprobs(model, seqs, prompt_lens, batch_size=batch_size, device=device)
    keep = ~np.isnan(infgram)
    if keep.sum() < 3:
        raise ValueError(f"only {int(keep.sum())} of {len(seqs)} items have a defined ∞-gram score under rule={rule!r}; "
                         "a Spearman correlation needs at least 3")
    res = stats.spearmanr(infgram[keep], model_scores[keep])
    return MemorizationResult(rho=float(res.statistic), pvalue=float(res.pvalue), n_items=int(keep.sum()),
                              n_excluded=int((~keep).sum()), rule=rule, infgram_scores=infgram, model_scores=model_scores,
                              output_lengths=np.array([len(s) - p for s, p in zip(seqs, prompt_lens)]))
