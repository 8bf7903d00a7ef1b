"""The paper's analyses beyond the trace: top-k eigenvector ablation, pass@k, correlation
tables, distributional memorization (a model against its corpus) and the toy model of the
phases.

Above models and the ∞-gram engine; they compute DataFrames and results, and the report
(``fastspec.report``) draws and writes them. Modules: ``ablation``, ``passk``,
``correlation``, ``memorization``, ``toy``, and ``inputs`` (CSV tables read with errors that
name the file).
"""

from . import toy
from .ablation import AblateSettings, ablate
from .correlation import correlate
from .memorization import MemorizationResult, memorization, memorization_trace, suffix_lengths
from .passk import pass_at_k, pass_at_k_table

__all__ = ["AblateSettings", "MemorizationResult", "ablate", "correlate", "memorization", "memorization_trace", "pass_at_k",
           "pass_at_k_table", "suffix_lengths", "toy"]
