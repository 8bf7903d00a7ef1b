"""Top-k eigenvector ablation (the paper's Table 2) and multiple-choice evaluation.

At one layer, a forward hook replaces the representation h by its projection on the span of
the top-k eigenvectors U_k of that layer's covariance ("retain"), or on the orthogonal
complement ("remove"), both about the covariance's mean μ:

    retain:  h ← μ + U_k U_kᵀ (h − μ)          remove:  h ← h − U_k U_kᵀ (h − μ)

so retaining every direction (k = d) changes nothing and removing every direction replaces
each representation by μ. The eigenvectors come from fastspec's spectrum of the layer's
last-token representations over a text sample (as the paper measures geometry), or from an
accumulator the caller gives.

Multiple-choice items are scored as lm-eval-harness scores SciQ (``ConfigurableTask.
process_results``, version 0.4): the sum of the choice's token log-probabilities after the
prompt (``accuracy``, lm-eval's ``acc``: the highest sum wins, ties to the first choice), that
sum divided by the choice's length in characters (``acc_norm``) and in UTF-8 bytes
(``acc_bytes``), the choice as written, without the target delimiter (the leading space). Items are
JSON lines ``{"question": …, "choices": [...], "answer": index}`` (extra fields such as
``support`` may appear in the prompt template).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .._settings import Settings, boolean, fault, optional, positive_int, setting
from ..models.data import iter_jsonl
from ..models.extract import extract
from ..models.layout import hidden_size, model_layout, register_layer_hook, resolve_final_norm, resolve_layers
from ..models.scoring import context_limit, continuation_logprobs, load_causal_lm
from ..spectral import CovarianceAccumulator

MODES = ("retain", "remove")
POSITIONS = ("all", "scored")


def _positions(value: Any, name: str) -> str:
    if value not in POSITIONS:
        raise fault(name, f"must be one of {POSITIONS}", value)
    return value


def _modes(value: Any, name: str) -> tuple[str, ...]:
    modes = (value,) if isinstance(value, str) else tuple(value)
    if not modes or any(m not in MODES for m in modes):
        raise fault(name, f"must be a non-empty subset of {MODES}", list(modes))
    return modes


def _ks(value: Any, name: str) -> tuple[int, ...]:
    ks = tuple(value)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise fault(name, "must be positive integers", list(ks))
    return tuple(int(k) for k in ks)


@dataclass(frozen=True)
class AblateSettings(Settings):
    """The settings of :func:`ablate` (and ``fastspec ablate``'s options, generated from them)."""

    layer: int = setting(-1, "0 = the embedding output, l = the output of block l, -1 = the last layer",
                         cli={"type": int})
    ks: Sequence[int] = setting((1, 10, 100), "numbers of top eigenvectors to retain or remove", check=_ks,
                                flag="--k", cli={"type": int, "nargs": "+"})
    modes: Sequence[str] = setting(MODES, "retain and/or remove the top-k eigenvectors", check=_modes,
                                   cli={"nargs": "+", "choices": MODES})
    positions: str = setting("all", "project every token (all), or only the positions whose predictions are scored",
                             check=_positions, cli={"choices": POSITIONS})
    final_norm: bool | None = setting(
        None, "at the last layer, project after the final norm (default where the model has one: HF's "
        "hidden_states[-1], the paper's choice); --no-final-norm: before it", check=optional(boolean),
        cli={"action": argparse.BooleanOptionalAction})
    batch_size: int = setting(16, "texts or items per forward pass", check=positive_int, cli={"type": int})
    max_length: int | None = setting(None, "tokens per basis text (default: the model's context)",
                                     check=optional(positive_int), cli={"type": int})
PROMPT = "Question: {question}\nAnswer:"
CHOICE = " {choice}"


@dataclass(frozen=True)
class Item:
    """One multiple-choice question: the fields for the template, the choices, the answer."""

    fields: dict[str, Any]
    choices: tuple[str, ...]
    answer: int


def read_items(path: str | os.PathLike) -> list[Item]:
    """Items from a ``.jsonl`` file: one JSON object per line with ``question`` (str),
    ``choices`` (≥ 2 strings) and ``answer`` (index into choices); errors name the line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such items file: {path}")
    items = [as_item(obj, where) for where, obj in iter_jsonl(path)]
    if not items:
        raise ValueError(f"{path} holds no items")
    return items


def as_item(obj: Any, where: str) -> Item:
    if isinstance(obj, Item):
        return obj
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: an item is a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("question", "choices", "answer") if k not in obj]
    if missing:
        raise ValueError(f"{where}: item has no {missing[0]!r} field (fields: {', '.join(sorted(obj))})")
    choices = obj["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"{where}: 'choices' must be a list of at least 2 non-empty strings, got {choices!r}")
    answer = obj["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise ValueError(f"{where}: 'answer' must be an index into the {len(choices)} choices, got {answer!r}")
    if not isinstance(obj["question"], str):
        raise ValueError(f"{where}: 'question' must be a string")
    fields = {k: v for k, v in obj.items() if k not in ("choices", "answer")}
    return Item(fields, tuple(choices), answer)


def encode_items(tokenizer: Any, items: Sequence[Item], prompt: str, choice: str, limit: int | None
            ) -> tuple[list[list[int]], list[int], list[tuple[int, int]]]:
    """Every (item, choice) sequence, its prompt length and its choice's length in characters
    and in UTF-8 bytes (the choice text, without the delimiter). As lm-eval-harness does,
    prompt + choice is encoded whole and the prompt's own encoding fixes where the choice
    starts; a longer sequence than the model's context loses tokens on the left."""
    seqs, prompt_lens, lengths = [], [], []
    for k, item in enumerate(items):
        try:
            context = prompt.format(**item.fields)
        except (KeyError, IndexError) as err:
            raise ValueError(f"item {k}: the prompt template {prompt!r} needs field {err}, which the item lacks") from None
        ctx = tokenizer(context)["input_ids"]
        for j, text in enumerate(item.choices):
            cont = choice.format(choice=text)
            whole = tokenizer(context + cont)["input_ids"]
            n_ctx = len(ctx) if whole[:len(ctx)] == ctx else len(tokenizer(context.rstrip())["input_ids"])
            if len(whole) <= n_ctx or n_ctx < 1:
                raise ValueError(f"item {k}, choice {j} ({text!r}): no tokens to score after the prompt")
            if limit is not None and len(whole) > limit:
                cut = len(whole) - limit
                if cut >= n_ctx:
                    raise ValueError(f"item {k}, choice {j}: the choice alone is longer than the model's {limit} positions")
                whole, n_ctx = whole[cut:], n_ctx - cut
            seqs.append(list(whole))
            prompt_lens.append(n_ctx)
            lengths.append((len(text), len(text.encode("utf-8"))))
    return seqs, prompt_lens, lengths


class Projector:
    """Forward hook on one layer that projects its output (see the module docstring).

    Layer indices follow :func:`fastspec.extract`: 0 is the embedding output (the first
    block's input), l ≥ 1 the output of block l, and the last layer is taken after the final
    norm as HF's ``hidden_states[-1]`` (the paper's choice; ``final_norm=False``: before it,
    see :func:`fastspec.models.layout.resolve_final_norm`). Use as a
    context manager; the hook is removed on exit, also when the forward raised."""

    def __init__(self, model: torch.nn.Module, layer: int, *, final_norm: bool | None = None):
        self.layout = model_layout(model)
        self.layer = resolve_layers(layer, self.layout.n_layers)[0]
        self.final_norm = resolve_final_norm(self.layout, final_norm) and self.layer == self.layout.n_layers
        self.mean: torch.Tensor | None = None
        self.basis: torch.Tensor | None = None
        self.mode = "retain"
        self.where: torch.Tensor | None = None  # (batch, seq) positions to project; None: all
        self._handle: Any = None

    def set(self, mean: torch.Tensor | None, basis: torch.Tensor | None, mode: str) -> None:
        """Project onto ``basis`` (d×k, orthonormal columns) about ``mean``; None: no change."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mean, self.basis, self.mode = mean, basis, mode

    def project(self, h: torch.Tensor) -> torch.Tensor:
        if self.basis is None or self.mean is None:
            return h
        mean = self.mean.to(h.device, torch.float64)
        basis = self.basis.to(h.device, torch.float64)
        x = h.double()
        along = ((x - mean) @ basis) @ basis.T
        new = mean + along if self.mode == "retain" else x - along
        if self.where is not None:
            new = torch.where(self.where.to(h.device).unsqueeze(-1), new, x)
        return new.to(h.dtype)

    def __enter__(self) -> "Projector":
        self._handle = register_layer_hook(self.layout, self.layer, self.project, final_norm=self.final_norm)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def accuracies(scores: np.ndarray, lengths: np.ndarray, items: Sequence[Item]) -> dict[str, float]:
    """lm-eval-harness's ``acc`` (here ``accuracy``: argmax of the summed log-likelihood,
    ties to the first choice), ``acc_norm`` (of the sum divided by the choice's length in
    characters) and ``acc_bytes`` (in UTF-8 bytes) over the items; ``scores`` and the
    (characters, bytes) rows of ``lengths`` are flat over items' choices in order."""
    lengths = np.asarray(lengths, dtype=np.float64).reshape(-1, 2)
    hits = np.zeros(3)
    at = 0
    for item in items:
        s = scores[at:at + len(item.choices)]
        n = lengths[at:at + len(item.choices)]
        hits += [int(np.argmax(s)) == item.answer, int(np.argmax(s / n[:, 0])) == item.answer,
                 int(np.argmax(s / n[:, 1])) == item.answer]
        at += len(item.choices)
    return {"accuracy": hits[0] / len(items), "acc_norm": hits[1] / len(items), "acc_bytes": hits[2] / len(items)}


