"""Set-up that sphinx-gallery runs before each tutorial (``reset_modules`` in conf.py)."""

from __future__ import annotations

from typing import Any


def one_torch_thread(gallery_conf: Any, fname: str) -> None:
    """One torch thread. The tutorials' models are tiny, so a second thread gains little, and
    on a busy machine oversubscribed OpenMP threads spin: the toy model's 4000 steps took
    2.5 s of CPU with one thread and 86 s with two while other jobs ran on the same two cores."""
    import torch

    torch.set_num_threads(1)
