"""Distributional memorization (Wang et al., ICLR 2025), as the seed paper measures it: the
Spearman correlation, across task items, of each output's ∞-gram score under the pretraining
corpus (:mod:`fastspec.ngram.memorization`, which states the two rules) against the model's
score of it (the sum of the output tokens' log-probabilities under a Hugging Face causal LM,
:func:`fastspec.models.scoring.continuation_logprobs`), with its p-value
(``scipy.stats.spearmanr``)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats

from .._files import existing_file, write_csv
from ..models.checkpoints import Checkpoint, as_checkpoint, load_checkpoint
from ..models.data import iter_jsonl
from ..models.runs import ResultsDir, Sweep, check_distinct
from ..models.settings import MemorizationSettings
from ..models.scoring import context_limit, continuation_logprobs, load_causal_lm
from ..ngram import InfGramIndex
from ..ngram.memorization import encode_items, output_scores

__all__ = ["MemorizationResult", "memorization", "memorization_trace", "suffix_lengths"]

MEMO_DIR, MEMO_TABLE, MEMO_CONFIG, SUFFIX_TABLE = "memorization", "memorization.csv", "memorization_config.json", \
    "suffix_lengths.csv"
#: The paper's Table 1 bins of the ∞-gram's effective n over the scored output tokens.
SUFFIX_BINS = ("<=3", "4", "5", "6", "7", "8", ">8")


@dataclass(frozen=True)
class MemorizationResult:
    """Distributional memorization of a model on a set of items: what
    `fastspec.memorization` returns.

    Parameters
    ----------
    rho : float
        Spearman ρ of the ∞-gram scores against the model scores, over ``n_items`` items (NaN
        when either side is constant: it has no ranking).
    pvalue : float
        Its two-sided p-value (``scipy.stats.spearmanr``).
    n_items : int
        Items in the correlation.
    n_excluded : int
        Items left out (``rule="wang"``: every output token had ∞-gram probability 0).
    rule : str
        ``"wang"`` (the paper's) or ``"all"``.
    infgram_scores : numpy.ndarray
        Per item, Σ log p_∞-gram over the output tokens (NaN where excluded).
    model_scores : numpy.ndarray
        Per item, Σ log p_model over the output tokens.
    output_lengths : numpy.ndarray
        Per item, the output's number of tokens.

    Examples
    --------
    >>> result = fastspec.MemorizationResult(
    ...     rho=0.5, pvalue=0.39, n_items=5, n_excluded=1, rule="wang",
    ...     infgram_scores=np.array([-1.1, np.nan, -0.7, -2.3, -0.2, -1.6]),
    ...     model_scores=np.array([-9.0, -7.5, -8.1, -12.0, -6.2, -8.8]), output_lengths=np.array([2, 2, 1, 3, 1, 2]))
    >>> result
    MemorizationResult(rho=0.5, pvalue=0.39, n_items=5, n_excluded=1, rule='wang')
    >>> result.to_dict()["infgram_scores"]  # JSON: NaN as None
    [-1.1, None, -0.7, -2.3, -0.2, -1.6]
    """

    rho: float
    pvalue: float
    n_items: int          # items in the correlation
    n_excluded: int       # items left out (rule="wang": every output token had ∞-gram prob 0)
    rule: str
    infgram_scores: np.ndarray = field(repr=False)   # per item (NaN where excluded)
    model_scores: np.ndarray = field(repr=False)     # per item: Σ log p_model(output token)
    output_lengths: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON values.

        Returns
        -------
        dict
            Every field by name, the arrays as lists (NaN scores as None).
        """
        return {"rho": self.rho, "pvalue": self.pvalue, "n_items": self.n_items, "n_excluded": self.n_excluded,
                "rule": self.rule, "infgram_scores": [None if math.isnan(v) else v for v in self.infgram_scores.tolist()],
                "model_scores": self.model_scores.tolist(), "output_lengths": self.output_lengths.tolist()}

def memorization(items: Iterable[Any], index: InfGramIndex | str | os.PathLike, model: Any, tokenizer: Any = None, *,
                 settings: MemorizationSettings | None = None, **options: Any) -> MemorizationResult:
    """Distributional memorization of ``model`` on ``items`` against the corpus of ``index``.

    Wang et al. (ICLR 2025), as the seed paper measures it: the Spearman correlation, across
    items, of each output's ∞-gram score under the pretraining corpus (the sum of the log
    ∞-gram probabilities of its tokens, with the rule's treatment of zeros) against the
    model's score of it (the sum of the output tokens' log-probabilities).

    Parameters
    ----------
    items : str, os.PathLike or iterable
        A ``.jsonl`` path (errors then name its file and line), or (prompt, output) pairs or
        dicts with ``prompt`` and ``output`` keys, as strings (tokenised with ``tokenizer``,
        no special tokens) or token-id sequences. The paper formats TriviaQA as
        ``("Question: {q}? Answer:", " {a}")``. At least 3 must have a defined ∞-gram score.
    index : fastspec.InfGramIndex, str or os.PathLike
        The ∞-gram index of the pretraining corpus, or its directory; built with the same
        tokenizer.
    model : transformers.PreTrainedModel or str
        A Hugging Face causal LM, or a local directory holding one.
    tokenizer : transformers.PreTrainedTokenizerBase or str, optional
        A tokenizer or a local directory (default: the model's directory).
    settings : fastspec.MemorizationSettings, optional
        The settings; ``options`` apply over them.
    **options
        Fields of `fastspec.MemorizationSettings` as keywords: ``rule`` (``"wang"``, the
        paper's: zero ∞-gram probabilities dropped and items whose every one is zero left
        out; ``"all"``: no dropping), ``batch_size``, ``device``, ``threads``.

    Returns
    -------
    fastspec.MemorizationResult
        Spearman ρ and its p-value over the items with a defined ∞-gram score, and the
        per-item scores.

    Raises
    ------
    ValueError
        Malformed items (naming the item, or the file and line), an item longer than the
        model's context, fewer than 3 items with a defined ∞-gram score, or a bad setting.
    OSError
        A model, tokenizer or items path that does not exist.
    TypeError
        An option that is no field of `fastspec.MemorizationSettings`.

    See Also
    --------
    fastspec.memorization_trace : The same at every checkpoint of a run, resumable.

    Examples
    --------
    A random-init GPT-2 and a corpus of made-up text, built here (nothing downloaded):

    >>> import transformers
    >>> from fastspec.models.tiny import train_tokenizer
    >>> rng = np.random.default_rng(0)
    >>> words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away"]
    >>> texts = [" ".join(rng.choice(words, 8)) for _ in range(50)]
    >>> tok = train_tokenizer(texts, vocab_size=300)
    >>> _ = torch.manual_seed(0)
    >>> model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
    ...     vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
    ...     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    >>> index = fastspec.InfGramIndex.build([tok(t)["input_ids"] for t in texts], "index",
    ...                                     vocab_size=len(tok), progress=False)
    >>> items = [(" ".join(rng.choice(words, 3)), " " + " ".join(rng.choice(words, 2))) for _ in range(12)]
    >>> items[0]
    ('away sat far', ' cat on')
    >>> result = fastspec.memorization(items, index, model, tok)
    >>> result.rule, result.n_items, result.n_excluded  # unseen continuations are left out
    ('wang', 5, 7)
    >>> round(result.rho, 2)  # a random model has not memorized this corpus
    -0.05
    >>> fastspec.memorization(items, index, model, tok, rule="all").n_items
    12
    """
    s = MemorizationSettings.build(settings, caller="memorization", **options)
    item_list, names = _item_list(items)  # a missing items file before anything is loaded
    idx = _as_index(index)
    model, tokenizer = load_causal_lm(model, tokenizer)
    seqs, prompt_lens = _encoded(item_list, names, tokenizer, model)
    infgram = output_scores(idx.score(seqs, threads=s.threads), prompt_lens, s.rule)
    return _correlate(model, seqs, prompt_lens, infgram, s.rule, batch_size=s.batch_size, device=s.device)


def _as_index(index: InfGramIndex | str | os.PathLike) -> InfGramIndex:
    return index if isinstance(index, InfGramIndex) else InfGramIndex(index)


def _encoded(items: Iterable[Any], names: list[str] | None, tokenizer: Any, model: Any
             ) -> tuple[list[np.ndarray], list[int]]:
    seqs, prompt_lens = encode_items(items, tokenizer, names)
    limit = context_limit(model)
    for k, seq in enumerate(seqs):
        if limit is not None and len(seq) > int(limit):
            raise ValueError(f"{names[k] if names else f'item {k}'}: prompt + output is {len(seq)} tokens, longer than the model's "
                             f"{int(limit)} positions")
    return seqs, prompt_lens


def _correlate(model: Any, seqs: list[np.ndarray], prompt_lens: list[int], infgram: np.ndarray, rule: str, *,
               batch_size: int, device: Any) -> MemorizationResult:
    """Score the items under ``model`` and correlate with their ∞-gram scores ``infgram``."""
    model_scores = continuation_logprobs(model, seqs, prompt_lens, batch_size=batch_size, device=device)
    keep = ~np.isnan(infgram)
    if keep.sum() < 3:
        raise ValueError(f"only {int(keep.sum())} of {len(seqs)} items have a defined ∞-gram score under rule={rule!r}; "
                         "a Spearman correlation needs at least 3")
    a, b = infgram[keep], model_scores[keep]
    # A constant side has no ranking: ρ is undefined (NaN, which scipy returns with a warning).
    rho, pvalue = math.nan, math.nan
    if len(np.unique(a)) > 1 and len(np.unique(b)) > 1:
        res = stats.spearmanr(a, b)
        rho, pvalue = float(res.statistic), float(res.pvalue)
    return MemorizationResult(rho=rho, pvalue=pvalue, n_items=int(keep.sum()),
                              n_excluded=int((~keep).sum()), rule=rule, infgram_scores=infgram, model_scores=model_scores,
                              output_lengths=np.array([len(s) - p for s, p in zip(seqs, prompt_lens)]))


def _item_list(items: Any) -> tuple[list[Any], list[str] | None]:
    """The items, and from a ``.jsonl`` path each one's ``file:line`` (for errors; else None)."""
    names = None
    if isinstance(items, (str, os.PathLike)):
        path = existing_file(items, "items file (.jsonl)")
        pairs = list(iter_jsonl(path))
        names, items = [where for where, _ in pairs], [record for _, record in pairs]
        if not items:
            raise ValueError(f"{path}: no items (one JSON object per line)")
    items = list(items)
    if not items:
        raise ValueError("no items: memorization needs at least 3 (prompt, output) items")
    return items, names


def suffix_lengths(items: Iterable[Any], index: InfGramIndex | str | os.PathLike, tokenizer: Any = None, *,
                   threads: int = 1) -> Any:
    """The paper's Table 1: the share of scored output tokens whose ∞-gram probability came
    from an n-gram of effective n ≤ 3, 4, 5, 6, 7, 8 and > 8 (n = the longest matching
    suffix of the context + 1, infini-gram's ``suffix_len + 1``). One row, ``bin`` and
    ``share`` columns, plus ``n_tokens``. It depends on the corpus and the items only, not
    on any model, so a trace over checkpoints has one table for all of them."""
    item_list, names = _item_list(items)
    seqs, prompt_lens = encode_items(item_list, tokenizer, names)
    return _suffix_frame(_suffix_counts(_as_index(index).score(seqs, threads=threads), prompt_lens))


def _suffix_counts(scores: Sequence[Any], prompt_lens: Sequence[int]) -> list[int]:
    """Scored tokens per bin of :data:`SUFFIX_BINS`."""
    n = np.concatenate([s.effective_n[p:] for s, p in zip(scores, prompt_lens)])
    return [int((n <= 3).sum()), *(int((n == k).sum()) for k in range(4, 9)), int((n > 8).sum())]


def _suffix_frame(counts: Sequence[int]) -> Any:
    import pandas as pd

    total = int(sum(counts))
    return pd.DataFrame({"bin": list(SUFFIX_BINS), "share": np.array(counts) / total, "n_tokens": total})


def memorization_trace(checkpoints: Sequence[Any], items: Any, index: InfGramIndex | str | os.PathLike,
                       out_dir: str | os.PathLike, *, settings: MemorizationSettings | None = None,
                       progress: bool = True, **options: Any) -> Any:
    """`fastspec.memorization` at every checkpoint, written as it goes and resumable like a
    trace (the same results-directory loop as `fastspec.trace`).

    Parameters
    ----------
    checkpoints
        Local directories, ``"hub/id@revision"`` or (id, revision) pairs, as
        :func:`fastspec.trace` takes them.
    items
        A ``.jsonl`` path or (prompt, output) items.
    index
        The ∞-gram index of the pretraining corpus, or its directory.
    out_dir
        The results directory: ``memorization/<name>-<hash>.json`` per checkpoint (written
        last: its presence means done), ``memorization.csv`` (``checkpoint``, ``step``,
        ``rho``, ``pvalue``, ``n_items``, ``n_excluded``, ``rule``, rewritten after each),
        ``suffix_lengths.csv`` (``fastspec.analyses.suffix_lengths`` per checkpoint, in the tokens its
        tokenizer makes of the items, and ``pooled`` over all of them; a suite that shares one
        tokenizer has the same rows for every checkpoint) and ``memorization_config.json``
        (the index, the items' SHA-256 and the rule: a resumed run with others is refused once
        a checkpoint is done).
    settings
        A `fastspec.MemorizationSettings`; ``options`` apply over it.
    progress
        A progress bar.
    **options
        Fields of `fastspec.MemorizationSettings` as keywords (``rule``, ``batch_size``,
        ``device``, ``threads``), as `fastspec.memorization` takes them.

    Returns
    -------
    pandas.DataFrame
        The table, in training order: ``checkpoint``, ``step``, ``index``, ``rho``,
        ``pvalue``, ``n_items``, ``n_excluded``, ``rule``.

    Raises
    ------
    ValueError
        No checkpoints, one twice, malformed items, or a resumed run with another index,
        items or rule once a checkpoint is done.
    fastspec.CheckpointError
        A checkpoint that cannot be loaded.

    Examples
    --------
    A random-init GPT-2 and a corpus of made-up text, built here (nothing downloaded):

    >>> import transformers
    >>> from fastspec.models.tiny import train_tokenizer
    >>> rng = np.random.default_rng(0)
    >>> words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away"]
    >>> texts = [" ".join(rng.choice(words, 8)) for _ in range(50)]
    >>> tok = train_tokenizer(texts, vocab_size=300)
    >>> _ = torch.manual_seed(0)
    >>> model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
    ...     vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
    ...     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    >>> index = fastspec.InfGramIndex.build([tok(t)["input_ids"] for t in texts], "index",
    ...                                     vocab_size=len(tok), progress=False)
    >>> items = [(" ".join(rng.choice(words, 3)), " " + " ".join(rng.choice(words, 2))) for _ in range(12)]
    >>> items[0]
    ('away sat far', ' cat on')

    Two checkpoints as local directories, model and tokenizer each:

    >>> for step in (0, 100):
    ...     _ = torch.manual_seed(step)
    ...     transformers.GPT2LMHeadModel(model.config).save_pretrained(f"step{step}")
    ...     _ = tok.save_pretrained(f"step{step}")
    >>> table = fastspec.memorization_trace(["step0", "step100"], items, index, "results", progress=False)
    >>> print(table[["checkpoint", "step", "n_items", "n_excluded", "rule"]].to_string(index=False))
    checkpoint  step  n_items  n_excluded rule
         step0     0        5           7 wang
       step100   100        5           7 wang
    >>> import os
    >>> sorted(os.listdir("results"))
    ['memorization', 'memorization.csv', 'memorization_config.json', 'suffix_lengths.csv']
    """
    import pandas as pd

    s = MemorizationSettings.build(settings, caller="memorization_trace", **options)
    ckpts = [as_checkpoint(c) for c in checkpoints]
    if not ckpts:
        raise ValueError("no checkpoints to score")
    check_distinct(ckpts)
    item_list, names = _item_list(items)
    idx = _as_index(index)
    out_dir = os.fspath(out_dir)
    # The index by its path and by what it holds: an index rebuilt in place from another corpus
    # has the same path and another fingerprint.
    config = {"index": os.path.realpath(idx.path), "index_fingerprint": idx.fingerprint, "n_items": len(item_list),
              "rule": s.rule,
              "items_sha256": hashlib.sha256(json.dumps(item_list, sort_keys=True, default=str).encode()).hexdigest()}
    results = ResultsDir(out_dir, config, tuple(config), record_dir=MEMO_DIR, config_file=MEMO_CONFIG,
                         what="memorization scores")
    scorer = _Scorer(results, s, item_list, names, idx)
    # Hub checkpoints: by commit, the next one fetched ahead.
    with Sweep(results, prefetch=1, progress=progress, desc="memorization", after_each=scorer.write_tables) as sweep:
        sweep.run(sweep.pending(ckpts), scorer.score)
    return pd.read_csv(os.path.join(out_dir, MEMO_TABLE))


class _Scorer:
    """One checkpoint of :func:`memorization_trace` at a time: its record, then the tables.
    The ∞-gram side depends on the items' token ids only: one query pass per distinct
    tokenisation (a suite's checkpoints share one tokenizer), for the scores and Table 1."""

    def __init__(self, results: ResultsDir, s: MemorizationSettings, item_list: list[Any], names: list[str] | None,
                 idx: InfGramIndex):
        self.results, self.s, self.item_list, self.names, self.idx = results, s, item_list, names, idx
        self.infgram: dict[bytes, tuple[np.ndarray, list[int]]] = {}  # tokenisation → (scores, Table 1 counts)

    def score(self, i: int, ckpt: Checkpoint, fetched: tuple[str, str] | None, waited: float) -> None:
        path, commit = fetched if fetched is not None else (None, None)
        s = self.s
        model, tok = load_checkpoint(ckpt, device=s.device or "cpu", causal_lm=True, path=path)
        seqs, prompt_lens = _encoded(self.item_list, self.names, tok, model)
        key = hashlib.sha256(b"".join(np.asarray([len(x), p], np.int64).tobytes() + x.tobytes()
                                      for x, p in zip(seqs, prompt_lens))).digest()
        if key not in self.infgram:
            scores = self.idx.score(seqs, threads=s.threads)
            self.infgram[key] = (output_scores(scores, prompt_lens, s.rule), _suffix_counts(scores, prompt_lens))
        outputs, counts = self.infgram[key]
        res = _correlate(model, seqs, prompt_lens, outputs, s.rule, batch_size=s.batch_size, device=s.device)
        self.results.write(ckpt, {"index": i, "commit": commit, "rho": res.rho, "pvalue": res.pvalue,
                                  "n_items": res.n_items, "n_excluded": res.n_excluded, "rule": res.rule,
                                  "suffix_counts": counts})

    def write_tables(self) -> None:
        """``memorization.csv`` and ``suffix_lengths.csv`` of every record so far."""
        import pandas as pd

        out_dir = self.results.path
        ordered = sorted(self.results.records(), key=lambda r: (r["step"] is None, r["step"] or 0, r["index"]))
        table = pd.DataFrame(ordered)[["checkpoint", "step", "index", "rho", "pvalue", "n_items", "n_excluded", "rule"]]
        write_csv(table, os.path.join(out_dir, MEMO_TABLE))
        with_counts = [r for r in ordered if r.get("suffix_counts")]
        pooled = np.sum([r["suffix_counts"] for r in with_counts], axis=0)
        write_csv(pd.concat([_suffix_frame(r["suffix_counts"]).assign(checkpoint=r["checkpoint"]) for r in with_counts]
                            + [_suffix_frame(pooled).assign(checkpoint="pooled")])[["checkpoint", "bin", "share", "n_tokens"]],
                  os.path.join(out_dir, SUFFIX_TABLE))