def _prepare(model: Any, tokenizer: Any, items: Any, prompt: str, choice: str
             ) -> tuple[Any, Any, list[Item], list[list[int]], list[int], np.ndarray]:
    model, tokenizer = load_causal_lm(model, tokenizer)
    if tokenizer is None:
        raise ValueError("a tokenizer is needed when the model is given as an object")
    if isinstance(items, (str, os.PathLike)):
        items = read_items(items)
    else:
        items = [as_item(obj, f"items[{k}]") for k, obj in enumerate(items)]
        if not items:
            raise ValueError("no items to evaluate")
    seqs, prompt_lens, lengths = encode_items(tokenizer, items, prompt, choice, context_limit(model))
    return model, tokenizer, items, seqs, prompt_lens, np.asarray(lengths, dtype=np.float64)


def evaluate(model: Any, items: Any, tokenizer: Any = None, *, prompt: str = PROMPT, choice: str = CHOICE,
             batch_size: int = 16, progress: bool | str = False) -> dict[str, float]:
    """Multiple-choice ``accuracy`` and ``acc_norm`` of a causal LM (object or local
    directory) on ``items`` (a ``.jsonl`` path or dicts), with no intervention."""
    model, tokenizer, items, seqs, prompt_lens, lengths = _prepare(model, tokenizer, items, prompt, choice)
    scores = continuation_logprobs(model, seqs, prompt_lens, batch_size=batch_size, progress=progress)
    return {**accuracies(scores, lengths, items), "n_items": len(items), "chance": _chance(items)}


