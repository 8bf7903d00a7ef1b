"""Representation geometry during Hugging Face ``Trainer`` training, with phase alerts.

>>> from fastspec.integrations.hf import GeometryCallback
>>> trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
>>> GeometryCallback(probe_texts, out_dir="geometry").attach(trainer)
>>> trainer.train()

At the start of training (step 0, for the warmup collapse), at every evaluation and every save
(or every ``every_n_steps`` steps instead) the callback measures the model being trained on
the fixed probe texts (:class:`~fastspec.integrations._online.OnlineGeometry`: eval mode, no
grad, the model's own device and dtype) and logs ``geometry/rankme/layer_{l}``,
``geometry/rankme_sv/layer_{l}``, ``geometry/alpha/layer_{l}`` and ``geometry/phase/layer_{l}``
(0 warmup, 1 entropy-seeking, 2 compression-seeking, 3 flat). With ``out_dir`` it writes a
results directory in :func:`fastspec.trace`'s format.

Logging. A ``TrainerCallback`` is handed no Trainer, so it cannot call the Trainer's logging
itself: :meth:`GeometryCallback.attach` registers the callback and keeps the Trainer, and the
metrics go through ``Trainer.log`` (into ``state.log_history`` and every reporting
integration: TensorBoard, W&B, the progress bar). Given as ``Trainer(callbacks=[cb])``
instead, the callback appends its metrics to ``state.log_history`` only (saved with each
checkpoint's ``trainer_state.json``), and the reporting integrations do not see them.

Under DDP (torchrun) every rank measures its shard of the probe batches, the accumulators are
all-reduced, rank 0 writes ``out_dir``, and every rank gets the same numbers (the Trainer's
reporting integrations log on rank 0 only).
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - transformers is a dependency of fastspec
    raise ImportError("fastspec.integrations.hf needs transformers") from err

from ._online import CallbackCore, RankCollapseWarning

__all__ = ["GeometryCallback", "RankCollapseWarning"]


class GeometryCallback(CallbackCore, TrainerCallback):
    """RankMe (both conventions), α and the phase of every layer of the model a ``Trainer``
    trains, on fixed probe ``texts`` (see the module docstring).

    ``tokenizer``: defaults to the Trainer's ``processing_class``. ``layers``, ``pooling``,
    ``max_length`` (cut to the model's context), ``batch_size``: :func:`fastspec.extract`'s.
    ``every_n_steps``: measure every this many optimiser steps instead of at evaluations and
    saves. ``out_dir``: a results directory in :func:`fastspec.trace`'s format, one checkpoint
    per measurement (``step<N>``); a run resumed from a checkpoint continues it. ``at_start``:
    also measure before the first step. ``fit_range``: α's. ``warmup_steps``: the phase
    rule's (None: the Trainer's own learning-rate warmup, when it has one), ``tol``: its
    threshold. ``collapse``: warn (:class:`RankCollapseWarning`) when a layer's RankMe falls to
    this fraction of its highest value since its last warning (None: never).
    ``on_phase_change(step, layer, old, new)``: called when a layer's phase changes.
    """

    trainer: Any = None  # set by attach

    def attach(self, trainer: Any) -> "GeometryCallback":
        """Register with ``trainer`` and log through its ``Trainer.log`` (see the module docstring)."""
        trainer.add_callback(self)
        self.trainer = trainer
        return self

    def _measure(self, args: Any, state: Any, kwargs: dict[str, Any], event: str) -> None:
        step = int(state.global_step)
        if not self._new_step(step):
            return
        logs = self.geometry.measure(kwargs["model"], self._tokenizer, step, event)
        if self.trainer is not None:
            # Trainer.log clears control.should_log: restored, or the Trainer's own log of this
            # step (the loss), due after on_step_end, would be skipped.
            due = self.trainer.control.should_log
            self.trainer.log(dict(logs))
            self.trainer.control.should_log = due
        else:
            state.log_history.append({**logs, "step": step})

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # What would fail at the first measurement fails here, before any training.
        self._use_tokenizer(kwargs.get("processing_class"), "give the Trainer one (processing_class=...)")
        if self.every_n_steps is None and args.save_strategy == "no" and args.eval_strategy == "no":
            raise ValueError("GeometryCallback measures at evaluations and saves, and this Trainer does neither "
                             "(eval_strategy and save_strategy are 'no'): pass every_n_steps=N")
        if self.geometry.warmup_steps is None and state.max_steps:
            self.geometry.warmup_steps = args.get_warmup_steps(state.max_steps) or None
        self.geometry.begin(kwargs["model"], int(state.global_step), self._tokenizer)
        if self.at_start and state.global_step == 0:
            self._measure(args, state, kwargs, "start")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._measure(args, state, kwargs, "every_n_steps")

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every_n_steps is None:
            self._measure(args, state, kwargs, "evaluate")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every_n_steps is None:
            self._measure(args, state, kwargs, "save")
