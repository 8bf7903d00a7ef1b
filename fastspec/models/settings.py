"""The settings of extraction, tracing and memorization scoring, each written once: its default,
its help text (the command line's too), its check, and whether it changes results (bound in a
results directory's ``config.json``: a resumed run with another value is refused) or is
operational (prefetch, eviction, how often state is saved). ``fastspec.extract``,
``fastspec.trace``, the training callbacks, ``fastspec.memorization_trace`` and the ``fastspec``
command line all take these fields by name; the command line's options are generated from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from typing import Any, Mapping, Sequence

from .._settings import (
    NAME_ONLY,
    SettingError,
    Settings,
    fault,
    literal,
    non_negative_int,
    one_of,
    optional,
    positive_int,
    setting,
    boolean,
)
from ..spectral.metrics import DEFAULT_FIT_RANGE, check_fit_range

POOLINGS = ("last", "mean", "cls")
#: Tokens kept per text by default (``max_length="auto"``), or the model's context if shorter.
DEFAULT_MAX_LENGTH = 512
#: Every this many batches, a checkpoint's partial state is saved (a few minutes of work on a
#: GPU: 8000 texts at the default batch size).
DEFAULT_SAVE_EVERY = 500
#: The dtypes a checkpoint can be loaded in (names as torch spells them).
DTYPE_NAMES = ("float32", "bfloat16", "float16")


# -- checks and command-line parsers of the fields below ------------------------------------

def _layers(value: Any, name: str) -> str | tuple[int, ...]:
    if isinstance(value, str):
        if value != "all":
            raise fault(name, "must be 'all' or a list of layer indices", value)
        return value
    items = (value,) if isinstance(value, int) else tuple(value)
    if not items:
        raise SettingError("{layers} is empty", layers=...)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise fault(name, "must hold integer layer indices", item)
    return items


def _pooling(value: Any, name: str) -> str | int:
    if isinstance(value, bool) or not (value in POOLINGS or isinstance(value, int)):
        raise fault(name, f"must be one of {POOLINGS} or a token position (int)", value)
    return value


def _max_length(value: Any, name: str) -> str | int | None:
    if value is None or value == "auto":
        return value
    return positive_int(value, name)


def _fit_range(value: Any, name: str) -> tuple[int, int]:
    try:
        return check_fit_range(value)
    except ValueError as err:
        raise SettingError(literal(str(err)).replace("fit_range", "{fit_range}", 1), fit_range=...) from None


def _labels(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise fault(name, "must be a list, one label per checkpoint", value)
    return tuple(str(v) for v in value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fault(name, "must be an integer", value)
    return value


def _shard(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if value == "slurm":
        return slurm_shard(name)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value) if isinstance(value, str) else None
    if match:
        index, count = int(match[1]), int(match[2])
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        index, count = value
    else:
        raise fault(name, "must be 'I/N' (or (I, N)) with 0 <= I < N, or 'slurm'", value)
    if not 0 <= index < count:
        raise fault(name, "must be 'I/N' with 0 <= I < N", value)
    return index, count


#: The Slurm job array's variables that ``shard="slurm"`` reads (sbatch sets them in every task).
SLURM_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                   "SLURM_ARRAY_TASK_STEP")


def slurm_shard(name: str = "shard") -> tuple[int, int]:
    """(I, N) of this task of a Slurm job array: I = (``SLURM_ARRAY_TASK_ID`` −
    ``SLURM_ARRAY_TASK_MIN``) / ``SLURM_ARRAY_TASK_STEP``, N = ``SLURM_ARRAY_TASK_COUNT`` (else
    (MAX − MIN) / STEP + 1); MIN defaults to 0 and STEP to 1. Read only when asked for
    (``shard="slurm"``), never implicitly. A missing variable, or an array whose task ids are
    not an evenly spaced range (``--array=0-9`` or ``1-64:2``, not ``--array=1,4,9``), is a
    :class:`~fastspec._settings.SettingError` naming it and ``name``."""
    env = {k: os.environ.get(k) for k in SLURM_VARIABLES}

    def number(key: str, default: int | None = None) -> int:
        text = env[key]
        if text is None or not text.strip():
            if default is not None:
                return default
            raise SettingError("{%s} reads the Slurm job array's task, and %s is not set (is this a task of a job "
                               "array, sbatch --array=0-N-1?)" % (name, key), **{name: "slurm"})
        try:
            return int(text)
        except ValueError:
            raise SettingError("{%s}: %s=%s is not an integer" % (name, key, literal(repr(text))),
                               **{name: "slurm"}) from None

    task = number("SLURM_ARRAY_TASK_ID")
    low, step = number("SLURM_ARRAY_TASK_MIN", 0), number("SLURM_ARRAY_TASK_STEP", 1)
    if env["SLURM_ARRAY_TASK_COUNT"] is None and env["SLURM_ARRAY_TASK_MAX"] is None:
        number("SLURM_ARRAY_TASK_COUNT")  # the error naming it
    count = number("SLURM_ARRAY_TASK_COUNT") if env["SLURM_ARRAY_TASK_COUNT"] is not None else \
        (number("SLURM_ARRAY_TASK_MAX") - low) // max(step, 1) + 1
    offset = task - low
    if step < 1 or offset % step or not 0 <= offset // step < count:
        raise SettingError("{%s}: task %d of an array of %d tasks from %d in steps of %d: its task ids are not an "
                           "evenly spaced range (use --array=0-%d, or --shard I/N)" % (name, task, count, low, step,
                                                                                        max(count - 1, 0)),
                           **{name: "slurm"})
    return offset // step, count


def _device_map(value: Any, name: str) -> str | dict[str, int | str] | None:
    """A device map as ``from_pretrained`` takes it: a strategy ("auto", "balanced", …) or a
    device for the whole model, or module name → GPU index, "cpu", "disk" or a device name."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value:
            raise fault(name, "must name a strategy ('auto') or a device, or map module names to devices", value)
        return value
    if not isinstance(value, Mapping) or not value:
        raise fault(name, "must be a string ('auto') or a non-empty mapping of module names to devices", value)
    out: dict[str, int | str] = {}
    for module, device in value.items():
        if not isinstance(module, str):
            raise fault(name, "must map module names (strings) to devices", module)
        if isinstance(device, bool) or not (isinstance(device, str) or (isinstance(device, int) and device >= 0)):
            raise fault(name, f"maps {module!r} to neither a GPU index nor 'cpu', 'disk' or a device name", device)
        out[module] = device
    return out


