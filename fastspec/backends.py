"""What this install of fastspec can do, and for what it cannot, why."""

from __future__ import annotations

from typing import Any

import torch

from . import _C
from .spectral import kernels as cuda_kernels


def backends() -> dict[str, dict[str, Any]]:
    """What this install can compute with, and for what it cannot, why.

    Returns
    -------
    dict
        ``{name: {"available": bool, "detail" or "reason": str}}`` for each path:

        - ``torch_cpu``: the reference path (always there).
        - ``torch_cuda``: the torch path on a CUDA device (needs a CUDA build of torch and a
          GPU).
        - ``cuda_kernels``: fastspec's CUDA kernels (``fastspec._C_cuda``): available when
          they were built (``FASTSPEC_CUDA``), import, and find a driver and a device;
          otherwise the reason names the first of those that failed. ``devices``: per
          visible device, "ok" or why work there uses the torch path (compute capability
          below 8.0, or a failed canary: the kernels disagreed with the torch path in float64
          on that device).
        - ``infgram``: the C++ suffix-array ∞-gram engine (compiled into ``fastspec._C``).
        - ``build``: the compiled module's version and compiler.

    See Also
    --------
    fastspec.spectrum : Its ``backend`` argument chooses between these paths.

    Examples
    --------
    >>> info = fastspec.backends()
    >>> sorted(info)
    ['build', 'cuda_kernels', 'infgram', 'torch_cpu', 'torch_cuda']
    >>> info["torch_cpu"]["available"], info["infgram"]["available"]
    (True, True)
    """
    info = _C.build_info()
    out: dict[str, dict[str, Any]] = {
        "torch_cpu": {"available": True, "detail": f"torch {torch.__version__}, float64 accumulation and eigensolver"},
    }
    if torch.cuda.is_available():
        out["torch_cuda"] = {"available": True, "detail": f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"}
    elif torch.version.cuda is None:
        out["torch_cuda"] = {"available": False, "reason": f"torch {torch.__version__} was built without CUDA"}
    else:
        out["torch_cuda"] = {"available": False, "reason": f"torch built for CUDA {torch.version.cuda}, but no CUDA device is visible"}
    usable, why = cuda_kernels.status()
    out["cuda_kernels"] = {"available": usable, "detail" if usable else "reason": why}
    if usable:  # per device: the canary passed ("ok"), or why that device uses the torch path
        devices = cuda_kernels.device_report()
        out["cuda_kernels"]["devices"] = devices
        if not any(v == "ok" for v in devices.values()):
            out["cuda_kernels"] = {"available": False, "reason": "; ".join(devices.values()), "devices": devices}
    for name in ("infgram",):
        part = info[name]
        out[name] = {"available": bool(part["built"])}
        out[name]["detail" if part["built"] else "reason"] = part.get("detail", part.get("reason", ""))
    out["build"] = {"available": True, "detail": f"fastspec._C {info['version']}, {info['compiler']}"}
    return out
