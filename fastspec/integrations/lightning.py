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
    """RankMe (both conventions), α and the phase of every layer of the Hugging Face model a
    Lightning ``Trainer`` trains, on fixed probe ``texts``: the arguments of
    :class:`fastspec.integrations.hf.GeometryCallback` (``tokenizer`` defaults to the
    LightningModule's ``tokenizer`` attribute; ``warmup_steps`` None: the phase rule's first
    fall)."""

    def _measure(self, trainer: Any, module: Any, event: str) -> None:
        step = int(trainer.global_step)
        if not self._new_step(step):
            return
        logs = self.geometry.measure(_hf_model(module), self._tokenizer, step, event)
        for logger in trainer.loggers:
            logger.log_metrics(logs, step=step)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._use_tokenizer(getattr(pl_module, "tokenizer", None), "give the LightningModule a tokenizer attribute")
        self.geometry.begin(_hf_model(pl_module), int(trainer.global_step), self._tokenizer)
        if self.at_start and trainer.global_step == 0:
            self._measure(trainer, pl_module, "start")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0:
            self._measure(trainer, pl_module, "every_n_steps")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.every_n_steps is None and not trainer.sanity_checking:
            self._measure(trainer, pl_module, "evaluate")

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self.every_n_steps is None:
            self._measure(trainer, pl_module, "save")
