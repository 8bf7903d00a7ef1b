"""Log-likelihood of continuations under a Hugging Face causal LM, batched: the model side
of distributional memorization and of multiple-choice evaluation (as lm-eval-harness scores
SciQ: the sum of the continuation tokens' log-probabilities given everything before them)."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ._hf import quiet_transformers


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
    each sequence (float64; log-softmax in float32 or better). Batches are sorted by length
    and right-padded. ``before_forward(scored)`` is called before each forward with the
    (batch, width) boolean mask of the positions whose next-token predictions are scored
    (``prompt_len − 1 … len − 2``), e.g. to place an intervention there."""
    if len(sequences) != len(prompt_lengths):
        raise ValueError(f"{len(sequences)} sequences but {len(prompt_lengths)} prompt lengths")
    for i, (seq, p) in enumerate(zip(sequences, prompt_lengths)):
        if not 1 <= int(p) < len(seq):
            raise ValueError(f"sequence {i}: the prompt must hold at least one token and leave at least one "
                             f"to score (prompt {int(p)} of {len(seq)} tokens)")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    out = np.empty(len(sequences), dtype=np.float64)
    order = np.argsort([len(s) for s in sequences], kind="stable")
    with torch.inference_mode(), tqdm(total=len(order), disable=not progress, leave=False,
                                      desc=progress if isinstance(progress, str) else "score") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(sequences[i]) for i in idx)
            ids = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            scored = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                n, p = len(sequences[i]), int(prompt_lengths[i])
                ids[row, :n] = torch.as_tensor(np.asarray(sequences[i], dtype=np.int64))
                mask[row, :n] = 1
                scored[row, p - 1:n - 1] = True  # the token at t is predicted by the logits at t − 1
            if before_forward is not None:
                before_forward(scored)
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits
            rows, cols = scored.nonzero(as_tuple=True)
            picked = logits[rows.to(dev), cols.to(dev)]
            picked = picked.double() if picked.dtype == torch.float64 else picked.float()
            logp = torch.log_softmax(picked, dim=-1).gather(1, ids[rows, cols + 1].unsqueeze(1).to(dev)).squeeze(1)
            sums = torch.zeros(len(idx), dtype=torch.float64).index_add_(0, rows, logp.double().cpu())
            out[idx] = sums.numpy()
            bar.update(len(idx))
    return out
