"""Representation geometry during Lightning training, with phase alerts: the Hugging Face
callback's twin (:mod:`fastspec.integrations.hf`) for ``lightning.pytorch.Trainer``.

>>> from fastspec.integrations.lightning import GeometryCallback
>>> trainer = lightning.pytorch.Trainer(callbacks=[GeometryCallback(probe_texts, tokenizer=tok, out_dir="geometry")])
>>> trainer.fit(module)

The model measured is the first Hugging Face ``PreTrainedModel`` inside the LightningModule
(the module itself, or an attribute of it). At the start of training, after every validation
(not the sanity check) and every checkpoint save, or every ``every_n_steps`` optimiser steps
instead, the metrics (``geometry/{rankme,rankme_sv,alpha,phase}/layer_{l}``) go to every
logger of the Trainer (``trainer.loggers``, at ``trainer.global_step``; Lightning's loggers
write on rank 0), and with ``out_dir`` into a results directory in :func:`fastspec.trace`'s
format. Under DDP every rank measures its shard of the probe batches and the accumulators
are all-reduced.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import Callback
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("fastspec.integrations.lightning needs lightning: pip install 'fastspec[lightning]'") from err

from ._online import CallbackCore, RankCollapseWarning

__all__ = ["GeometryCallback", "RankCollapseWarning"]


def _hf_model(module: Any) -> Any:
    from transformers import PreTrainedModel

    for sub in module.modules():
        if isinstance(sub, PreTrainedModel):
            return sub
    raise TypeError(f"GeometryCallback measures a Hugging Face model, and the {type(module).__name__} being trained "
                    "holds none (no transformers.PreTrainedModel among its modules)")


class GeometryCallback(CallbackCore, Callback):
    """RankMe (both conventions), α and the phase of every layer of a model Lightning trains.

    The Hugging Face callback's twin (`fastspec.integrations.hf.GeometryCallback`). The model
    measured is the first ``transformers.PreTrainedModel`` inside the LightningModule (the
    module itself, or an attribute of it), on fixed probe ``texts``, at the start of
    training, after every validation (not the sanity check) and every checkpoint save, or
    every ``every_n_steps`` steps instead. The metrics
    (``geometry/{rankme,rankme_sv,alpha,phase}/layer_{l}``) go to every logger of the
    Trainer at ``trainer.global_step``.

    See Also
    --------
    fastspec.integrations.hf.GeometryCallback : The same for the Hugging Face ``Trainer``.

    Examples
    --------
    >>> from fastspec.integrations.lightning import GeometryCallback
    >>> probe = ["The cat sat on the mat.", "Stock prices fell sharply on Monday."]
    >>> callback = GeometryCallback(probe, layers=[-1], every_n_steps=50, out_dir="geometry")
    >>> callback.every_n_steps
    50

    Given to a Trainer whose LightningModule holds a Hugging Face model and a ``tokenizer``
    attribute::

        trainer = lightning.pytorch.Trainer(callbacks=[callback], max_steps=1000)
        trainer.fit(module)
    """

    _doc_words = {"tokenizer": "the LightningModule's ``tokenizer`` attribute",
                  "events": "after every validation and every checkpoint save",
                  "warmup": "none: the phase rule's first fall is the warmup"}

    def _measure(self, trainer: Any, module: Any, event: str) -> None:
        step = int(trainer.global_step)
        if not self._new_step(step):
            return
        logs = self.geometry.measure(_hf_model(module), self._tokenizer, step, event)
        for logger in trainer.loggers:
            logger.log_metrics(logs, step=step)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """At the start of training: check the set-up, open ``out_dir``, measure step 0.

        Parameters
        ----------
        trainer : lightning.pytorch.Trainer
            The Trainer.
        pl_module : lightning.pytorch.LightningModule
            The module trained, holding the Hugging Face model.

        Raises
        ------
        ValueError
            No tokenizer, a probe text that tokenises to nothing, or an ``out_dir`` holding
            results made with other settings.
        TypeError
            The LightningModule holds no Hugging Face model.
        """
        self._use_tokenizer(getattr(pl_module, "tokenizer", None), "give the LightningModule a tokenizer attribute")
        self.geometry.begin(_hf_model(pl_module), int(trainer.global_step), self._tokenizer)
        if self.at_start and trainer.global_step == 0:
            self._measure(trainer, pl_module, "start")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After a training batch: measure, with ``every_n_steps``, at its multiples.

        Parameters
        ----------
        trainer : lightning.pytorch.Trainer
            The Trainer.
        pl_module : lightning.pytorch.LightningModule
            The module trained, holding the Hugging Face model.
        outputs : Any
            The training step's outputs (unused).
        batch : Any
            The batch (unused).
        batch_idx : int
            Its index (unused: steps are ``trainer.global_step``).
        """
        if self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0:
            self._measure(trainer, pl_module, "every_n_steps")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """After a validation (not the sanity check): measure, without ``every_n_steps``.

        Parameters
        ----------
        trainer : lightning.pytorch.Trainer
            The Trainer.
        pl_module : lightning.pytorch.LightningModule
            The module trained, holding the Hugging Face model.
        """
        if self.every_n_steps is None and not trainer.sanity_checking:
            self._measure(trainer, pl_module, "evaluate")

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """At a checkpoint save: measure, without ``every_n_steps`` (once per step).

        Parameters
        ----------
        trainer : lightning.pytorch.Trainer
            The Trainer.
        pl_module : lightning.pytorch.LightningModule
            The module trained, holding the Hugging Face model.
        checkpoint : dict
            The checkpoint being saved (left as it is).
        """
        if self.every_n_steps is None:
            self._measure(trainer, pl_module, "save")
