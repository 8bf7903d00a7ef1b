"""Pooled representations from Hugging Face models, fed straight into accumulators.

One forward pass feeds one :class:`~fastspec.CovarianceAccumulator` per requested layer.
Hooks on the transformer blocks keep only the pooled rows (never every position of every
layer), and the pass stops after the last requested layer: no final norm unless asked, no
LM head, no logits. Sequences are sorted by length into batches, so padding is small, and
position ids come from the attention mask, so left and right padding give the same rows.

Layer numbering follows Hugging Face's ``hidden_states``: 0 is the input of the first block
(the embedding output), ``l`` is the output of block ``l`` (1-based), up to L blocks. HF's
``hidden_states[L]`` of a causal LM has the final norm applied, and so does the default
(``final_norm=None``, as the paper's code took ``hidden_states[-1]``); ``final_norm=False``
gives the last block's own output, before the norm.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from .._files import bar_off
from .._settings import SettingError
from ..spectral import CovarianceAccumulator
from .batching import iter_batches, pad_batch, position_ids, tokenize
from .settings import DEFAULT_MAX_LENGTH, ExtractSettings
from .layout import ModelLayout, hidden_size, layer_device, model_layout, register_layer_hook, resolve_final_norm, \
    resolve_layers

class _StopForward(Exception):
    """Raised by the hook of the last needed module, so the rest of the model never runs."""


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

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, device: torch.device) -> None:
        """Run one padded batch through the model up to the last requested layer."""
        self.mask, self.positions = mask, pooled_positions(mask, self.pooling)
        kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "use_cache": False}
        if self.layout.takes_position_ids:
            kwargs["position_ids"] = position_ids(mask).to(device)
        try:
            self.layout.base(**kwargs)
        except _StopForward:
            return
        raise RuntimeError("extraction hooks never fired: the model's forward does not run its blocks")

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
            self.accs[layer].update(rows, name=f"layer {layer}")
        if stop:
            raise _StopForward


def tokens_kept(layout: ModelLayout, max_length: int | str | None) -> int:
    """The tokens kept per text for ``max_length`` (``"auto"``: 512 or the context if shorter;
    None: the context), refused when longer than the model's context."""
    if max_length == "auto":
        return min(DEFAULT_MAX_LENGTH, layout.context or DEFAULT_MAX_LENGTH)
    if max_length is None:
        if layout.context is None:
            raise SettingError("{max_length}: this model states no context length; give a number of tokens",
                               max_length=None)
        return layout.context
    assert isinstance(max_length, int)
    if layout.context is not None and max_length > layout.context:
        raise SettingError("{max_length} is longer than the model's context of %d positions; at most %d"
                           % (layout.context, layout.context), max_length=max_length)
    return max_length


