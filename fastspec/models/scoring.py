"""Log-likelihood of continuations under a Hugging Face causal LM, batched: the model side
of distributional memorization and of multiple-choice evaluation (as lm-eval-harness scores
SciQ: the sum of the continuation tokens' log-probabilities given everything before them)."""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .._files import bar_off
from .batching import pad_batch, position_ids
from .hf import quiet_transformers


def load_causal_lm(model: Any, tokenizer: Any = None) -> tuple[Any, Any]:
    """``model`` and ``tokenizer`` as objects: a local directory is loaded with
    ``AutoModelForCausalLM``/``AutoTokenizer`` (the tokenizer defaults to the model's
    directory); objects pass through (the model is put in eval mode)."""
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        path = os.fspath(model)
        if not os.path.isdir(path):
            raise OSError(f"model directory {path!r} does not exist (a local Hugging Face model directory is expected)")
        if tokenizer is None:
            tokenizer = path
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        path = os.fspath(tokenizer)
        if not os.path.isdir(path):
            raise OSError(f"tokenizer directory {path!r} does not exist")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def context_limit(model: Any) -> int | None:
    """The model's number of positions, if its config states one."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(limit) if limit else None


def continuation_logprobs(model: Any, sequences: Sequence[Sequence[int]], prompt_lengths: Sequence[int], *,
                          batch_size: int = 8, device: Any = None,
                          before_forward: Callable[[torch.Tensor], None] | None = None,
                          progress: bool | str = False) -> np.ndarray:
    """Σ log p(token | everything before it) over the continuation ``seq[prompt_len:]`` of
    each sequence (float64; log-softmax in float32 or better).

    Batches are sorted by length. Where the model takes ``position_ids`` they are padded on
    the left (positions counted from each row's first real token, so the rows are those of
    each sequence run alone), every scored position falls in the last columns, and a model
    that takes ``logits_to_keep`` runs its LM head on those columns only: with a large
    vocabulary the head costs as much as the blocks. Otherwise they are padded on the right
    and every position's logits are computed. ``before_forward(scored)`` is called before
    each forward with the (batch, width) boolean mask of the positions whose next-token
    predictions are scored, e.g. to place an intervention there."""
    if len(sequences) != len(prompt_lengths):
        raise ValueError(f"{len(sequences)} sequences but {len(prompt_lengths)} prompt lengths")
    for i, (seq, p) in enumerate(zip(sequences, prompt_lengths)):
        if not 1 <= int(p) < len(seq):
            raise ValueError(f"sequence {i}: the prompt must hold at least one token and leave at least one "
                             f"to score (prompt {int(p)} of {len(seq)} tokens)")
    takes = inspect.signature(model.forward).parameters
    left = "position_ids" in takes
    trim = left and "logits_to_keep" in takes
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    out = np.empty(len(sequences), dtype=np.float64)
    order = np.argsort([len(s) for s in sequences], kind="stable")
    with torch.inference_mode(), tqdm(total=len(order), disable=bar_off(progress), leave=False,
                                      desc=progress if isinstance(progress, str) else "score") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = pad_batch([sequences[i] for i in idx], 0, "left" if left else "right")
            width = ids.shape[1]
            scored = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                n, p = len(sequences[i]), int(prompt_lengths[i])
                off = width - n if left else 0
                scored[row, off + p - 1:off + n - 1] = True  # the token at t is predicted by the logits at t − 1
            if before_forward is not None:
                before_forward(scored)
            kwargs: dict[str, Any] = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "use_cache": False}
            if left:
                kwargs["position_ids"] = position_ids(mask).to(dev)
            rows, cols = scored.nonzero(as_tuple=True)
            first = int(cols.min()) if trim else 0
            if trim:
                kwargs["logits_to_keep"] = width - first
            logits = model(**kwargs).logits
            picked = logits[rows.to(dev), (cols - first).to(dev)]
            picked = picked.double() if picked.dtype == torch.float64 else picked.float()
            logp = torch.log_softmax(picked, dim=-1).gather(1, ids[rows, cols + 1].unsqueeze(1).to(dev)).squeeze(1)
            sums = torch.zeros(len(idx), dtype=torch.float64).index_add_(0, rows, logp.double().cpu())
            out[idx] = sums.numpy()
            bar.update(len(idx))
    return out
