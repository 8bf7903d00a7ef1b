"""The ∞-gram engine: suffix-array indexes of a tokenised corpus (built and queried by the
C++ engine in ``fastspec._C``), and the corpus side of distributional memorization.

Above the spectral core, beside models and tracing (neither imports the other). Modules:

- ``index``: :class:`InfGramIndex`, building, opening (infini-gram's layout too), queries.
- ``memorization``: task items as token ids and the ∞-gram score of each output.
"""

from .index import InfGramIndex
from .memorization import infgram_output_score, infgram_scores

__all__ = ["InfGramIndex", "infgram_output_score", "infgram_scores"]
