"""The ∞-gram engine: suffix-array indexes of a tokenised corpus (built and queried by the
C++ engine in ``fastspec._C``), and the corpus side of distributional memorization.

Above the spectral core, beside models and tracing (neither imports the other). Modules:

- ``index``: :class:`InfGramIndex`: opening (infini-gram's layout too), the queries, verify
  and fingerprint, and ``InfGramIndex.build``, which runs the three below.
- ``ingest``: a corpus (token arrays, ``.npy``, text files and a tokenizer) as documents.
- ``build``: documents into shards, each shard's suffix array, the directory put in place.
- ``integrity``: the formats a directory holds, the build-time checksums and their check,
  the fingerprint of the corpus an index holds, the manifest of a shard built apart.
- ``shards``: one index of the shard directories of a corpus built apart (``--shard I/N``),
  by moving files, not building again.
- ``memorization``: task items as token ids and the ∞-gram score of each output.
"""

from .index import InfGramIndex
from .memorization import infgram_output_score, infgram_scores

__all__ = ["InfGramIndex", "infgram_output_score", "infgram_scores"]
