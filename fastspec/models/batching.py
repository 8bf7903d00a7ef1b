"""Token batches for a model's forward pass: tokenisation, length-sorted batches, padding
on either side, and position ids from the attention mask (so left and right padding give
the same rows)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text with the tokenizer's own special tokens, truncated to
    ``max_length``."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to extract from")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, not a string")
    ids = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise ValueError(f"{len(empty)} texts tokenise to nothing (first: texts[{empty[0]}] = {texts[empty[0]]!r})")
    return [list(x) for x in ids]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length, longest first (an out-of-memory shows at once), cut into
    batches: padding is at most the length spread inside one batch."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask of a batch padded on ``side`` ("right" or "left")."""
    if side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, sl] = torch.as_tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2… over each row's real tokens whichever side the padding is on."""
    return (mask.cumsum(1) - 1).clamp_(min=0)


def iter_batches(tokens: Sequence[Sequence[int]], batch_size: int, shard: tuple[int, int] | None = None) -> Iterator[list[int]]:
    """The length-sorted batches, or this rank's share of them (every ``world``-th batch)."""
    batches = length_batches([len(t) for t in tokens], batch_size)
    rank, world = shard or (0, 1)
    if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
    return iter(batches[rank::world])
