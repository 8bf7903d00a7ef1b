"""The spectral core: eigenspectra of activation covariances, RankMe and α-ReQ.

The bottom layer of fastspec: it knows no model, tokenizer, corpus or command line, and
imports nothing from the rest of fastspec but the compiled modules (``fastspec._C``,
``fastspec._C_cuda``). Modules, lowest first:

- ``inputs``: what users hand in (torch, NumPy, DLPack) as a checked matrix; the NaN policy.
- ``metrics``: RankMe and α-ReQ of an eigenvalue array; ``DEFAULT_FIT_RANGE``.
- ``moments``: per-chunk numerics (centred products, Chan's merge) in :class:`Moments`, and
  the torch path as an ops object (``TorchOps``: chunk products, eigensolves, chunk sizes).
- ``kernels``: the Python side of the CUDA kernels (pointers, workspaces, streams, the
  canary), and that path as an ops object (``CudaOps``, the same methods).
- ``backend``: the one decision "kernels or torch" (``ops_for``), made per accumulator or call.
- ``record``: the result records: :class:`Spectrum`, :class:`MetricsRecord` (RankMe both
  ways, α and its fit, n, d, jackknife SEs; the one place that assembles the metrics dict),
  :class:`Jackknife`.
- ``eigen``: the spectrum of a scatter matrix (``spectrum_of_scatter``); ``metrics_of``.
- ``accumulator``: :class:`CovarianceAccumulator`, streaming, mergeable, all-reducible.
- ``folds``: :class:`FoldedAccumulator`, what ``CovarianceAccumulator(dim, folds=K)`` makes:
  K folds of the rows and the jackknife over them.
- ``oneshot``: :func:`spectrum` of an N×d array (accumulator or Gram path); ``summarize``.
- ``io``: activation files (.npy, .pt, .safetensors) read block by block.
- ``files``: :func:`file_metrics`, the metrics record of an activation file.
"""

from .accumulator import CovarianceAccumulator
from .files import file_metrics
from .folds import FoldedAccumulator
from .io import open_activations
from .metrics import DEFAULT_FIT_RANGE, AlphaFit, SpectrumTooShort, alpha_req, rankme
from .oneshot import spectrum, summarize
from .record import Jackknife, MetricsRecord, Spectrum

__all__ = ["DEFAULT_FIT_RANGE", "AlphaFit", "CovarianceAccumulator", "FoldedAccumulator", "Jackknife",
           "MetricsRecord", "Spectrum", "SpectrumTooShort", "alpha_req", "file_metrics", "open_activations",
           "rankme", "spectrum", "summarize"]