def _parse_device_map(text: str) -> str | dict[str, Any]:
    """``auto`` (or another strategy, or a device), a JSON object, or a JSON file holding one."""
    if text.lstrip().startswith("{") or text.endswith(".json"):
        try:
            if text.lstrip().startswith("{"):
                return json.loads(text)
            with open(text) as fh:
                return json.load(fh)
        except (OSError, ValueError) as err:
            raise argparse.ArgumentTypeError(f"a device map as JSON (module name: GPU index, \"cpu\" or \"disk\"), "
                                             f"or a .json file holding one; {text!r}: {err}") from None
    return text


def _parse_layers(text: str) -> str | list[int]:
    if text == "all":
        return "all"
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'all' or comma-separated integers, got {text!r}") from None


def _parse_max_length(text: str) -> str | int:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'auto' or a number of tokens, got {text!r}") from None


def _parse_pooling(text: str) -> str | int:
    try:
        return int(text)
    except ValueError:
        return text


def _parse_save_every(text: str) -> int | None:
    value = int(text)
    return None if value == 0 else value


# -- the settings -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ExtractSettings(Settings):
    """How `fastspec.extract` turns a model and texts into one covariance accumulator per
    layer. Every field changes the numbers.

    Each field is checked when the settings are made: a bad value raises
    `fastspec.SettingError` naming it. The same fields are keywords of `fastspec.extract`,
    `fastspec.trace` and the training callbacks, and options of the ``fastspec`` command line.

    See Also
    --------
    fastspec.TraceSettings : These fields and tracing's own.

    Examples
    --------
    >>> s = fastspec.ExtractSettings(layers=[0, -1], batch_size=8)
    >>> s.layers, s.pooling, s.batch_size
    ((0, -1), 'last', 8)
    >>> fastspec.ExtractSettings(pooling="max")
    Traceback (most recent call last):
    ...
    fastspec._settings.SettingError: pooling must be one of ('last', 'mean', 'cls') or a token position (int), got 'max'
    """

    layers: str | int | Sequence[int] = setting(
        "all", "'all' or layer indices (0 = the embedding output, l = the output of block l, negative from the end)",
        affects=True, check=_layers, cli={"type": _parse_layers, "metavar": "all|0,2,..."})
    pooling: str | int = setting(
        "last", "last (the last real token, the paper's) | mean | cls | a token position among the real tokens",
        affects=True, check=_pooling, cli={"type": _parse_pooling})
    max_length: int | str | None = setting(
        "auto", "tokens kept per text: auto is 512, or the model's context if shorter",
        affects=True, check=_max_length, cli={"type": _parse_max_length})
    batch_size: int = setting(16, "texts per forward pass", affects=True, check=positive_int, cli={"type": int})
    final_norm: bool | None = setting(
        None, "the last layer after the model's final norm (default where it has one: Hugging Face's "
        "hidden_states[-1], the paper's code); --no-final-norm: the last block's own output",
        affects=True, check=optional(boolean), cli={"action": argparse.BooleanOptionalAction})
    padding_side: str | None = setting(
        None, "right | left (default: the tokenizer's; both give the same rows)",
        affects=True, check=optional(one_of("right", "left")), cli={"choices": ("right", "left")})
    folds: int = setting(
        1, "K disjoint folds of the texts per layer, for jackknife standard errors of RankMe, RankMe_sv and alpha "
        "(K·d² memory; 1: none)", affects=True, check=positive_int, cli={"type": int})


