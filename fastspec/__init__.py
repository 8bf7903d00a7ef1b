"""fastspec: the geometry of neural representations, fast.

Eigenspectra of activation covariances, RankMe and alpha-ReQ, streamed and mergeable;
extracted from Hugging Face models and traced across checkpoints and layers; an ∞-gram
suffix-array engine and distributional memorization (Wang et al., 2025).
See README.md for the conventions and ``fastspec.backends()`` for what this install has.
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

from ._version import __version__
from .accumulator import CovarianceAccumulator
from .ablation import ablate
from .backends import backends
from .correlation import correlate
from .data import load_texts
from .extract import extract
from .infgram import InfGramIndex
from .memorization import MemorizationResult, memorization
from .metrics import AlphaFit, alpha_req, rankme
from .passk import pass_at_k
from .phases import phases
from .spectrum import Spectrum, spectrum
from .trace import CheckpointError, load_trace, trace
from . import toy  # a module: fastspec.toy.train, .run_conditions, .compression

__all__ = [
    "AlphaFit",
    "CheckpointError",
    "CovarianceAccumulator",
    "InfGramIndex",
    "MemorizationResult",
    "Spectrum",
    "__version__",
    "ablate",
    "alpha_req",
    "backends",
    "correlate",
    "extract",
    "load_texts",
    "load_trace",
    "memorization",
    "pass_at_k",
    "phases",
    "rankme",
    "spectrum",
    "toy",
    "trace",
]