def _chance(items: Sequence[Item]) -> float:
    return float(np.mean([1.0 / len(item.choices) for item in items]))


def eigenbasis(model: Any, tokenizer: Any, basis: Sequence[str] | CovarianceAccumulator, layer: int, k: int, *,
               final_norm: bool | None = None, max_length: int | None = None, batch_size: int = 16,
               progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, CovarianceAccumulator]:
    """The mean μ (float64, d) and the top-``k`` eigenvectors U_k (float64, d×k, by
    descending eigenvalue) of ``layer``'s covariance, with the accumulator they came from:
    for :meth:`Projector.set`. ``basis``: texts, whose last-token representations at
    ``layer`` (an index as :attr:`Projector.layer` holds it; ``final_norm`` as there) are
    extracted with :func:`fastspec.extract` (``max_length`` tokens each, None: the model's
    context), or a :class:`CovarianceAccumulator` of that layer. ``k`` may be at most
    min(n − 1, d): a covariance of n samples has no more non-trivial eigenvectors."""
    acc = basis if isinstance(basis, CovarianceAccumulator) else extract(
        model, tokenizer, basis, layers=[layer], final_norm=final_norm, max_length=max_length,
        batch_size=batch_size, progress="basis" if progress else False)[layer]
    dim = acc.dim
    if dim != hidden_size(model):
        raise ValueError(f"the basis accumulator has dim {dim}, but layer {layer} of this model has "
                         f"{hidden_size(model)} features")
    limit = min(acc.n_samples - 1, dim)
    if k > limit:
        raise ValueError(f"k={k} is more than the {limit} eigenvectors the basis can give at layer {layer} "
                         f"(n={acc.n_samples} samples, d={dim}); use more basis texts or a smaller k")
    return acc.mean, torch.from_numpy(acc.spectrum(top_k_eigenvectors=k).eigenvectors), acc


