"""Geometry measured during training: what the Hugging Face and Lightning callbacks share.

:class:`OnlineGeometry` measures a model on fixed probe texts with :func:`fastspec.extract`
(eval mode, no grad, the model's own device and dtype; under torch.distributed every rank
takes its shard of the probe batches and the accumulators are all-reduced), keeps each
layer's trajectory, labels its phase by :func:`fastspec.phases`' rule as points arrive,
warns when RankMe collapses, and with ``out_dir`` writes a results directory in
:func:`fastspec.trace`'s format (``config.json``, ``checkpoints/step<N>-….json/.npz``,
``trace.csv``) that :func:`fastspec.load_trace`, ``fastspec plot`` and ``fastspec report``
read. It imports no training framework.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from .._settings import positive_int, with_parameters
from ..models.checkpoints import Checkpoint
from ..models.batching import tokenize
from ..models.extract import extract
from ..models.layout import model_layout
from ..models.phases import COMPRESSION, ENTROPY, WARMUP, phases
from ..models.runs import ResultsDir, broadcast, process_rank
from ..models.settings import DEFAULT_MAX_LENGTH, TraceSettings
from ..models.trace import RESULT_SETTINGS, layer_results, load_trace, run_config, write_table
from ..spectral.inputs import NonFiniteError
from ..spectral.metrics import DEFAULT_FIT_RANGE

#: The number logged as ``geometry/phase/layer_{l}`` (loggers take numbers, not names).
PHASE_CODES = {WARMUP: 0, ENTROPY: 1, COMPRESSION: 2, "flat": 3}
METRICS = ("rankme", "rankme_sv", "alpha")


class RankCollapseWarning(UserWarning):
    """A layer's RankMe fell to ``collapse`` of its highest value since the last warning.

    Warned by the training callbacks (`fastspec.integrations.hf.GeometryCallback` and its
    Lightning twin) on rank 0; the reference value then restarts from the collapsed one, so
    a further fall of the same fraction warns again.

    Examples
    --------
    A `UserWarning`, so the warnings filters apply; as an error it stops a run whose
    representations collapse:

    >>> import warnings
    >>> from fastspec.integrations.hf import RankCollapseWarning
    >>> issubclass(RankCollapseWarning, UserWarning)
    True
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", RankCollapseWarning)
    ...     pass  # trainer.train() here would raise RankCollapseWarning at a collapse
    """


PhaseChange = Callable[[int, int, "str | None", str], Any]


class OnlineGeometry:
    """Measure RankMe (both conventions) and α of a model's layers on fixed probe ``texts``,
    point by point as training goes (see the module docstring). The arguments are
    :func:`fastspec.extract`'s and :func:`fastspec.phases`' (``warmup_steps``, ``tol``);
    ``max_length`` longer than the model's context is cut to it (the length used is in
    ``config.json``). ``collapse``: warn (:class:`RankCollapseWarning`) when a layer's RankMe
    falls to this fraction of its highest value since its last warning (None: never).
    ``on_phase_change(step, layer, old, new)`` is called on every rank, with the same
    arguments, when a layer's phase changes (``old`` None at its first point)."""

    def __init__(self, texts: Sequence[str], *, layers: str | int | Sequence[int] = "all", pooling: str | int = "last",
                 max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 16, out_dir: str | os.PathLike | None = None,
                 fit_range: tuple[int, int] = DEFAULT_FIT_RANGE, warmup_steps: int | None = None, tol: float = 0.1,
                 collapse: float | None = 0.5, on_phase_change: PhaseChange | None = None):
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts: a sequence of probe strings")
        self.texts = list(texts)
        if not self.texts:
            raise ValueError("texts: no probe texts to measure the model on")
        # The settings' own checks (a SettingError names the one at fault); max_length is a
        # number here, cut to the model's context when measuring.
        self.settings = TraceSettings(layers=layers, pooling=pooling, max_length=positive_int(max_length, "max_length"),
                                      batch_size=batch_size, fit_range=fit_range, save_every=None)
        if not 0 < tol < 1:
            raise ValueError(f"tol must be in (0, 1), got {tol!r}")
        if collapse is not None and not 0 < collapse < 1:
            raise ValueError(f"collapse must be in (0, 1) or None, got {collapse!r}")
        if on_phase_change is not None and not callable(on_phase_change):
            raise TypeError("on_phase_change must be callable(step, layer, old, new)")
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        self.fit_range = self.settings.fit_range
        self.warmup_steps, self.tol, self.collapse, self.on_phase_change = warmup_steps, tol, collapse, on_phase_change
        self.history: list[dict[str, Any]] = []  # one row per (step, layer), as load_trace's
        self.phase: dict[int, str] = {}
        self._reference: dict[int, float] = {}  # the highest RankMe since the layer's last warning
        self._config: dict[str, Any] | None = None
        self._results: ResultsDir | None = None

    def begin(self, model: torch.nn.Module, step: int, tokenizer: Any = None) -> None:
        """Start (or, from a checkpoint at ``step``, resume) measuring ``model``: the settings,
        checked against ``out_dir``'s, whose points up to ``step`` start the trajectories; the
        points an earlier run measured after ``step`` are deleted (this run measures them
        again). With ``tokenizer``, the probe texts are checked to tokenise to something, so
        that a bad probe fails now, not at the first measurement. Every rank must call it;
        :meth:`measure` does on its first call."""
        if self._config is not None:
            return
        rank, world = process_rank()
        context = model_layout(model).context
        first = next(model.parameters(), None)
        max_length = min(self.settings.max_length, context or self.settings.max_length)
        self.settings = TraceSettings.build(self.settings, max_length=max_length)
        if tokenizer is not None:
            try:
                tokenize(tokenizer, self.texts, max_length)
            except ValueError as err:
                raise ValueError(f"probe texts: {err}") from None
        self._config = run_config(
            self.settings, self.texts, "<probe texts>", device=first.device if first is not None else "cpu",
            world=world, n=None, seed=None, during_training=True,
            dtype=str(first.dtype).removeprefix("torch.") if first is not None else "float32")
        if self.out_dir is None:
            return
        self._results = ResultsDir(self.out_dir, self._config, RESULT_SETTINGS, rank=rank)
        earlier, refused = None, None
        if rank == 0:
            try:
                earlier = self._open(self._results, step)
            except ValueError as err:  # every rank stops, not rank 0 alone
                refused = str(err)
        earlier, refused = broadcast((earlier, refused), world)
        if refused:
            self._config = None
            raise ValueError(refused)
        for row in earlier:
            self.record({k: row[k] for k in ("step", "layer", *METRICS)}, notify=False)

    def _open(self, results: ResultsDir, step: int) -> list[dict[str, Any]]:
        """Rank 0: make ``out_dir``, or check an existing one's settings and return its points
        up to ``step``, deleting those after it (this run measures them again)."""
        done = results.open()
        if not done:
            return []
        frame = load_trace(self.out_dir)
        gone = results.drop_after(step)
        if gone:
            tqdm.write(f"fastspec: {self.out_dir}: training resumed at step {step}; the {len(gone)} point(s) an "
                       f"earlier run measured after it are replaced as this run reaches them ({', '.join(gone)})")
        return frame[frame["step"] <= step].to_dict("records")

    def measure(self, model: torch.nn.Module, tokenizer: Any, step: int, event: str) -> dict[str, float]:
        """Measure ``model`` at training ``step`` (``event``: what triggered it, recorded as
        ``chosen_by = "callback:<event>"``) and return the metrics to log:
        ``geometry/{rankme,rankme_sv,alpha,phase}/layer_{l}``. Every rank must call it."""
        self.begin(model, step)
        rank, world = process_rank()
        s = self.settings
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        stats: dict[str, Any] = {}
        try:
            accs = extract(model, tokenizer, self.texts, settings=s, shard=(rank, world) if world > 1 else None,
                           progress=False, stats=stats)
        except NonFiniteError as err:  # its advice (nan_policy='omit') is not a setting of a training callback
            raise ValueError(f"fastspec GeometryCallback: at training step {step} ({event}), the model's {err.what} "
                             "Its weights or activations went NaN/Inf: training has diverged (a lower learning "
                             "rate, gradient clipping or another precision helps); there is no geometry to "
                             "measure.") from None
        finally:
            model.train(was_training)
        if world > 1:
            for acc in accs.values():
                acc.all_reduce()
        t1 = time.perf_counter()
        layers = None
        if rank == 0:
            layers, arrays = layer_results(accs, self.fit_range)
            if self._results is not None:
                self._results.write(Checkpoint(f"step{step}"), {
                    "label": None, "chosen_by": f"callback:{event}", "index": int(step), "n_tokens": stats["n_tokens"],
                    "max_length": stats["max_length"], "tokens_read": stats["tokens_read"],
                    "seconds": {"extract": t1 - t0, "spectra": time.perf_counter() - t1},
                    "tokens_per_second": stats["n_tokens"] / max(t1 - t0, 1e-9), "layers": layers}, arrays)
                write_table(self.out_dir)
        logs: dict[str, float] = {}
        for rec in broadcast(layers, world):
            layer = int(rec["layer"])
            self.record({"step": int(step), "layer": layer, **{k: rec[k] for k in METRICS}})
            for k in METRICS:
                logs[f"geometry/{k}/layer_{layer}"] = float(rec[k]) if rec[k] is not None else float("nan")
            logs[f"geometry/phase/layer_{layer}"] = float(PHASE_CODES[self.phase[layer]])
        return logs

    def record(self, row: dict[str, Any], *, notify: bool = True) -> str:
        """Add one point (``step``, ``layer``, ``rankme``, ``rankme_sv``, ``alpha``) to the layer's
        trajectory, replacing an earlier point of that step, and return the layer's phase now:
        :func:`fastspec.phases`' label of the last point of the trajectory so far. With
        ``notify``, warn on a collapse (on rank 0) and call ``on_phase_change`` (on every rank)."""
        step, layer = row["step"], row["layer"]
        self.history = [r for r in self.history if not (r["step"] == step and r["layer"] == layer)] + [row]
        mine = sorted((r for r in self.history if r["layer"] == layer), key=lambda r: r["step"])
        frame = pd.DataFrame([{**r, "checkpoint": f"step{r['step']}"} for r in mine])
        warmup = self.warmup_steps if self.warmup_steps else None
        new = phases(frame, layer=layer, warmup_steps=warmup, tol=self.tol)["phase"].iloc[-1]
        old = self.phase.get(layer)
        self.phase[layer] = new
        rank_now = float(row["rankme"])
        ref = max(self._reference.get(layer, rank_now), rank_now)
        self._reference[layer] = ref
        if not notify:
            return new
        if self.collapse is not None and rank_now <= self.collapse * ref:
            if process_rank()[0] == 0:
                warnings.warn(f"fastspec: layer {layer}'s RankMe collapsed to {rank_now:.2f} at step {step}, from "
                              f"{ref:.2f} (at most {self.collapse:g} of its highest since the last warning); phase "
                              f"{new}", RankCollapseWarning, stacklevel=3)
            self._reference[layer] = rank_now
        if new != old and self.on_phase_change is not None:
            self.on_phase_change(int(step), layer, old, new)
        return new


