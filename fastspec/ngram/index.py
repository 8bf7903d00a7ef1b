"""∞-gram language model over a suffix array: counts, n-gram and ∞-gram probabilities, and
matching statistics of whole sequences (Liu et al., "Infini-gram", 2024).

The engine is C++ (``csrc/infgram/``): the suffix array is built by SA-IS (Nong, Zhang &
Chan, 2011) and every query binary-searches memory-mapped shards and adds the shards up.

Definitions (infini-gram's, which Wang et al. 2025 use for distributional memorization):

- ``count(ids)``: occurrences of the n-gram in the corpus; n-grams never cross a document
  boundary. ``count([])``, the denominator of a probability after backing off to the empty
  context, is infini-gram's: the number of tokens plus the document separators
  (``count_separators=False`` when the index is opened: the number of tokens alone, under
  which the next-token probabilities of the empty context sum to 1).
- ``prob(context, token) = count(context + token) / count(context)`` (NaN when the context
  never occurs). Occurrences of the context that end a document have no next token, so the
  next-token probabilities of a context can sum to less than 1.
- ``infgram_prob(context, token)``: the longest suffix of the context that occurs in the
  corpus (``suffix_len`` tokens), then the count ratio above on that suffix. It does not
  back off further when that ratio is 0. ``effective_n = suffix_len + 1``.
- ``score(sequences)``: for every position i of a sequence, ``match_len[i]``, the length of
  the longest suffix of ``seq[:i+1]`` that occurs (matching statistics), and the ∞-gram
  probability of ``seq[i]`` given ``seq[:i]``, computed by carrying one suffix-array range
  along the sequence (narrowed by one token per position; re-located after dropping leading
  tokens when the extension does not occur).

This module holds the index and its queries; the corpus is read by :mod:`.ingest`, the
index written by :mod:`.build`, its checksums and fingerprint are :mod:`.integrity`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator

import numpy as np

from .. import _C
from .build import TOKEN_DTYPES, check_shard_options, plan_shards, resolve_vocab_size, write_index
from .ingest import DocumentSplit, corpus_documents, load_tokenizer, split_corpus
from .integrity import CHECKSUMS, FORMATS, fingerprint, formats_present, verify_checksums
from .shards import combine_shards

# load_tokenizer and CHECKSUMS are re-exported: they were defined here before the split, and
# the CLI and users import them from this module.
__all__ = ["CHECKSUMS", "InfGramIndex", "InfGramProb", "NGramProb", "NextTokenDistribution", "SequenceScore",
           "load_tokenizer"]


@dataclass(frozen=True)
class NGramProb:
    """``prob = count / context_count`` (NaN when the context never occurs)."""

    prob: float
    context_count: int
    count: int


@dataclass(frozen=True)
class InfGramProb:
    """The ∞-gram probability and the effective n; unpacks as ``prob, effective_n``."""

    prob: float
    effective_n: int
    suffix_len: int
    context_count: int
    count: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.prob, self.effective_n))


@dataclass(frozen=True)
class NextTokenDistribution:
    """Tokens that follow the context (ascending ids), their counts and ``counts / context_count``."""

    tokens: np.ndarray
    counts: np.ndarray
    probs: np.ndarray
    context_count: int

    def to_dict(self) -> dict[int, float]:
        return {int(t): float(p) for t, p in zip(self.tokens, self.probs)}


@dataclass(frozen=True)
class SequenceScore:
    """Per position i of one sequence (all arrays have its length):

    - ``match_len[i]``: longest suffix of ``seq[:i+1]`` that occurs in the corpus;
    - ``prob[i]``: ∞-gram probability of ``seq[i]`` given ``seq[:i]``;
    - ``effective_n[i]``: ``suffix_len + 1``, the n of the n-gram that ``prob[i]`` came from;
    - ``context_count[i]``, ``count[i]``: the counts of that ratio.
    """

    match_len: np.ndarray
    prob: np.ndarray
    effective_n: np.ndarray
    context_count: np.ndarray
    count: np.ndarray


def _ids(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: token id {int(arr.max())} is out of range")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _token(x: Any) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"token must be one integer id, got {x!r}")
    return int(x)


class InfGramIndex:
    """A memory-mapped ∞-gram index: fastspec's own directory, or an infini-gram one.

    ``InfGramIndex(path)`` opens a directory written by `build` (format read from the file
    headers) or by infini-gram's indexer (``tokenized.<s>``, ``table.<s>``, ``offset.<s>``).
    Queries follow infini-gram's definitions (Liu et al., 2024), which Wang et al. (2025) use
    for distributional memorization; every query binary-searches the memory-mapped shards and
    adds them up.

    Parameters
    ----------
    path : str or os.PathLike
        The index directory.
    format : {'auto', 'fastspec', 'infini-gram'}, default 'auto'
        Which format to open; ``'auto'`` reads it from the files, and refuses a directory that
        holds both as ambiguous.
    token_width : {None, 2, 4}, default None
        Bytes per token id of an infini-gram index (None: inferred from the file sizes); a
        fastspec index records its own, and a different value is refused.
    vocab_size : int, optional
        The vocabulary of an infini-gram index (None: every id below the separator); a
        fastspec index records its own.
    count_separators : bool, default True
        Whether ``count([])``, the denominator of the empty context, counts the document
        separators with the tokens (infini-gram's) or the tokens alone (under which the
        next-token probabilities of the empty context sum to 1).

    Raises
    ------
    OSError
        A missing or unreadable directory or file, named.
    ValueError
        A corrupt or truncated file, or a token width that does not match, naming the file;
        a directory holding both formats with ``format='auto'``; an unsupported
        ``token_width``.

    See Also
    --------
    fastspec.memorization : Distributional memorization scored against an index.

    Notes
    -----
    Definitions, for a context ``c`` and a token ``t``:

    - ``count(ids)``: occurrences of the n-gram in the corpus; n-grams never cross a
      document boundary.
    - ``prob(c, t) = count(c + [t]) / count(c)``, NaN when ``c`` never occurs. Occurrences
      of ``c`` that end a document have no next token, so the next-token probabilities of a
      context can sum to less than 1.
    - ``infgram_prob(c, t)``: the same ratio on the longest suffix of ``c`` that occurs
      (``suffix_len`` tokens), with ``effective_n = suffix_len + 1``; it does not back off
      further when that ratio is 0.

    Examples
    --------
    Two documents of token ids, indexed into ``./index`` and queried:

    >>> index = fastspec.InfGramIndex.build([[1, 2, 3, 1, 2], [2, 3, 1]], "index", vocab_size=8, progress=False)
    >>> index
    InfGramIndex('index', format='fastspec', 8 tokens in 2 documents, 1 shard(s), 16-bit ids < 8)
    >>> index.count([1, 2]), index.count([3, 1, 2])
    (2, 1)
    >>> fastspec.InfGramIndex("index").n_docs  # opened again, from the directory
    2
    """

    def __init__(self, path: str | os.PathLike, *, format: str = "auto", token_width: int | None = None,
                 vocab_size: int | None = None, count_separators: bool = True) -> None:
        self._path = os.fspath(path)
        if token_width not in (None, 2, 4, 1):
            raise ValueError(f"token_width must be 2 or 4 bytes, got {token_width!r}")
        if format == "auto" and len(formats_present(self._path)) > 1:
            # the engine would pick one silently; counts, verify() and fingerprint must not guess
            raise ValueError(f"{self._path}: ambiguous: the directory holds both a fastspec index "
                             f"({FORMATS['fastspec']}) and an infini-gram one ({FORMATS['infini-gram']}); "
                             "keep one per directory, or pass format='fastspec' or 'infini-gram'")
        self._engine = _C.infgram_open(self._path, format, int(token_width or 0), int(vocab_size or 0))
        self._engine.count_separators(bool(count_separators))
        self._info = self._engine.info()

    # -- building ---------------------------------------------------------------------

    @classmethod
    def build(cls, tokens_or_path: Any, out_dir: str | os.PathLike, *, vocab_size: int | None = None,
              token_width: int | None = None, tokenizer: Any = None, doc_lengths: Any = None,
              memory_budget: int | str | None = None, threads: int = 2, text_split: str = "line",
              progress: bool = True, overwrite: bool = False, shard: Any = None) -> InfGramIndex:
        """Index a tokenised corpus into ``out_dir`` and open it.

        The suffix array of each shard is built by SA-IS (Nong, Zhang & Chan, 2011) in C++,
        with the GIL released; the directory is written under a temporary name and moved
        into place when complete.

        Parameters
        ----------
        tokens_or_path : array_like, list of array_like, str or os.PathLike
            A list of 1-D token-id arrays (one per document); one 1-D array (one document,
            or split by ``doc_lengths``) or a 2-D one (a document per row); a ``.npy`` file
            of such an array (memory-mapped); or a text file, a directory of
            ``.txt``/``.jsonl``/``.md``/``.rst`` files, or a list of such paths, with
            ``tokenizer``: ``.jsonl`` lines give their ``"text"``, other files a document
            per non-empty line (``text_split="line"``) or per file (``"file"``).
        out_dir : str or os.PathLike
            The index directory to write.
        vocab_size : int, optional
            Token ids are below it. Default: the tokenizer's size, else the largest id + 1.
        token_width : {None, 2, 4}, default None
            Bytes per stored token id. None: 2 when ``vocab_size <= 65535`` (the value 65535
            is the document separator), else 4; 4 forces 32-bit ids.
        tokenizer : str, os.PathLike or tokenizer, optional
            For a text corpus: a local Hugging Face tokenizer directory or object.
        doc_lengths : array_like of int, optional
            For one 1-D array or ``.npy``: each document's length, summing to its size.
        memory_budget : int or str, optional
            Bytes that building one shard may use (``"4G"``, ``"512M"`` or a number); the
            corpus is cut into shards at document boundaries to fit (about ``width + 8``
            bytes per token, times ``threads`` shards built at once). Default: half of the
            physical memory.
        threads : int, default 2
            Shards built at once.
        text_split : {'line', 'file'}, default 'line'
            A text file's documents: each non-empty line, or the whole file.
        progress : bool, default True
            Show progress bars (on stderr).
        overwrite : bool, default False
            Replace an index already in ``out_dir``.
        shard : str or tuple of int, optional
            ``"I/N"`` or ``(I, N)``: index only part I of the corpus split by document
            (document d, 0-based in corpus order, goes to part d mod N). Each of the N builds
            reads the whole corpus (text is tokenised for its own documents only) and may
            run on any machine; the directory gets a ``shard.json`` saying which part of
            which corpus it holds, and `combine` makes one index of the N directories.
            ``vocab_size`` must then be the corpus's (given, the tokenizer's, or the largest
            id of all the documents when they are a list), so that every part has the same.

        Returns
        -------
        InfGramIndex
            The new index, opened.

        Raises
        ------
        FileExistsError
            ``out_dir`` already holds an index and ``overwrite`` is False.
        ValueError
            An empty corpus, a token id outside the vocabulary, a ``vocab_size`` too large
            for ``token_width``, a bad ``memory_budget`` or ``doc_lengths``, naming the
            file, argument or document.
        TypeError
            Token ids that are not integers.

        Examples
        --------
        >>> docs = [np.array([5, 6, 7]), np.array([6, 7, 5, 6])]
        >>> index = fastspec.InfGramIndex.build(docs, "index", progress=False)
        >>> index.vocab_size, index.n_tokens, index.token_width
        (8, 7, 2)
        """
        check_shard_options(token_width, threads)
        split = DocumentSplit.of(shard) if shard is not None else None
        corpus = corpus_documents(tokens_or_path, tokenizer, doc_lengths, text_split, progress, split=split)
        corpus, vocab_size = resolve_vocab_size(corpus, vocab_size)
        corpus = split_corpus(corpus, split)
        plan = plan_shards(vocab_size, token_width, memory_budget, threads)
        return cls(write_index(corpus, out_dir, plan, progress=progress, overwrite=overwrite))

    @classmethod
    def combine(cls, out_dir: str | os.PathLike, shard_dirs: Any, *, copy: bool = False,
                overwrite: bool = False) -> InfGramIndex:
        """One index of the N shard directories of a corpus built apart (``build(...,
        shard="I/N")``), without building again; its counts, probabilities and scores equal
        those of the index of the whole corpus.

        The files are moved (``copy=True``: copied) into ``out_dir`` under one numbering
        and two fields of each header rewritten; every file is first checked against its
        build-time checksum, and the combined index gets its own ``checksums.json``. Moving
        needs ``out_dir`` on the shards' file system and empties the shard directories. See
        ``fastspec.ngram.shards.combine_shards``.

        Parameters
        ----------
        out_dir : str or os.PathLike
            The index directory to write.
        shard_dirs : sequence of str or os.PathLike
            Every shard directory of one split, in any order.
        copy : bool, default False
            Copy the files instead of moving them (the shard directories stay).
        overwrite : bool, default False
            Replace an index already in ``out_dir``.

        Returns
        -------
        InfGramIndex
            The combined index, opened.

        Raises
        ------
        ValueError
            Naming the directory: not a shard, a shard of another split, corpus or settings,
            a shard missing or given twice, a damaged file.
        FileExistsError
            ``out_dir`` holds an index and ``overwrite`` is False.
        OSError
            Moving across file systems without ``copy``, or a file that cannot be written.
        """
        return cls(combine_shards(out_dir, list(shard_dirs), copy=copy, overwrite=overwrite))

    # -- properties -------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The index directory, as given when it was opened.

        Returns
        -------
        str
            The path.
        """
        return self._path

    @property
    def info(self) -> dict[str, Any]:
        """What the index holds, as read when it was opened.

        Returns
        -------
        dict
            ``format`` (``'fastspec'`` or ``'infini-gram'``), ``path``, ``token_width``,
            ``vocab_size``, ``n_shards``, ``n_positions`` (tokens and separators),
            ``n_docs``, ``n_tokens`` and ``empty_count`` (``count([])``); a copy.
        """
        return dict(self._info)

    @property
    def token_width(self) -> int:
        """Bytes per stored token id: 2 or 4.

        Returns
        -------
        int
            The number.
        """
        return int(self._info["token_width"])

    @property
    def vocab_size(self) -> int:
        """The vocabulary size: every token id is below it.

        Returns
        -------
        int
            The number.
        """
        return int(self._info["vocab_size"])

    @property
    def n_tokens(self) -> int:
        """Tokens in the corpus, separators not counted.

        Returns
        -------
        int
            The number.
        """
        return int(self._info["n_tokens"])

    @property
    def n_docs(self) -> int:
        """Documents in the corpus.

        Returns
        -------
        int
            The number.
        """
        return int(self._info["n_docs"])

    @property
    def n_shards(self) -> int:
        """Shards the index is cut into (each with its own suffix array).

        Returns
        -------
        int
            The number.
        """
        return int(self._info["n_shards"])

    def __repr__(self) -> str:
        i = self._info
        return (f"InfGramIndex({i['path']!r}, format={i['format']!r}, {i['n_tokens']} tokens in {i['n_docs']} documents, "
                f"{i['n_shards']} shard(s), {8 * i['token_width']}-bit ids < {i['vocab_size']})")

    # -- queries ----------------------------------------------------------------------

    def count(self, ids: Any) -> int:
        """Occurrences of the n-gram ``ids`` in the corpus (never across a document boundary).

        Parameters
        ----------
        ids : array_like of int
            The n-gram: a 1-D sequence of token ids, possibly empty.

        Returns
        -------
        int
            Its count. ``count([])`` is infini-gram's: tokens plus separators, or the tokens
            alone when the index was opened with ``count_separators=False``.

        Raises
        ------
        ValueError
            ``ids`` is not 1-D.
        TypeError
            ``ids`` does not hold integers.

        Examples
        --------
        >>> index = fastspec.InfGramIndex.build([[1, 2, 3, 1, 2], [2, 3, 1]], "index", vocab_size=8, progress=False)
        >>> index.count([2, 3]), index.count([3, 2]), index.count([])
        (2, 0, 10)
        """
        return int(self._engine.count(_ids(ids, "ids")))

    def prob(self, context: Any, token: int) -> NGramProb:
        """The n-gram probability ``count(context + [token]) / count(context)``.

        Parameters
        ----------
        context : array_like of int
            The preceding token ids (1-D, possibly empty).
        token : int
            The next token's id.

        Returns
        -------
        NGramProb
            ``prob`` (NaN when the context never occurs), ``context_count`` and ``count``.

        Raises
        ------
        TypeError
            ``token`` is not one integer, or ``context`` does not hold integers.

        Examples
        --------
        >>> index = fastspec.InfGramIndex.build([[1, 2, 3, 1, 2], [2, 3, 1]], "index", vocab_size=8, progress=False)
        >>> p = index.prob([2], 3)
        >>> round(p.prob, 3), p.context_count, p.count
        (0.667, 3, 2)
        >>> index.prob([7], 1).prob
        nan
        """
        c, n, p = self._engine.prob(_ids(context, "context"), _token(token))
        return NGramProb(prob=float(p), context_count=int(c), count=int(n))

    def next_token_distribution(self, context: Any) -> NextTokenDistribution:
        """Every token seen after ``context``, with its count and exact probability.

        Parameters
        ----------
        context : array_like of int
            The preceding token ids (1-D, possibly empty).

        Returns
        -------
        NextTokenDistribution
            ``tokens`` (ascending ids), ``counts``, ``probs`` (``counts / context_count``;
            NaN when the context never occurs) and ``context_count``; ``to_dict()`` maps
            token → probability.

        Examples
        --------
        >>> index = fastspec.InfGramIndex.build([[1, 2, 3, 1, 2], [2, 3, 1]], "index", vocab_size=8, progress=False)
        >>> d = index.next_token_distribution([1])
        >>> d.tokens, d.counts, d.context_count
        (array([2]), array([2], dtype=uint64), 3)
        """
        total, tokens, counts = self._engine.next_tokens(_ids(context, "context"))
        tokens = tokens.astype(np.int64)
        probs = counts / total if total else np.full(counts.shape, np.nan)
        return NextTokenDistribution(tokens=tokens, counts=counts, probs=probs, context_count=int(total))

    def infgram_prob(self, context: Any, token: int) -> InfGramProb:
        """The ∞-gram probability of ``token`` after ``context``, and its effective n.

        The longest suffix of ``context`` that occurs in the corpus is found (``suffix_len``
        tokens), then the n-gram ratio of `prob` is taken on it; there is no further
        back-off when that ratio is 0 (infini-gram's definition).

        Parameters
        ----------
        context : array_like of int
            The preceding token ids (1-D, possibly empty).
        token : int
            The next token's id.

        Returns
        -------
        InfGramProb
            ``prob``, ``effective_n`` (``suffix_len + 1``), ``suffix_len``,
            ``context_count`` and ``count``; unpacks as ``prob, effective_n``.

        Raises
        ------
        TypeError
            ``token`` is not one integer, or ``context`` does not hold integers.

        Examples
        --------
        >>> index = fastspec.InfGramIndex.build([[1, 2, 3, 1, 2], [2, 3, 1]], "index", vocab_size=8, progress=False)
        >>> prob, n = index.infgram_prob([7, 2], 3)  # [7, 2] never occurs, [2] does
        >>> round(prob, 3), n
        (0.667, 2)
        """
        c, n, p, suffix = self._engine.infgram_prob(_ids(context, "context"), _token(token))
        return InfGramProb(prob=float(p), effective_n=int(suffix) + 1, suffix_len=int(suffix), context_count=int(c), count=int(n))

    def score(self, sequences: Any, *, threads: int = 1) -> list[SequenceScore]:
        """Matching statistics and ∞-gram probabilities of every position of every sequence.

        One call scores them all in C++ with the GIL released, carrying one suffix-array
        range along each sequence rather than searching every position afresh.

        Parameters
        ----------
        sequences : array_like of int, or list of array_like of int
            A list of 1-D token-id arrays, a 2-D array (a sequence per row), or one 1-D
            array or list of ints (one sequence).
        threads : int, default 1
            Threads the sequences are split over.

        Returns
        -------
        list of SequenceScore
            One per sequence, each holding arrays of its length: ``match_len[i]``, the
            length of the longest suffix of ``seq[:i+1]`` that occurs in the corpus;
            ``prob[i]``, the ∞-gram probability of ``seq[i]`` given ``seq[:i]``;
            ``effective_n[i]``; and the counts of that ratio, ``context_count[i]`` and
            ``count[i]``.

        Raises
        ------
        ValueError
            A token id outside ``[0, vocab_size)``, naming the sequence and position; a
            sequence that is not 1-D.
        TypeError
            A sequence that does not hold integers.

        Examples
        --------
        >>> index = fastspec.InfGramIndex.build([[1, 2, 3, 1, 2], [2, 3, 1]], "index", vocab_size=8, progress=False)
        >>> s, = index.score([[1, 2, 3]])
        >>> s.match_len, np.round(s.prob, 3)
        (array([1, 2, 3]), array([0.3  , 0.667, 0.5  ]))
        """
        arr = sequences if isinstance(sequences, np.ndarray) else None
        if arr is not None and arr.ndim == 1:
            seqs = [arr]
        elif arr is not None and arr.ndim == 2:
            seqs = list(arr)
        elif isinstance(sequences, (list, tuple)) and sequences and all(isinstance(x, (int, np.integer)) for x in sequences):
            seqs = [np.asarray(sequences)]
        else:
            seqs = list(sequences)
        parts = [_ids(s, f"sequences[{k}]") for k, s in enumerate(seqs)]
        lengths = np.fromiter((p.shape[0] for p in parts), dtype=np.int64, count=len(parts))
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        bad = np.flatnonzero((flat < 0) | (flat >= self.vocab_size))
        if bad.size:  # name the sequence and position (the engine would name the flat position)
            k = int(np.searchsorted(offsets, bad[0], side="right")) - 1
            raise ValueError(f"sequences[{k}]: token id {int(flat[bad[0]])} at position {int(bad[0] - offsets[k])} "
                             f"is outside [0, {self.vocab_size}) of the index {self._path}")
        match_len, suffix_len, prob, ctx, cnt = self._engine.score(flat, offsets, int(max(1, threads)))
        out = []
        for k in range(len(parts)):
            a, b = offsets[k], offsets[k + 1]
            out.append(SequenceScore(match_len=match_len[a:b], prob=prob[a:b], effective_n=suffix_len[a:b] + 1,
                                     context_count=ctx[a:b].astype(np.int64), count=cnt[a:b].astype(np.int64)))
        return out

    def verify(self) -> dict[str, Any]:
        """Check the whole index: every data file against its checksum, then every shard's structure.

        The checksums are those written when the index was built; the structure check finds
        a suffix array that is not a sorted permutation, or invalid token values. It costs a
        pass over the index; opening one checks only what is cheap (headers, sizes, counts).

        A fastspec index must have its ``checksums.json`` (BLAKE2b and size of each file,
        written with every index): without it, damage inside the data could not be found, so
        its absence is an error. infini-gram's indexes have none and get the structural check
        alone.

        Returns
        -------
        dict
            ``{"checksums": number of files checked, or None for an infini-gram index,
            "structure": True}``.

        Raises
        ------
        ValueError
            Naming the damaged or missing file, or the directory of a fastspec index whose
            ``checksums.json`` is missing.

        Examples
        --------
        >>> index = fastspec.InfGramIndex.build([[1, 2, 3, 1, 2], [2, 3, 1]], "index", vocab_size=8, progress=False)
        >>> index.verify()
        {'checksums': 2, 'structure': True}
        """
        checked = verify_checksums(self._path, self._info["format"])
        self._engine.verify()
        return {"checksums": checked, "structure": True}

    @cached_property
    def fingerprint(self) -> str:
        """A SHA-256 (hex) identifying the corpus this index holds, cheap to compute, for
        telling whether two runs used the same index (e.g. a resumed run after a rebuild).

        fastspec format: over the content of ``checksums.json`` (each data file's name, size
        and BLAKE2b from the build), so it reads one small file. infini-gram format (no
        checksums): over the data files' names and sizes and a hash of each file's first and
        last MiB, a sample. The same directory gives the same value in every process; the
        same corpus rebuilt with the same settings too (the build is deterministic); another
        corpus, token width or sharding another. Computed on first access and kept; it does
        not check the files (`verify` does).

        Returns
        -------
        str
            64 hexadecimal digits.

        Raises
        ------
        ValueError
            A fastspec index without (or with an unreadable) ``checksums.json``.
        """
        return fingerprint(self._path, self._info["format"], self.n_shards)

    # -- raw arrays (fastspec format) -------------------------------------------------

    def tokens(self, shard: int = 0) -> np.ndarray:
        """One shard's token array, separators included, as stored.

        Each document is preceded by the separator, the largest value of the token width
        (65535 for 16-bit ids).

        Parameters
        ----------
        shard : int, default 0
            Which shard, in ``[0, n_shards)``.

        Returns
        -------
        numpy.ndarray
            A read-only memory map of uint16 or uint32 ids.

        Raises
        ------
        IndexError
            ``shard`` is outside ``[0, n_shards)``.
        NotImplementedError
            An infini-gram index (raw arrays are exposed for fastspec's format only).

        Examples
        --------
        >>> index = fastspec.InfGramIndex.build([[1, 2, 3, 1, 2], [2, 3, 1]], "index", vocab_size=8, progress=False)
        >>> index.tokens()
        memmap([65535,     1,     2,     3,     1,     2, 65535,     2,     3,     1], dtype=uint16)
        """
        return self._raw(shard, "tokens", TOKEN_DTYPES[self.token_width])

    def suffix_array(self, shard: int = 0) -> np.ndarray:
        """One shard's suffix array: the positions of `tokens` in order of their suffixes.

        Parameters
        ----------
        shard : int, default 0
            Which shard, in ``[0, n_shards)``.

        Returns
        -------
        numpy.ndarray
            A read-only memory map of uint32 positions into ``tokens(shard)``.

        Raises
        ------
        IndexError
            ``shard`` is outside ``[0, n_shards)``.
        NotImplementedError
            An infini-gram index (raw arrays are exposed for fastspec's format only).
        """
        return self._raw(shard, "suffix_array", np.uint32)

    def _raw(self, shard: int, stem: str, dtype: Any) -> np.ndarray:
        if self._info["format"] != "fastspec":
            raise NotImplementedError("raw arrays are exposed for fastspec-format indexes only")
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"shard {shard} is outside [0, {self.n_shards})")
        return np.memmap(os.path.join(self._path, f"{stem}.{shard}"), dtype=dtype, mode="r", offset=64)
