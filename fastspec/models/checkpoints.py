"""What a checkpoint is and how it is loaded: a local directory or a hub id with a revision,
its training step (parsed from the name or from ``trainer_state.json``), a file name for its
results, and the model without its LM head (``AutoModel``) with its tokenizer."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from .hf import quiet_transformers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(OSError):
    """A checkpoint could not be loaded (missing directory, unknown revision, bad files).

    An `OSError`, with a message that names the checkpoint. Raised by `fastspec.trace`,
    `fastspec.memorization_trace` and the command line when they load or fetch one.

    Examples
    --------
    >>> fastspec.trace(["./ckpts/step1000"], ["a text", "another"], "run", progress=False)
    Traceback (most recent call last):
    ...
    fastspec.models.checkpoints.CheckpointError: checkpoint ./ckpts/step1000: no such directory ./ckpts/step1000
    """


@dataclass(frozen=True)
class Checkpoint:
    """One model to trace: a local directory, or a hub id with an optional revision."""

    source: str
    revision: str | None = None

    @property
    def label(self) -> str:
        return f"{self.source}@{self.revision}" if self.revision else self.source

    @property
    def step(self) -> int | None:
        return parse_step(self.revision or "") if self.revision else _dir_step(self.source)

    @property
    def identity(self) -> str:
        """What makes two checkpoints the same whatever their spelling: a local directory's
        resolved absolute path (``ck/step2``, ``ck/step2/``, ``./ck/step2`` are one), a hub
        id with its revision. A results directory holds one entry per identity."""
        if self.revision is None and os.path.isdir(self.source):
            return os.path.realpath(self.source)
        return self.label

    @property
    def on_hub(self) -> bool:
        """A hub id ("name" or "org/name") rather than a local directory. Anything else that
        is not a directory is a missing path, and so is "ckpts/step9" when ckpts/ is a local
        directory (no hub lookup, no retries)."""
        s = self.source
        return not os.path.isdir(s) and not (os.path.isabs(s) or s.startswith((".", "~")) or s.count("/") > 1
                                              or ("/" in s and os.path.isdir(s.split("/")[0])))

    @property
    def slug(self) -> str:
        """A file name for this checkpoint: readable, and unique by a short hash."""
        tail = os.path.basename(os.path.normpath(self.source)) + (f"@{self.revision}" if self.revision else "")
        safe = re.sub(r"[^A-Za-z0-9._@-]+", "_", tail)[:80]
        return f"{safe}-{hashlib.sha1(self.label.encode()).hexdigest()[:8]}"


def parse_step(name: str) -> int | None:
    """The training step in a revision or directory name: ``step1000`` (Pythia),
    ``stage1-step1000-tokens5B`` (OLMo-2), ``checkpoint-1000`` (HF Trainer)."""
    m = re.search(r"(?:^|[^a-z])step[-_]?(\d+)", name, re.IGNORECASE) or re.search(r"checkpoint[-_](\d+)", name, re.IGNORECASE)
    return int(m.group(1)) if m else None


def _dir_step(path: str) -> int | None:
    step = parse_step(os.path.basename(os.path.normpath(path)))
    state = os.path.join(path, "trainer_state.json")
    if step is None and os.path.isfile(state):
        with open(state) as fh:
            step = json.load(fh).get("global_step")
    return step


def as_checkpoint(item: Any) -> Checkpoint:
    """A Checkpoint from a Checkpoint, a ``(source, revision)`` pair, a local directory, or
    ``"hub/id@revision"``."""
    if isinstance(item, Checkpoint):
        ckpt = item
    elif isinstance(item, tuple) and len(item) == 2:
        ckpt = Checkpoint(os.fspath(item[0]), None if item[1] is None else str(item[1]))
    elif isinstance(item, (str, os.PathLike)):
        s = os.fspath(item)
        if not os.path.isdir(s) and "@" in s:
            source, revision = s.rsplit("@", 1)
            ckpt = Checkpoint(source, revision)
        else:
            ckpt = Checkpoint(s)
    else:
        raise TypeError(f"a checkpoint is a directory, 'hub/id@revision', a (source, revision) pair or a Checkpoint, "
                        f"got {item!r}")
    if ckpt.revision is not None and os.path.isdir(ckpt.source):
        # A directory holds one set of weights: tracing it "at" several revisions would trace
        # the same weights under several steps.
        raise ValueError(f"checkpoint {ckpt.label}: {ckpt.source} is a local directory, which has no revisions; "
                         "give each revision's own directory instead (or the hub id)")
    return ckpt


def load_checkpoint(ckpt: Checkpoint, *, dtype: str = "float32", device: str | torch.device = "cpu",
                    trust_remote_code: bool = False, causal_lm: bool = False,
                    path: str | None = None, device_map: str | dict[str, Any] | None = None,
                    offload_folder: str | None = None) -> tuple[torch.nn.Module, Any]:
    """The model (without LM head: ``AutoModel``; with it, ``AutoModelForCausalLM``, when
    ``causal_lm``) and tokenizer of a checkpoint, in eval mode. ``path``: where a hub
    checkpoint's files already are (a snapshot that :class:`fastspec.models.hub.Downloads`
    fetched); without it, ``from_pretrained`` resolves the id and revision itself.
    ``device_map`` (then ``device`` is not used): loaded through accelerate's big-model path,
    ``from_pretrained(device_map=..., offload_folder=...)``, the model spread over GPUs, the
    CPU and disk (``"auto"``, or module name → GPU index, ``"cpu"`` or ``"disk"``); weights
    offloaded to disk are read from the checkpoint's safetensors files where it has them, and
    otherwise written to ``offload_folder``."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    local = os.path.isdir(ckpt.source)
    if not local and not ckpt.on_hub:
        raise CheckpointError(f"checkpoint {ckpt.label}: no such directory {ckpt.source}")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if ckpt.revision and path is None:
        kwargs["revision"] = ckpt.revision
    placed = device_map is not None
    if placed:
        kwargs.update(device_map=device_map, offload_folder=offload_folder)
    where_from = path or ckpt.source
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(where_from, **kwargs)
            model = (AutoModelForCausalLM if causal_lm else AutoModel).from_pretrained(where_from, dtype=DTYPES[dtype],
                                                                                       **kwargs)
    except Exception as err:  # transformers raises OSError, ValueError or hub errors: all are "cannot load"
        where = "directory" if local else ("revision " + repr(ckpt.revision) if ckpt.revision else "hub id")
        raise CheckpointError(f"checkpoint {ckpt.label}: cannot load the model or tokenizer from {where} "
                              f"{'' if local else 'of ' + repr(ckpt.source)}: {type(err).__name__}: {err}") from err
    # A dispatched model stays where its device map put it (moving it would undo the offload).
    return (model if placed else model.to(device)).eval(), tokenizer