@dataclasses.dataclass(frozen=True)
class TraceSettings(ExtractSettings):
    """The settings of `fastspec.trace`: extraction's, how checkpoints are loaded and
    measured, which texts, and how the sweep runs. The sample of texts is bound by its SHA-256
    (``data_sha256`` in ``config.json``), so ``n``, ``seed`` and ``text_field`` bind through it.

    See Also
    --------
    fastspec.ExtractSettings : The extraction fields alone.

    Examples
    --------
    >>> s = fastspec.TraceSettings(layers=[-1], n=256, fit_range=[10, 100])
    >>> s.fit_range, s.save_every
    ((10, 100), 500)
    >>> fastspec.ExtractSettings.build(s)  # the extraction fields of a trace's settings
    ExtractSettings(layers=(-1,), pooling='last', max_length='auto', batch_size=16, final_norm=None,
                    padding_side=None, folds=1)
    >>> sorted(s.to_config())[:4]
    ['batch_size', 'device', 'device_map', 'dtype']
    """

    dtype: str = setting("float32", "the dtype the checkpoints are loaded in", affects=True,
                         check=one_of(*DTYPE_NAMES), cli={"choices": DTYPE_NAMES})
    fit_range: tuple[int, int] = setting(
        DEFAULT_FIT_RANGE, "0-based [start, stop) of the alpha fit (the paper's; Reptrix: 10 100)", affects=True,
        check=_fit_range, cli={"type": int, "nargs": 2, "metavar": ("START", "STOP")})
    # Not "--n": torchrun reads every option on its line and refuses one that abbreviates
    # several of its own (--nnodes, --nproc-per-node, --node-rank, --no-python).
    n: int | None = setting(None, "documents sampled from the data (default: all)", check=optional(positive_int),
                            flag="--n-texts", cli={"type": int})
    seed: int = setting(0, "seed of the sample", check=_integer, cli={"type": int})
    text_field: str = setting("text", "field/column of the text in .jsonl/.parquet")
    device: str | None = setting(None, "cpu, cuda, cuda:1 … (default: cuda if there is one)")
    # Operational, as device is: where the layers run changes the numbers by rounding only.
    device_map: str | Mapping[str, int | str] | None = setting(
        None, "load each checkpoint through accelerate's big-model path, spread over the GPUs, the CPU and disk: "
        "auto, or a JSON object (or .json file) of module name -> GPU index, \"cpu\" or \"disk\"; with torchrun, "
        "one process per node (instead of --device)", check=_device_map,
        cli={"type": _parse_device_map, "metavar": "auto|JSON"})
    offload_folder: str | None = setting(
        None, "where the weights that --device-map offloads to disk are written when the checkpoint has no "
        "safetensors files to read them from (default: a temporary folder, deleted after each checkpoint)",
        cli={"metavar": "DIR"})
    trust_remote_code: bool = setting(False, "let transformers run the checkpoints' own model code",
                                      check=boolean)
    prefetch: int | None = setting(None, "hub checkpoints downloaded ahead of the one being traced",
                                   check=optional(non_negative_int), cli={"type": int, "metavar": "K", "shown": 1})
    evict: bool = setting(
        False, "delete each hub checkpoint's downloaded files from the Hugging Face cache once its results are "
        "written (never files the cache held before the run): disk stays near K + 1 checkpoints", check=boolean)
    node_local_downloads: bool = setting(
        False, "with torchrun across nodes that share no filesystem: each node's local rank 0 downloads hub "
        "checkpoints into its own Hugging Face cache (and evicts them there), and that node's ranks read them; by "
        "default the job's rank 0 alone downloads, into a cache every node sees", check=boolean)
    labels: Sequence[str] | None = setting(
        None, "one name per checkpoint, in order (e.g. base sft dpo rlvr for post-training stages, which have no "
        "training step): kept in the results and on the plots' axes", check=_labels, cli={"nargs": "+"})
    save_every: int | None = setting(
        DEFAULT_SAVE_EVERY, "save the layers' accumulator states every N batches, so that a run killed inside a "
        "checkpoint resumes there (0 on the command line, None in Python: never)",
        check=optional(positive_int), cli={"type": _parse_save_every, "metavar": "N"})
    refine: int = setting(
        0, "after the checkpoints given, up to M more of the candidates, one at a time, each bisecting the interval "
        "where the last traced layer's RankMe or alpha is least resolved (a turn first, then the largest change)",
        check=non_negative_int, cli={"type": int, "metavar": "M"})
    shard: tuple[int, int] | None = setting(
        None, "trace every N-th checkpoint of the list (listed, gridded and filtered as without it) starting at I, "
        "0 <= I < N, so that N jobs share the sweep and one results directory; 'slurm': I and N of this task of a "
        "Slurm job array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT), which are read only then",
        check=_shard, cli={"metavar": "I/N|slurm"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.device is not None and self.device_map is not None:
            raise SettingError("{device} and {device_map} both say where the model goes: give one of them",
                               device=self.device, device_map=self.device_map)
        if self.offload_folder is not None and self.device_map is None:
            raise SettingError("{offload_folder} is where {device_map} offloads weights to disk: give a device map "
                               "with it", offload_folder=self.offload_folder, device_map=NAME_ONLY)


@dataclasses.dataclass(frozen=True)
class MemorizationSettings(Settings):
    """The settings of `fastspec.memorization` and `fastspec.memorization_trace`.

    Only ``rule`` changes results; the others say how the scoring runs.

    Examples
    --------
    >>> fastspec.MemorizationSettings(rule="all", threads=4)
    MemorizationSettings(rule='all', batch_size=8, device=None, threads=4)
    >>> fastspec.MemorizationSettings(rule="none")
    Traceback (most recent call last):
    ...
    fastspec._settings.SettingError: rule must be 'wang' or 'all', got 'none'
    """

    rule: str = setting(
        "wang", "wang: the paper's (zero ∞-gram probabilities dropped, items whose every one is zero left out); "
        "all: no dropping", affects=True, check=one_of("wang", "all"), cli={"choices": ("wang", "all")})
    batch_size: int = setting(8, "items per forward pass", check=positive_int, cli={"type": int})
    device: str | None = setting(None, "torch device for the model (default: where it loads)")
    threads: int = setting(1, "threads of the ∞-gram queries", check=positive_int, cli={"type": int})
