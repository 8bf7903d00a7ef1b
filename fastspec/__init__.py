"""fastspec: the geometry of neural representations, fast.

Eigenspectra of activation covariances, RankMe and alpha-ReQ, streamed and mergeable;
extracted from Hugging Face models and traced across checkpoints and layers; an ∞-gram
suffix-array engine and distributional memorization (Wang et al., 2025).
See README.md for the conventions and ``fastspec.backends()`` for what this install has.

One subpackage per capability, lowest layer first (import-linter holds the order, see
pyproject.toml): ``spectral`` (the core); ``models`` (extraction, tracing, phases) beside
``ngram`` (the ∞-gram engine); ``analyses``; ``report``; and ``cli``/``demo`` on top. This
module only re-exports the public names.
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
