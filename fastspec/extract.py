"""Pooled representations from Hugging Face models, fed straight into accumulators.

One forward pass feeds one :class:`~fastspec.CovarianceAccumulator` per requested layer.
Hooks on the transformer blocks keep only the pooled rows (never every position of every
layer), and the pass stops after the last requested layer: no final norm unless asked, no
LM head, no logits. Sequences are sorted by length into batches, so padding is small, and
position ids come from the attention mask, so left and right padding give the same rows.

Layer numbering follows Hugging Face's ``hidden_states``: 0 is the input of the first block
(the embedding output), ``l`` is the output of block ``l`` (1-based), up to L blocks. HF's
``hidden_states[L]`` of a causal LM has the final norm applied; ``final_norm=True`` gives
that, the default gives the block's own output (the paper's code used the former).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm import tqdm

from .accumulator import CovarianceAccumulator

POOLINGS = ("last", "mean", "cls")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm")


class _StopForward(Exception):
    """Raised by the hook of the last needed module, so the rest of the model never runs."""


@dataclass(frozen=True)
class ModelLayout:
    """Where a Hugging Face model keeps what extraction hooks into."""

    base: torch.nn.Module
    blocks: torch.nn.ModuleList
    final_norm: torch.nn.Module | None
    context: int | None
    takes_position_ids: bool

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def model_layout(model: torch.nn.Module) -> ModelLayout:
    """Find the block list (the ModuleList with ``num_hidden_layers`` entries), the final norm
    and the context length of a Hugging Face model, with or without its LM head."""
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} is not a Hugging Face model (it has no .config)")
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text_config, "num_hidden_layers", None)
    base = getattr(model, "base_model", model)
    lists = [m for _, m in base.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]
    if n is None or not lists:
        raise TypeError(f"cannot find the transformer blocks of {type(model).__name__}: no ModuleList with "
                        f"config.num_hidden_layers={n} entries")
    norm = next((getattr(base, name) for name in FINAL_NORM_NAMES if isinstance(getattr(base, name, None), torch.nn.Module)), None)
    context = getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)
    takes_pos = "position_ids" in inspect.signature(base.forward).parameters
    return ModelLayout(base, lists[0], norm, int(context) if context else None, takes_pos)


def resolve_layers(layers: str | int | Sequence[int], n_layers: int) -> list[int]:
    """``"all"`` → 0..L; ints may be negative (−1 is the last block's output)."""
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all' or a list of layer indices, got {layers!r}")
        return list(range(n_layers + 1))
    items = [layers] if isinstance(layers, int) else list(layers)
    if not items:
        raise ValueError("layers is empty")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"layer indices must be integers, got {item!r}")
        if not -(n_layers + 1) <= item <= n_layers:
            raise ValueError(f"unknown layer {item}: this model has layers 0 (embedding output) to {n_layers} "
                             f"(output of block {n_layers}), or negative indices down to {-(n_layers + 1)}")
        out.append(item % (n_layers + 1))
    if len(set(out)) != len(out):
        raise ValueError(f"layers {items} name the same layer twice")
    return sorted(out)


def _check_pooling(pooling: str | int) -> str | int:
    if isinstance(pooling, bool) or not (pooling in POOLINGS or isinstance(pooling, int)):
        raise ValueError(f"pooling must be one of {POOLINGS} or a token position (int), got {pooling!r}")
    return pooling


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


def pooled_positions(mask: torch.Tensor, pooling: str | int) -> torch.Tensor | None:
    """The column of each row's pooled token, or None for mean pooling.

    "last" is the last real token, found from the mask (right of the padding on the left, or
    left of the padding on the right); "cls" the first real token; an int ``p`` the ``p``-th
    real token (negative: from the end)."""
    if pooling == "mean":
        return None
    lengths = mask.sum(1)
    first = mask.argmax(1)  # the real tokens are contiguous whichever side the padding is on
    if pooling == "last":
        return first + lengths - 1
    if pooling == "cls":
        return first
    p = torch.full_like(lengths, pooling) if pooling >= 0 else lengths + pooling
    out_of_range = (p < 0) | (p >= lengths)
    if bool(out_of_range.any()):
        i = int(out_of_range.nonzero()[0])
        raise ValueError(f"pooling position {pooling} is outside a sequence of {int(lengths[i])} tokens")
    return first + p