def extract(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    settings: ExtractSettings | None = None,
    accumulators: dict[int, CovarianceAccumulator] | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool | str = True,
    stats: dict[str, Any] | None = None,
    precision: str = "float64",
    start_batch: int = 0,
    on_batch: Callable[[int, dict[int, CovarianceAccumulator]], None] | None = None,
    **options: Any,
) -> dict[int, CovarianceAccumulator]:
    """Feed the pooled representation of every text at every requested layer into one accumulator per layer.

    One forward pass feeds every requested layer: hooks keep only the pooled rows (never
    every position of every layer), and the pass stops after the last requested layer (no
    LM head, no logits). Texts are sorted by length into batches, so padding is small, and
    position ids come from the attention mask, so left and right padding give the same
    rows. Runs under ``torch.inference_mode``.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Any Hugging Face model (``AutoModelForCausalLM`` or ``AutoModel``), on the device and
        in the dtype it should run in (fp32 or bf16, CPU or CUDA), or spread over several
        devices, the CPU and disk by a device map (``from_pretrained(device_map=...)``,
        accelerate's big-model loading): each new accumulator then lives on the device of its
        layer's output, and the pass still stops after the last requested layer. The LM head
        never runs.
    tokenizer : transformers.PreTrainedTokenizerBase
        The model's tokenizer.
    texts : sequence of str
        The texts, each one row per layer.
    settings : fastspec.ExtractSettings, optional
        The extraction settings (or any settings holding their fields, such as a
        `fastspec.TraceSettings`); ``options`` apply over them.
    accumulators : dict of int to fastspec.CovarianceAccumulator, optional
        Existing accumulators to add to, keyed by layer (new ones are made for the others).
    shard : tuple of int, optional
        ``(rank, world)``: process only that rank's batches (the caller all-reduces).
    progress : bool or str, default True
        A progress bar on stderr (a string: its label).
    stats : dict, optional
        Receives ``n_tokens`` (of all texts, every shard's), ``n_texts``, ``seconds``,
        ``max_length`` (the one used) and ``tokens_read`` (the tokens this call ran through
        the model).
    precision : str, default 'float64'
        Of the new accumulators' products: the forward pass costs far more than the d×d
        products, and the raw spectrum's tail (``rankme_sv``) needs float64.
    start_batch : int, default 0
        Skip this process's first batches (their rows are already in ``accumulators``: a
        resumed run).
    on_batch : callable, optional
        Called as ``on_batch(done, accumulators)`` after each batch, with the number of this
        process's batches done so far (a caller saves state there).
    **options
        Fields of `fastspec.ExtractSettings` as keywords (``layers``, ``pooling``,
        ``max_length``, ``batch_size``, ``final_norm``, ``padding_side``, ``folds``), each
        documented there. With ``folds=K`` the new accumulators keep K folds for
        `fastspec.CovarianceAccumulator.jackknife`: each text's row goes to fold i mod K by
        its position in the length-sorted order of this process's batches.

    Returns
    -------
    dict of int to fastspec.CovarianceAccumulator
        One accumulator per requested layer, keyed by its index (0 the embedding output, l
        the output of block l; negative indices given are resolved).

    Raises
    ------
    fastspec.SettingError
        A setting out of range, or a ``max_length`` longer than the model's context.
    ValueError
        No texts, a text that tokenises to nothing, an unknown layer, ``final_norm=True``
        for a model without a final norm, or an accumulator of another width.
    TypeError
        ``texts`` not a list of strings, or a model that is not a Hugging Face transformer.

    See Also
    --------
    fastspec.trace : The same across checkpoints, written to a results directory.

    Examples
    --------
    A tiny GPT-2 with random weights and a tokenizer trained on the texts (nothing is
    downloaded):

    >>> import transformers
    >>> from fastspec.models.tiny import train_tokenizer
    >>> texts = [f"the {a} {b} sat on the {c}" for a in ("red", "old", "small")
    ...          for b in ("cat", "dog", "fox") for c in ("mat", "rug")]
    >>> tokenizer = train_tokenizer(texts, vocab_size=300)
    >>> config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4,
    ...                                  bos_token_id=0, eos_token_id=0)
    >>> _ = torch.manual_seed(0)
    >>> model = transformers.GPT2Model(config)
    >>> accs = fastspec.extract(model, tokenizer, texts, layers=[0, -1], progress=False)
    >>> {layer: (acc.n_samples, acc.dim) for layer, acc in accs.items()}
    {0: (18, 32), 2: (18, 32)}
    >>> round(accs[0].spectrum().rankme, 1)
    3.6
    """
    s = ExtractSettings.build(settings, caller="extract", **options)
    layout = model_layout(model)
    wanted = resolve_layers(s.layers, layout.n_layers)
    max_length = tokens_kept(layout, s.max_length)
    side = s.padding_side or getattr(tokenizer, "padding_side", "right")
    pad_id = next((v for v in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)) if v is not None), 0)
    tokens = tokenize(tokenizer, texts, max_length)
    final_norm = resolve_final_norm(layout, s.final_norm)
    device = layer_device(layout, 0)  # where the input ids go: the embedding's device
    dim = hidden_size(model)
    accs = accumulators if accumulators is not None else {}
    for layer in wanted:
        # On the device of the layer's own output (a device map spreads layers over several),
        # so that the rows never cross devices.
        accs.setdefault(layer, CovarianceAccumulator(dim, device=layer_device(layout, layer, final_norm=final_norm),
                                                     precision=precision, folds=s.folds))
        if accs[layer].dim != dim:
            raise ValueError(f"layer {layer}: accumulator has dim {accs[layer].dim}, the model's hidden size is {dim}")
    batches = list(iter_batches(tokens, s.batch_size, shard))
    if isinstance(start_batch, bool) or not isinstance(start_batch, int) or not 0 <= start_batch <= len(batches):
        raise ValueError(f"start_batch must be an integer in [0, {len(batches)}], got {start_batch!r}")
    n_tokens = sum(len(tokens[i]) for b in batches[start_batch:] for i in b)
    desc = progress if isinstance(progress, str) else "extract"
    with _Pooler(layout, wanted, accs, s.pooling, final_norm) as pooler, torch.inference_mode(), \
            tqdm(total=n_tokens, unit="tok", unit_scale=True, desc=desc, disable=bar_off(bool(progress)), leave=False) as bar:
        start = time.perf_counter()
        for done, batch in enumerate(batches[start_batch:], start=start_batch + 1):
            ids, mask = pad_batch([tokens[i] for i in batch], pad_id, side)
            pooler.forward(ids, mask, device)
            bar.update(int(mask.sum()))
            bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - start, 1e-9):,.0f} tok/s", refresh=False)
            if on_batch is not None:
                on_batch(done, {layer: accs[layer] for layer in wanted})
        if stats is not None:
            stats.update(n_tokens=sum(len(t) for t in tokens), n_texts=len(tokens), seconds=time.perf_counter() - start,
                         max_length=max_length, tokens_read=n_tokens)
    return {layer: accs[layer] for layer in wanted}