def ablate(model: Any, items: Any, basis: Sequence[str] | CovarianceAccumulator, tokenizer: Any = None, *,
           settings: AblateSettings | None = None, prompt: str = PROMPT, choice: str = CHOICE, progress: bool = True,
           **options: Any) -> pd.DataFrame:
    """Multiple-choice accuracy with the top-k eigenvectors of a layer retained or removed
    (the paper's Table 2), beside the unablated model.

    At one layer, a forward hook replaces each representation h by its projection on the
    span of the top-k eigenvectors U_k of that layer's covariance (``"retain"``: h ← μ +
    U_k U_kᵀ (h − μ)) or on the orthogonal complement (``"remove"``: h ← h − U_k U_kᵀ (h − μ)),
    about the covariance's mean μ. Items are scored as lm-eval-harness scores SciQ.

    Parameters
    ----------
    model : transformers.PreTrainedModel or str
        A Hugging Face causal LM, or a local directory holding one.
    items : str, os.PathLike or iterable of dict
        A ``.jsonl`` path or dicts, one per question: ``{"question": …, "choices": [...],
        "answer": index}`` (extra fields may appear in the ``prompt`` template).
    basis : sequence of str or fastspec.CovarianceAccumulator
        Texts whose last-token representations at the layer give the covariance (its mean
        and eigenvectors, from fastspec's spectrum), or an accumulator of that layer.
    tokenizer : transformers.PreTrainedTokenizerBase or str, optional
        A tokenizer or a local directory (default: the model's directory; needed when the
        model is given as an object).
    settings : fastspec.analyses.AblateSettings, optional
        The settings; ``options`` apply over them.
    prompt : str, default ``"Question: {question}\\nAnswer:"``
        The template of an item's prompt (``str.format`` with the item's fields).
    choice : str, default ``" {choice}"``
        The template of a choice, after the prompt.
    progress : bool, default True
        Progress bars.
    **options
        Fields of ``AblateSettings`` as keywords (the options of ``fastspec ablate``):

        - ``layer`` (default −1): as in :func:`fastspec.extract`: 0 the embedding output, l
          the output of block l, −1 the last layer, after the final norm like HF's
          ``hidden_states[-1]`` unless ``final_norm=False``.
        - ``ks`` (default (1, 10, 100)): the numbers of top eigenvectors, each at most
          min(n − 1, d) for n basis texts.
        - ``modes`` (default both): ``"retain"`` and/or ``"remove"``.
        - ``positions`` (default ``"all"``): project every token's representation, or
          (``"scored"``) only those whose next-token predictions are scored (the last prompt
          token and the choice's tokens but its last).
        - ``final_norm``: at the last layer, project after the final norm (default where the
          model has one) or before it (False).
        - ``batch_size`` (default 16): texts or items per forward pass.
        - ``max_length``: tokens per basis text (None: the model's context).

    Returns
    -------
    pandas.DataFrame
        One row per (mode, k) and one for ``mode="none"`` (the unablated model), with
        ``accuracy`` (lm-eval's ``acc``: the highest summed log-likelihood wins, ties to the
        first choice), ``acc_norm`` (the sum over the choice's length in characters),
        ``acc_bytes`` (in UTF-8 bytes) and ``n_items``; ``attrs`` hold the ``layer``,
        ``positions``, ``final_norm``, the ``chance`` level, ``dim`` and the number of basis
        samples (``basis_samples``).

    Raises
    ------
    ValueError
        Malformed items (naming the line or item), a prompt template that needs a field an
        item lacks, a k beyond what the basis can give, a basis of another width than the
        layer, or a bad setting (a ``SettingError`` naming it).
    OSError
        A model, tokenizer or items path that does not exist.

    Notes
    -----
    Retaining every direction (k = d) changes nothing, and removing every direction replaces
    each representation by μ. The hook is removed afterwards, also on error.

    Examples
    --------
    A random-init GPT-2 and made-up text, built here (nothing downloaded):

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
    >>> items = [{"question": " ".join(rng.choice(words, 3)), "choices": ["cat", "dog", "mat"],
    ...           "answer": int(rng.integers(3))} for _ in range(8)]
    >>> frame = fastspec.ablate(model, items, texts, tok, ks=(1, 8), progress=False)
    >>> print(frame[["mode", "k", "accuracy", "n_items"]].to_string(index=False))
      mode    k  accuracy  n_items
      none <NA>     0.375        8
    retain    1     0.250        8
    retain    8     0.375        8
    remove    1     0.375        8
    remove    8     0.375        8
    >>> frame.attrs["layer"], frame.attrs["dim"], frame.attrs["basis_samples"]
    (2, 32, 50)
    """
    s = AblateSettings.build(settings, caller="ablate", **options)
    layer, ks, modes, positions, final_norm, batch_size = s.layer, s.ks, s.modes, s.positions, s.final_norm, s.batch_size
    model, tokenizer, items, seqs, prompt_lens, lengths = _prepare(model, tokenizer, items, prompt, choice)
    projector = Projector(model, layer, final_norm=final_norm)
    mean, vectors, acc = eigenbasis(model, tokenizer, basis, projector.layer, max(ks), final_norm=final_norm,
                                    max_length=s.max_length, batch_size=batch_size, progress=progress)
    dim = acc.dim

    def run(desc: str) -> dict[str, float]:
        scores = continuation_logprobs(model, seqs, prompt_lens, batch_size=batch_size, progress=desc if progress else False,
                                       before_forward=lambda scored: setattr(projector, "where", None if positions == "all" else scored))
        return accuracies(scores, lengths, items)

    rows: list[dict[str, Any]] = [{"mode": "none", "k": pd.NA, **run("no ablation")}]
    with projector:
        for mode in modes:
            for k in ks:
                projector.set(mean, vectors[:, :k], mode)
                rows.append({"mode": mode, "k": int(k), **run(f"{mode} k={k}")})
    frame = pd.DataFrame(rows).astype({"k": "Int64"})
    frame["n_items"] = len(items)
    frame.attrs.update(layer=projector.layer, positions=positions, final_norm=projector.final_norm,
                       chance=_chance(items), dim=dim, basis_samples=acc.n_samples)
    return frame