def register_layer_hook(layout: ModelLayout, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None], *,
                        final_norm: bool = False) -> Any:
    """Call ``fn(hidden)`` on the representation of ``layer`` (0: the first block's input,
    l ≥ 1: block l's output; the last layer after the final norm with ``final_norm=True``)
    at every forward; a tensor it returns replaces that representation. Returns the hook's
    handle (``.remove()``)."""
    def on_output(module: Any, args: Any, out: Any) -> Any:
        new = fn(out[0] if isinstance(out, (tuple, list)) else out)
        if new is None:
            return None
        return (new, *out[1:]) if isinstance(out, tuple) else new

    def on_input(module: Any, args: tuple, kwargs: dict) -> Any:
        new = fn(args[0] if args else kwargs["hidden_states"])
        if new is None:
            return None
        return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

    if final_norm and layer == layout.n_layers:
        if layout.final_norm is None:
            raise ValueError(f"final_norm=True, but this model has no final norm module "
                             f"(looked for {', '.join(FINAL_NORM_NAMES)})")
        return layout.final_norm.register_forward_hook(on_output)
    if layer == 0:
        return layout.blocks[0].register_forward_pre_hook(on_input, with_kwargs=True)
    return layout.blocks[layer - 1].register_forward_hook(on_output)


class _Pooler:
    """Forward hooks that pool each requested layer's hidden states into its accumulator."""

    def __init__(self, layout: ModelLayout, layers: list[int], accs: dict[int, CovarianceAccumulator],
                 pooling: str | int, final_norm: bool):
        self.layout, self.layers, self.accs, self.pooling = layout, layers, accs, pooling
        self.final_norm = final_norm and layers[-1] == layout.n_layers
        self.mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.handles: list[Any] = []

    def __enter__(self) -> "_Pooler":
        last = self.layers[-1]
        # Deepest first: a model without the final norm asked for fails before any hook is placed.
        for layer in reversed(self.layers):
            self.handles.append(register_layer_hook(
                self.layout, layer, lambda hidden, layer=layer: self._take(layer, hidden, layer == last),
                final_norm=self.final_norm))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _take(self, layer: int, hidden: torch.Tensor, stop: bool) -> None:
        mask = self.mask
        assert mask is not None
        if hidden.ndim != 3 or hidden.shape[:2] != mask.shape:
            raise RuntimeError(f"layer {layer}: expected hidden states of shape (batch, seq, dim) = "
                               f"({mask.shape[0]}, {mask.shape[1]}, ·), got {tuple(hidden.shape)}")
        if self.positions is None:
            m = mask.to(hidden.device, torch.float32).unsqueeze(-1)
            rows = (hidden.float() * m).sum(1) / m.sum(1)
        else:
            rows = hidden[torch.arange(hidden.shape[0], device=hidden.device), self.positions.to(hidden.device)]
        # The state must be a normal tensor (merge and all_reduce update it in place later), so
        # it is updated outside inference mode; the rows themselves may be inference tensors.
        with torch.inference_mode(False):
            self.accs[layer]._update(rows, f"layer {layer}")
        if stop:
            raise _StopForward


def iter_batches(tokens: Sequence[Sequence[int]], batch_size: int, shard: tuple[int, int] | None = None) -> Iterator[list[int]]:
    """The length-sorted batches, or this rank's share of them (every ``world``-th batch)."""
    batches = length_batches([len(t) for t in tokens], batch_size)
    rank, world = shard or (0, 1)
    if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
    return iter(batches[rank::world])


