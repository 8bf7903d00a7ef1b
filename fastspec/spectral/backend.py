"""Which path a spectrum is computed on: torch (any device) or fastspec's CUDA kernels.

The one decision, made once per accumulator or call by :func:`ops_for`, whose answer is an
ops object (:class:`~fastspec.spectral.moments.TorchOps` or
:class:`~fastspec.spectral.kernels.CudaOps`, the same methods): chunk products, eigensolves
and chunk sizes then go through it, and nothing downstream branches on the path.
"""

from __future__ import annotations

import torch

from . import kernels as cuda_kernels
from .moments import TORCH, Ops

BACKENDS = ("auto", "torch", "cuda")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def placement(backend: str, device: torch.device | None) -> torch.device | None:
    """Where the state of a computation with ``backend`` lives, given the ``device`` asked
    for (None: decided by the first rows). ``backend="cuda"`` requires the kernels
    (NotImplementedError saying why), puts the state on the current CUDA device unless
    ``device`` names one, and refuses a device that is not CUDA."""
    check_backend(backend)
    if backend != "cuda":
        return device
    cuda_kernels.require("backend='cuda'")
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cuda":
        raise ValueError(f"backend='cuda' keeps the state on a CUDA device, got device={str(device)!r}")
    cuda_kernels.require("backend='cuda'", device)
    return device


def ops_for(backend: str, device: torch.device, products: str = "fp32") -> Ops:
    """The path for work on ``device``: the CUDA kernels (with the ``products`` path) on a
    CUDA device when ``backend`` is "cuda", or "auto" with the kernels available there
    (``fastspec.backends()``); the torch path otherwise."""
    if backend != "torch" and device.type == "cuda" and cuda_kernels.available(device):
        return cuda_kernels.CudaOps(products)
    return TORCH
