"""Where a Hugging Face model keeps its blocks, final norm and context, and how to hook the
representation of one layer: shared by extraction (which reads layers) and ablation (which
rewrites one).

Layer numbering follows Hugging Face's ``hidden_states``: 0 is the input of the first block
(the embedding output), ``l`` is the output of block ``l`` (1-based), up to L blocks, and the
last is after the final norm as ``hidden_states[L]`` is (:func:`resolve_final_norm`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm")


@dataclass(frozen=True)
class ModelLayout:
    """Where a Hugging Face model keeps what extraction hooks into."""

    base: torch.nn.Module
    blocks: torch.nn.ModuleList
    final_norm: torch.nn.Module | None
    context: int | None
    takes_position_ids: bool
    #: The input embedding (its output is layer 0), when the model says which it is.
    embeddings: torch.nn.Module | None = None

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
    try:
        embeddings = base.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # not every model names its input embedding
        embeddings = None
    return ModelLayout(base, lists[0], norm, int(context) if context else None, takes_pos,
                       embeddings if isinstance(embeddings, torch.nn.Module) else None)


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


def resolve_final_norm(layout: ModelLayout, final_norm: bool | None) -> bool:
    """Whether the last layer is taken after the final norm. ``None`` (the default
    everywhere): as Hugging Face's ``hidden_states[L]``, i.e. after the model's final norm
    when it has one (decoders: GPT-NeoX, Llama, GPT-2, OLMo) and the last block's output when
    it has none (BERT-style encoders); ``True`` requires the norm; ``False`` takes the last
    block's own output, before the norm."""
    if final_norm is None:
        return layout.final_norm is not None
    return bool(final_norm)


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


def hidden_size(model: torch.nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise TypeError(f"cannot tell the hidden size of {type(model).__name__} from its config")



def module_device(module: torch.nn.Module) -> torch.device | None:
    """Where ``module`` computes: with a model dispatched by accelerate (``from_pretrained(
    device_map=...)``), its hook's execution device, as the weights of a module offloaded to
    the CPU or to disk wait on the "meta" device and are brought there for each forward;
    otherwise the device of its first parameter or buffer that is not "meta"; None when it
    has neither."""
    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", ())]:  # accelerate's SequentialHook holds several
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(device)  # an int is a CUDA device's index
    for t in (*module.parameters(), *module.buffers()):
        if t.device.type != "meta":
            return t.device
    return None


def layer_device(layout: ModelLayout, layer: int, *, final_norm: bool = False) -> torch.device:
    """The device that ``layer``'s representation (as :func:`register_layer_hook` sees it) is
    computed on: that of the module whose output it is (layer 0: the input embedding; the
    last layer with ``final_norm``: the final norm; l: block l). On a model split across
    devices by a device map they differ; each layer's accumulator is kept on its own, so no
    hidden state crosses devices. Falls back to the model's device, then the CPU."""
    if final_norm and layer == layout.n_layers and layout.final_norm is not None:
        module = layout.final_norm
    elif layer == 0:
        module = layout.embeddings if layout.embeddings is not None else layout.blocks[0]
    else:
        module = layout.blocks[layer - 1]
    return module_device(module) or module_device(layout.base) or torch.device("cpu")