def extract(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    layers: str | int | Sequence[int] = "all",
    pooling: str | int = "last",
    max_length: int | None = 512,
    batch_size: int = 16,
    final_norm: bool = False,
    padding_side: str | None = None,
    accumulators: dict[int, CovarianceAccumulator] | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool | str = True,
    stats: dict[str, Any] | None = None,
    precision: str = "float64",
) -> dict[int, CovarianceAccumulator]:
    """Feed the pooled representation of every text at every requested layer into one
    :class:`CovarianceAccumulator` per layer, and return them keyed by layer.

    ``model``: any Hugging Face model (``AutoModelForCausalLM``/``AutoModel``), on the device
    and in the dtype it should run in (fp32 or bf16, CPU or CUDA); the LM head never runs.
    ``pooling``: ``"last"`` (last real token, the paper's choice), ``"mean"`` (over real
    tokens), ``"cls"`` (first token, for encoders) or an int position among the real tokens.
    ``max_length``: tokens kept per text (None: the model's context). ``padding_side``:
    defaults to the tokenizer's; both sides give the same rows. ``accumulators``: existing
    ones to add to; ``shard=(rank, world)`` processes only that rank's batches (the caller
    all-reduces). ``stats``: a dict that receives ``n_tokens`` (of all texts, every shard's),
    ``n_texts`` and ``seconds``. ``precision``: of the new accumulators' products; float64 by
    default, as the forward pass costs far more than the d×d products and the raw spectrum's
    tail (``rankme_sv``) needs it. Runs under ``torch.inference_mode``.
    """
    layout = model_layout(model)
    wanted = resolve_layers(layers, layout.n_layers)
    pooling = _check_pooling(pooling)
    if max_length is None:
        max_length = layout.context
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    if layout.context is not None and max_length > layout.context:
        raise ValueError(f"max_length={max_length} is longer than the model's context of {layout.context} "
                         f"positions; pass max_length<={layout.context}")
    side = padding_side or getattr(tokenizer, "padding_side", "right")
    pad_id = next((v for v in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)) if v is not None), 0)
    tokens = tokenize(tokenizer, texts, max_length)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dim = hidden_size(model)
    accs = accumulators if accumulators is not None else {}
    for layer in wanted:
        accs.setdefault(layer, CovarianceAccumulator(dim, device=device, precision=precision))
        if accs[layer].dim != dim:
            raise ValueError(f"layer {layer}: accumulator has dim {accs[layer].dim}, the model's hidden size is {dim}")
    batches = list(iter_batches(tokens, batch_size, shard))
    n_tokens = sum(len(tokens[i]) for b in batches for i in b)
    desc = progress if isinstance(progress, str) else "extract"
    with _Pooler(layout, wanted, accs, pooling, final_norm) as pooler, torch.inference_mode(), \
            tqdm(total=n_tokens, unit="tok", unit_scale=True, desc=desc, disable=not progress, leave=False) as bar:
        start = time.perf_counter()
        for batch in batches:
            ids, mask = pad_batch([tokens[i] for i in batch], pad_id, side)
            pooler.mask, pooler.positions = mask, pooled_positions(mask, pooling)
            kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "use_cache": False}
            if layout.takes_position_ids:
                kwargs["position_ids"] = position_ids(mask).to(device)
            try:
                layout.base(**kwargs)
            except _StopForward:
                pass
            else:
                raise RuntimeError("extraction hooks never fired: the model's forward does not run its blocks")
            bar.update(int(mask.sum()))
            bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - start, 1e-9):,.0f} tok/s", refresh=False)
        if stats is not None:
            stats.update(n_tokens=sum(len(t) for t in tokens), n_texts=len(tokens), seconds=time.perf_counter() - start)
    return {layer: accs[layer] for layer in wanted}


def hidden_size(model: torch.nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise TypeError(f"cannot tell the hidden size of {type(model).__name__} from its config")

