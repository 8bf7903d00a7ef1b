"""Representation geometry during Hugging Face ``Trainer`` training, with phase alerts.

>>> from fastspec.integrations.hf import GeometryCallback
>>> trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
>>> GeometryCallback(probe_texts, out_dir="geometry").attach(trainer)
>>> trainer.train()

At the start of training (step 0, for the warmup collapse), at every evaluation and every save
(or every ``every_n_steps`` steps instead) the callback measures the model being trained on
the fixed probe texts (``OnlineGeometry``: eval mode, no
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
    """RankMe (both conventions), α and the phase of every layer of the model a ``Trainer`` trains.

    The model is measured on fixed probe ``texts`` (eval mode, no grad, its own device and
    dtype) at the start of training, at every evaluation and every save, or every
    ``every_n_steps`` steps instead; the metrics ``geometry/rankme/layer_{l}``,
    ``geometry/rankme_sv/layer_{l}``, ``geometry/alpha/layer_{l}`` and
    ``geometry/phase/layer_{l}`` (0 warmup, 1 entropy-seeking, 2 compression-seeking,
    3 flat) are logged. Registered with `attach`, they go through ``Trainer.log`` to every
    reporting integration; given as ``Trainer(callbacks=[callback])`` instead, only to
    ``state.log_history``. Under DDP every rank measures its shard of the probe batches and
    gets the same numbers.

    See Also
    --------
    fastspec.integrations.lightning.GeometryCallback : The same for Lightning.
    fastspec.phases : The phase rule.

    Examples
    --------
    >>> from fastspec.integrations.hf import GeometryCallback
    >>> probe = ["The cat sat on the mat.", "Stock prices fell sharply on Monday."]
    >>> callback = GeometryCallback(probe, layers=[-1], every_n_steps=50, out_dir="geometry")
    >>> callback.every_n_steps, callback.at_start
    (50, True)
    >>> GeometryCallback(probe, every_n_steps=0)
    Traceback (most recent call last):
    ...
    ValueError: every_n_steps must be a positive number of steps or None, got 0

    With a ``transformers.Trainer``, `attach` registers it; after training,
    ``trainer.state.log_history`` holds the metrics and ``geometry/`` a results directory
    that `fastspec.load_trace` reads::

        callback.attach(trainer)
        trainer.train()
    """

    _doc_words = {"tokenizer": "the Trainer's ``processing_class``",
                  "events": "at every evaluation and every save",
                  "warmup": "the Trainer's own learning-rate warmup, when it has one"}
    trainer: Any = None  # set by attach

    def attach(self, trainer: Any) -> "GeometryCallback":
        """Register with ``trainer``, and log through its ``Trainer.log``.

        A ``TrainerCallback`` is handed no Trainer, so without this it can only append its
        metrics to ``state.log_history``; attached, they also reach every reporting
        integration (TensorBoard, W&B, the progress bar).

        Parameters
        ----------
        trainer : transformers.Trainer
            The Trainer whose model is measured.

        Returns
        -------
        GeometryCallback
            This callback, so that ``GeometryCallback(texts).attach(trainer)`` reads as one line.

        Examples
        --------
        >>> from fastspec.integrations.hf import GeometryCallback
        >>> class Trainer:  # stands in for a transformers.Trainer: attach uses add_callback
        ...     def add_callback(self, callback):
        ...         self.callbacks = [callback]
        >>> trainer = Trainer()
        >>> callback = GeometryCallback(["a probe text"], every_n_steps=10).attach(trainer)
        >>> trainer.callbacks == [callback], callback.trainer is trainer
        (True, True)
        """
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
        """At the start of training: check the set-up, open ``out_dir``, measure step 0.

        What would fail at the first measurement fails here, before any training: no
        tokenizer, a Trainer that neither evaluates nor saves without ``every_n_steps``, a
        probe text that tokenises to nothing, an ``out_dir`` of other settings. Resumed from
        a checkpoint, the trajectories continue from ``out_dir``'s points up to its step.

        Parameters
        ----------
        args : transformers.TrainingArguments
            The Trainer's arguments.
        state : transformers.TrainerState
            The Trainer's state (``global_step``, ``log_history``).
        control : transformers.TrainerControl
            The Trainer's control flags (left as they are).
        **kwargs
            What the Trainer passes its callbacks: ``model``, ``processing_class``, ….

        Raises
        ------
        ValueError
            One of the faults above.
        """
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
        """After an optimiser step: measure, with ``every_n_steps``, at its multiples.

        Parameters
        ----------
        args : transformers.TrainingArguments
            The Trainer's arguments.
        state : transformers.TrainerState
            The Trainer's state (``global_step``, ``log_history``).
        control : transformers.TrainerControl
            The Trainer's control flags (left as they are).
        **kwargs
            What the Trainer passes its callbacks: ``model``, ``processing_class``, ….
        """
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._measure(args, state, kwargs, "every_n_steps")

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After an evaluation: measure (without ``every_n_steps``; once per step).

        Parameters
        ----------
        args : transformers.TrainingArguments
            The Trainer's arguments.
        state : transformers.TrainerState
            The Trainer's state (``global_step``, ``log_history``).
        control : transformers.TrainerControl
            The Trainer's control flags (left as they are).
        **kwargs
            What the Trainer passes its callbacks: ``model``, ``processing_class``, ….
        """
        if self.every_n_steps is None:
            self._measure(args, state, kwargs, "evaluate")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After a checkpoint save: measure (without ``every_n_steps``; once per step).

        Parameters
        ----------
        args : transformers.TrainingArguments
            The Trainer's arguments.
        state : transformers.TrainerState
            The Trainer's state (``global_step``, ``log_history``).
        control : transformers.TrainerControl
            The Trainer's control flags (left as they are).
        **kwargs
            What the Trainer passes its callbacks: ``model``, ``processing_class``, ….
        """
        if self.every_n_steps is None:
            self._measure(args, state, kwargs, "save")
