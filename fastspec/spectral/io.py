"""Read stored activations (.npy, .pt, .safetensors) row block by row block."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")


@dataclass
class ActivationSource:
    """A 2-D activation matrix on disk, read in row blocks (memory-mapped where possible)."""

    path: str
    key: str | None
    shape: tuple[int, int]
    dtype: Any
    _read: Callable[[int, int], Any]

    @property
    def name(self) -> str:
        return f"{self.path}" + (f"[{self.key!r}]" if self.key else "")

    def read(self, start: int, stop: int) -> Any:
        return self._read(start, stop)

    def blocks(self, rows: int) -> Iterator[Any]:
        for start in range(0, self.shape[0], rows):
            yield self.read(start, min(start + rows, self.shape[0]))


def _pick(names: list[str], key: str | None, path: str) -> str:
    if key is not None:
        if key not in names:
            raise KeyError(f"{path}: no tensor named {key!r}; it holds {sorted(names)}")
        return key
    if len(names) != 1:
        raise ValueError(f"{path} holds {len(names)} tensors {sorted(names)[:20]}; choose one with --key NAME")
    return names[0]


def _tensors(obj: dict, prefix: str = "") -> Any:
    """(dotted key, tensor) of every tensor in a dict, nested dicts included."""
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            yield prefix + str(k), v
        elif isinstance(v, dict):
            yield from _tensors(v, f"{prefix}{k}.")


def _checked(path: str, key: str | None, shape: tuple[int, ...], dtype: Any, read: Callable) -> ActivationSource:
    label = path + (f"[{key!r}]" if key else "")
    floating = dtype.is_floating_point if isinstance(dtype, torch.dtype) else (
        dtype in ("F16", "BF16", "F32", "F64") if isinstance(dtype, str) else np.dtype(dtype).kind == "f")
    if not floating:
        raise TypeError(f"{label}: dtype {dtype} is not supported; activations are floating point "
                        "(float16, bfloat16, float32 or float64)")
    if len(shape) != 2:
        raise ValueError(f"{label}: expected a 2-D array (samples × features), got shape {tuple(shape)}")
    return ActivationSource(path, key, (int(shape[0]), int(shape[1])), dtype, read)


def open_activations(path: str | os.PathLike, key: str | None = None) -> ActivationSource:
    """Open a ``.npy`` (memory-mapped), ``.pt``/``.pth`` (a tensor, or a dict of tensors,
    memory-mapped) or ``.safetensors`` file (read block by block) holding an N×d matrix.
    ``key`` names the tensor when the file holds several."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not an activation file ({', '.join(SUFFIXES)})")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path}: not a readable .npy file ({err})") from err
        if key is not None:
            raise ValueError(f"{path}: a .npy file holds one array; --key {key!r} does not apply")
        return _checked(path, None, arr.shape, arr.dtype, lambda a, b: arr[a:b])
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # torch raises many types for a bad file
            raise ValueError(f"{path}: not a readable torch file ({type(err).__name__}: {err})") from err
        if isinstance(obj, dict):
            tensors = dict(_tensors(obj))
            if not tensors:
                raise ValueError(f"{path}: holds a dict with no tensors in it (keys {sorted(map(str, obj))[:20]})")
            key = _pick(list(tensors), key, path)
            obj = tensors[key]
        elif key is not None:
            raise ValueError(f"{path}: holds a single tensor; --key {key!r} does not apply")
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{path}: holds a {type(obj).__name__}, not a tensor or a dict of tensors")
        t = obj
        return _checked(path, key, tuple(t.shape), t.dtype, lambda a, b: t[a:b])
    if suffix == ".safetensors":
        from safetensors import safe_open

        def unreadable(err: Exception) -> ValueError:
            return ValueError(f"{path}: not a readable safetensors file ({err})")

        try:
            handle = safe_open(path, framework="pt")
            names = list(handle.keys())
        except (OSError, ValueError, RuntimeError) as err:
            raise unreadable(err) from err
        except Exception as err:  # safetensors' own SafetensorError
            if type(err).__name__ != "SafetensorError":
                raise
            raise unreadable(err) from err
        key = _pick(names, key, path)  # outside the try: a choice to make, not a bad file
        sl = handle.get_slice(key)
        shape = tuple(sl.get_shape())
        return _checked(path, key, shape, sl.get_dtype(), lambda a, b: sl[a:b])
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {SUFFIXES}")

