"""Turn what users hand us (torch, NumPy, DLPack) into a checked 2-D torch tensor.

One place for the checks, so every entry point names the same faults the same way.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .._settings import SettingError, literal

FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
NAN_POLICIES = ("raise", "omit")


def as_matrix(x: Any, name: str = "acts") -> torch.Tensor:
    """Return ``x`` as a 2-D floating torch tensor without copying where possible.

    Accepts torch tensors on any device, NumPy arrays (memory-mapped ones included: they
    stay on disk until read), and anything that implements ``__dlpack__`` (JAX, CuPy, ...).
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind != "f" or x.dtype.itemsize > 8:
            raise TypeError(
                f"{name}: dtype {x.dtype} is not supported; expected a floating array "
                f"(float16, bfloat16, float32 or float64), e.g. x.astype(np.float32)"
            )
        if not x.dtype.isnative:  # torch reads native byte order only
            x = x.astype(x.dtype.newbyteorder("="))
        if any(st < 0 for st in x.strides):  # a reversed view (x[::-1]): torch takes none
            x = np.ascontiguousarray(x)
        with warnings.catch_warnings():
            # A read-only array (np.load(mmap_mode='r')) is fine: fastspec never writes to it.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(x)
    elif hasattr(x, "__dlpack__"):
        t = torch.from_dlpack(x)
    else:
        raise TypeError(
            f"{name}: expected a torch tensor, a NumPy array or a DLPack-capable array, "
            f"got {type(x).__name__}"
        )
    if t.layout != torch.strided:
        raise TypeError(f"{name}: a {t.layout} tensor is not supported; pass a dense one (x.to_dense())")
    if t.device.type == "meta":
        raise ValueError(f"{name}: a tensor on the 'meta' device holds no values; materialise it first")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}: dtype {t.dtype} is not supported; expected bfloat16, float16, "
            f"float32 or float64 (integer, boolean and complex activations are refused)"
        )
    if t.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array (samples × features), got shape {tuple(t.shape)}"
            + ("; pass x.reshape(len(x), -1) to flatten features" if t.ndim > 2 else "")
            + ("; pass x.reshape(-1, 1) for one feature" if t.ndim == 1 else "")
        )
    return t


def check_nan_policy(nan_policy: str) -> str:
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    return nan_policy


class NonFiniteError(SettingError):
    """Rows with NaN or Inf under ``nan_policy="raise"``: ``what`` says how many and where the
    first is; the message adds the advice to pass ``nan_policy='omit'`` (``--nan-policy omit``),
    which a caller that takes no such setting replaces with its own."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(literal(what) + " Fix the input, or pass {nan_policy} to drop rows that contain them.",
                         nan_policy="omit")

    def prefixed(self, prefix: str) -> "NonFiniteError":
        return NonFiniteError(prefix + self.what)


def nonfinite_rows(x: torch.Tensor, name: str, nan_policy: str, *, stream_offset: int | None = None
                   ) -> torch.Tensor | None:
    """Locate non-finite entries of ``x``.

    Returns None when every entry is finite. Otherwise raises ValueError naming how many
    entries are bad and where the first one is, as a row of ``x`` itself (and, given
    ``stream_offset``, the rows a stream held before ``x``, as a position in the stream too)
    (``nan_policy="raise"``), or returns a boolean mask of the rows to keep
    (``nan_policy="omit"``).
    """
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    if nan_policy == "omit":
        return ~bad.any(dim=1)
    count = int(bad.sum())
    rows = int(bad.any(dim=1).sum())
    r, c = (int(v) for v in bad.nonzero()[0])
    value = float(x[r, c])
    where = f"row {r}, column {c}" + (f" (row {stream_offset + r} of the rows streamed so far)" if stream_offset else "")
    raise NonFiniteError(f"{name}: {count} non-finite value(s) (NaN or Inf) in {rows} row(s); the first is {value} at "
                         f"{where}.")