#: The Parameters, Raises and Warns sections of both training callbacks, written once;
#: ``{tokenizer}``, ``{events}`` and ``{warmup}`` are each callback's own words.
CALLBACK_PARAMETERS = """\
Parameters
----------
texts : sequence of str
    The probe texts, the same at every measurement, so that a change is the model's and not
    the data's.
tokenizer : tokenizer, optional
    The Hugging Face tokenizer of ``texts``. Default: {tokenizer}.
layers : 'all', int or sequence of int, default 'all'
    The layers measured, numbered as `fastspec.extract` does: 0 the embedding output, l the
    output of block l, negative from the end.
pooling : {{'last', 'mean', 'cls'}} or int, default 'last'
    Each text's row: its last real token (the paper's), the mean over its tokens, its first
    token, or the token at a position.
max_length : int, default %(max_length)d
    Tokens kept per text, cut to the model's context when that is shorter (the length used
    is in ``config.json``).
batch_size : int, default 16
    Probe texts per forward pass.
every_n_steps : int, optional
    Measure every this many optimiser steps, instead of {events}.
out_dir : str or os.PathLike, optional
    A results directory in `fastspec.trace`'s format, one checkpoint per measurement
    (``step<N>``), which `fastspec.load_trace`, ``fastspec plot`` and ``fastspec report``
    read; training resumed from a checkpoint continues it.
at_start : bool, default True
    Also measure before the first optimiser step (step 0, for the warmup collapse).
fit_range : tuple of int, default %(fit_range)s
    0-based ``[start, stop)`` eigenvalue indices of the α fit.
warmup_steps : int, optional
    The phase rule's warmup (`fastspec.phases`): checkpoints at a step up to it are
    ``warmup``. Default: {warmup}.
tol : float, default 0.1
    The phase rule's threshold: RankMe must move by more than this fraction to end a run.
collapse : float or None, default 0.5
    Warn when a layer's RankMe falls to this fraction of its highest value since its last
    warning; None: never.
on_phase_change : callable, optional
    ``on_phase_change(step, layer, old, new)``, called on every rank with the same
    arguments when a layer's phase changes (``old`` is None at the layer's first point).

Raises
------
ValueError
    No probe texts, ``every_n_steps`` not a positive integer, ``tol`` or ``collapse`` not
    in (0, 1); at the start of training, a probe text that tokenises to nothing, or an
    ``out_dir`` holding results made with other settings.
TypeError
    ``texts`` not a sequence of strings, or ``on_phase_change`` not callable.
fastspec.SettingError
    ``layers``, ``pooling``, ``batch_size``, ``max_length`` or ``fit_range`` out of range,
    naming it.

Warns
-----
RankCollapseWarning
    A layer's RankMe fell to ``collapse`` of its highest value (see ``collapse``).
""" % {"max_length": DEFAULT_MAX_LENGTH, "fit_range": DEFAULT_FIT_RANGE}


