"""Metrics of stored activation files: :func:`file_metrics` streams a ``.npy``, ``.pt`` or
``.safetensors`` matrix (:func:`~fastspec.spectral.io.open_activations`) block by block into
its :class:`~fastspec.spectral.record.MetricsRecord` (what ``fastspec spectrum`` prints)."""

from __future__ import annotations

import os
from typing import Any

from tqdm import tqdm

from .._files import bar_off
from .._settings import SettingError

from .accumulator import CovarianceAccumulator
from .io import ActivationSource, open_activations
from .metrics import DEFAULT_FIT_RANGE
from .oneshot import spectrum
from .record import MetricsRecord


def file_metrics(path: str, *, key: str | None = None, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE,
                 nan_policy: str = "raise", progress: bool = True) -> dict[str, Any]:
    """Metrics of the activations stored in ``path`` (the tensor ``key`` where the file holds
    several), streamed block by block: ``{"file", "key", **MetricsRecord.to_dict(eigenvalues=True)}``
    of the centred and raw spectra of its rows, α over ``fit_range``. ``nan_policy`` as
    :class:`~fastspec.spectral.accumulator.CovarianceAccumulator`'s; ``progress`` shows a
    progress bar. A ValueError or OverflowError about the data names the file (and key)."""
    src = open_activations(path, key)
    try:
        record = source_metrics(src, fit_range=fit_range, nan_policy=nan_policy, progress=progress)
    except (ValueError, OverflowError) as err:  # name the file the fault is in
        # a SettingError keeps the settings it names (a flag on the command line)
        raise (err.prefixed(f"{src.name}: ") if isinstance(err, SettingError) else type(err)(f"{src.name}: {err}")) \
            from err
    return {"file": path, "key": src.key, **record.to_dict(eigenvalues=True)}


def source_metrics(src: ActivationSource, *, fit_range: tuple[int, int] = DEFAULT_FIT_RANGE,
                   nan_policy: str = "raise", progress: bool = True) -> MetricsRecord:
    """The :class:`~fastspec.spectral.record.MetricsRecord` of an opened activation source:
    N ≥ d streams row blocks through an accumulator (O(d²) memory); N < d reads the N rows at
    once for the N×N Gram path, which keeps that within O(d²) too."""
    n, d = src.shape
    if n < d:
        x = src.read(0, n)
        return MetricsRecord.of(spectrum(x, nan_policy=nan_policy), spectrum(x, center=False, nan_policy=nan_policy),
                                fit_range=fit_range)
    acc = CovarianceAccumulator(d, nan_policy=nan_policy)
    rows = acc.ops.chunk_rows(d)
    with tqdm(total=n, unit="row", desc=os.path.basename(src.path), disable=bar_off(progress)) as bar:
        for block in src.blocks(rows):
            acc.update(block)
            bar.update(block.shape[0])
    return acc.metrics(fit_range=fit_range)
