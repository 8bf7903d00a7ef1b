"""The spectral core: eigenspectra of activation covariances, RankMe and α-ReQ.

The bottom layer of fastspec: it knows no model, tokenizer, corpus or command line, and
imports nothing from the rest of fastspec but the compiled modules (``fastspec._C``,
``fastspec._C_cuda``). Modules, lowest first:

- ``inputs``: what users hand in (torch, NumPy, DLPack) as a checked matrix; the NaN policy.
- ``metrics``: RankMe and α-ReQ of an eigenvalue array.
- ``kernels``: the Python side of the CUDA kernels (pointers, workspaces, streams).
- ``backend``: the one decision "kernels or torch", made per accumulator or call.
- ``moments``: per-chunk numerics (centred products, Chan's merge); dispatches chunk products.
- ``eigen``: the :class:`Spectrum` type and the eigensolver; dispatches eigensolves.
- ``accumulator``: :class:`CovarianceAccumulator`, streaming, mergeable, all-reducible.
- ``oneshot``: :func:`spectrum` of an N×d array (accumulator or Gram path).
- ``io``: activation files (.npy, .pt, .safetensors) read block by block.
"""

from .accumulator import CovarianceAccumulator, Jackknife
from .eigen import Spectrum
from .io import open_activations
from .metrics import AlphaFit, SpectrumTooShort, alpha_req, rankme
from .oneshot import spectrum, summarize

__all__ = ["AlphaFit", "CovarianceAccumulator", "Jackknife", "Spectrum", "SpectrumTooShort", "alpha_req", "open_activations",
           "rankme", "spectrum", "summarize"]