class CallbackCore:
    """What the Hugging Face and Lightning callbacks share: their arguments, checked (those of
    :class:`fastspec.integrations.hf.GeometryCallback`), the :class:`OnlineGeometry` they
    feed, the tokenizer resolved at the start of training, and the step measured last (an
    evaluation and a save at one step are measured once).

    A subclass that sets ``_doc_words`` (``tokenizer``, ``events``, ``warmup``: its own words
    for those defaults) gets `CALLBACK_PARAMETERS` in its docstring, so both callbacks
    document the arguments from one text.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        words = cls.__dict__.get("_doc_words")
        if words is not None and cls.__doc__:
            cls.__doc__ = with_parameters(cls.__doc__, CALLBACK_PARAMETERS.format(**words))

    def __init__(self, texts: Sequence[str], *, tokenizer: Any = None, layers: str | int | Sequence[int] = "all",
                 pooling: str | int = "last", max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 16,
                 every_n_steps: int | None = None, out_dir: str | os.PathLike | None = None, at_start: bool = True,
                 fit_range: tuple[int, int] = DEFAULT_FIT_RANGE, warmup_steps: int | None = None, tol: float = 0.1,
                 collapse: float | None = 0.5, on_phase_change: PhaseChange | None = None):
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int)
                                          or every_n_steps < 1):
            raise ValueError(f"every_n_steps must be a positive number of steps or None, got {every_n_steps!r}")
        self.geometry = OnlineGeometry(texts, layers=layers, pooling=pooling, max_length=max_length,
                                       batch_size=batch_size, out_dir=out_dir, fit_range=fit_range,
                                       warmup_steps=warmup_steps, tol=tol, collapse=collapse,
                                       on_phase_change=on_phase_change)
        self.tokenizer, self.every_n_steps, self.at_start = tokenizer, every_n_steps, at_start
        self._tokenizer: Any = None
        self._last_step: int | None = None

    def _use_tokenizer(self, fallback: Any, hint: str) -> None:
        """The tokenizer given, else ``fallback`` (the training framework's); an error naming
        ``hint`` (where else one could come from) when there is neither."""
        self._tokenizer = self.tokenizer if self.tokenizer is not None else fallback
        if self._tokenizer is None:
            raise ValueError(f"GeometryCallback needs a tokenizer: pass tokenizer=..., or {hint}")

    def _new_step(self, step: int) -> bool:
        """Whether ``step`` is not measured yet (and from now on it is)."""
        if step == self._last_step:
            return False
        self._last_step = step
        return True
