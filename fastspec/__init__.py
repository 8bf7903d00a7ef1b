"""fastspec: the geometry of neural representations, fast.

Eigenspectra of activation covariances, RankMe and α-ReQ, streamed and mergeable; extracted
from Hugging Face models and traced across checkpoints and layers; an ∞-gram suffix-array
engine and distributional memorization (Wang et al., 2025). Every name below is imported
from ``fastspec`` itself.

Spectra and metrics
    :func:`fastspec.spectrum`, the eigenspectrum of an N×d array (a
    :class:`fastspec.Spectrum`); :class:`fastspec.CovarianceAccumulator`, the same streamed
    over batches, mergeable, all-reducible, with jackknife folds; :func:`fastspec.rankme` and
    :func:`fastspec.alpha_req` (a :class:`fastspec.AlphaFit`) on any spectrum;
    :func:`fastspec.backends`, what this install computes with.
Models and checkpoints
    :func:`fastspec.extract` (last-token activations of a Hugging Face model, layer by
    layer), :func:`fastspec.trace` (every checkpoint of a run, resumable),
    :func:`fastspec.load_trace`, :func:`fastspec.phases` (the phases of RankMe over training),
    :func:`fastspec.load_texts`; their settings :class:`fastspec.ExtractSettings` and
    :class:`fastspec.TraceSettings`; :class:`fastspec.CheckpointError` and
    :class:`fastspec.SettingError`.
∞-gram and memorization
    :class:`fastspec.InfGramIndex`, :func:`fastspec.memorization` and
    :func:`fastspec.memorization_trace` (a :class:`fastspec.MemorizationResult`, with
    :class:`fastspec.MemorizationSettings`).
Analyses
    :func:`fastspec.ablate` (top-k eigenvector ablation), :func:`fastspec.pass_at_k`,
    :func:`fastspec.correlate` (geometry against scores across checkpoints), and
    :mod:`fastspec.toy`, the toy model of the phases.
With other tools
    :mod:`fastspec.integrations.hf` and :mod:`fastspec.integrations.lightning` (training
    callbacks), :mod:`fastspec.integrations.torchmetrics`, :mod:`fastspec.integrations.lm_eval`,
    :mod:`fastspec.compat.reptrix` (Reptrix's functions, computed by fastspec); each imports
    its tool only when used. The command line is ``fastspec`` (``python -m fastspec``).

The conventions (DESIGN.md, and the documentation's conventions table): the covariance is
centred with ddof=1 and merged with Chan, Golub and LeVeque's update in float64; RankMe is
the seed paper's and Reptrix's ``convention="eig"`` by default; α-ReQ is the weighted fit
over 0-based indices (11, 100).

For contributors: one subpackage per capability, lowest layer first (import-linter holds
the order, see pyproject.toml): ``spectral`` (the core); ``models`` (extraction, tracing,
phases) beside ``ngram`` (the ∞-gram engine); ``analyses``; ``report``; and ``cli``/``demo``
on top. This module only re-exports the public names.
"""

try:
    from . import _C  # noqa: F401  (the compiled core; every install has it)
except ImportError as err:  # pragma: no cover - only a source tree that was never built
    import os as _os

    raise ImportError(
        f"fastspec's compiled module fastspec._C is missing from {_os.path.dirname(__file__)}: "
        "this looks like a source checkout that was not installed. Install it with "
        "`pip install .` and run from outside the source directory (or use pytest, which "
        "imports the installed package)."
    ) from err

import sys as _sys

from ._version import __version__
from .analyses import MemorizationResult, ablate, correlate, memorization, memorization_trace, pass_at_k, toy
from .backends import backends
from ._settings import SettingError
from .models import (
    CheckpointError,
    ExtractSettings,
    MemorizationSettings,
    TraceSettings,
    extract,
    load_texts,
    load_trace,
    phases,
    trace,
)
from .ngram import InfGramIndex
from .spectral import AlphaFit, CovarianceAccumulator, Spectrum, alpha_req, rankme, spectrum

# fastspec.toy is a module (fastspec.toy.train, .run_conditions, .compression) that lives in
# fastspec/analyses/; registered under its public name too, so `import fastspec.toy` works.
_sys.modules.setdefault(f"{__name__}.toy", toy)

__all__ = [
    "AlphaFit",
    "CheckpointError",
    "CovarianceAccumulator",
    "ExtractSettings",
    "InfGramIndex",
    "MemorizationResult",
    "MemorizationSettings",
    "SettingError",
    "Spectrum",
    "TraceSettings",
    "__version__",
    "ablate",
    "alpha_req",
    "backends",
    "correlate",
    "extract",
    "load_texts",
    "load_trace",
    "memorization",
    "memorization_trace",
    "pass_at_k",
    "phases",
    "rankme",
    "spectrum",
    "toy",
    "trace",
]
