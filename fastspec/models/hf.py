"""Hugging Face plumbing shared by extraction, tracing and the tiny models."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No load reports ("embed_out.weight UNEXPECTED": expected, as fastspec loads the model
    without its LM head) and no shard-writing progress bars; real errors still raise."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()
