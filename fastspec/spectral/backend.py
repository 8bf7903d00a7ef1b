"""Which path a spectrum is computed on: torch (any device) or fastspec's CUDA kernels.

The one decision, made once per accumulator or call and handed down as ``kernels=``:
chunk products then go through :meth:`fastspec.spectral.moments.Moments.add_chunk` and
eigensolves through :func:`fastspec.spectral.eigen.eigh`, each of which dispatches on it.
"""

from __future__ import annotations

import torch

from . import kernels as cuda_kernels

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


def use_kernels(backend: str, device: torch.device) -> bool:
    """Whether work on ``device`` goes through the kernels: a CUDA device, and ``backend``
    "cuda", or "auto" with the kernels available (``fastspec.backends()``)."""
    return backend != "torch" and device.type == "cuda" and cuda_kernels.available(device)
