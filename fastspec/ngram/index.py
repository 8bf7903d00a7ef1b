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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from .. import _C
from .._files import remove_stale, temporary_name, write_json

__all__ = ["InfGramIndex", "InfGramProb", "NGramProb", "NextTokenDistribution", "SequenceScore"]

_SEP = {2: np.uint16(0xFFFF), 4: np.uint32(0xFFFFFFFF)}
_DTYPE = {2: np.uint16, 4: np.uint32}
#: Written at build time beside the data files: the size and BLAKE2b of each, for verify().
CHECKSUMS = "checksums.json"
# Build memory per token position beyond the text itself: the int32 suffix array, one byte of
# SA-IS type flags, and at most n/2 bucket counters (4 bytes) at its first recursion level.
_BUILD_BYTES_PER_TOKEN = 4 + 1 + 2 + 1
_TEXT_SUFFIXES = (".txt", ".jsonl", ".md", ".rst")


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


def _parse_bytes(value: int | str | None) -> int:
    if value is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            total = 8 << 30
        return total // 2
    if isinstance(value, str):
        text = value.strip().upper().rstrip("B")
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
        try:
            number = float(text[:-1] if scale != 1 else text)
        except ValueError:
            raise ValueError(f"memory_budget {value!r} is not a size like 4G, 512M or a number of bytes") from None
        value = int(number * scale)
    if int(value) <= 0:
        raise ValueError(f"memory_budget must be positive, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------
# Corpus input: token arrays, .npy files, or text tokenised with a Hugging Face tokenizer
# ---------------------------------------------------------------------------------------


def load_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None:
        return None
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer)
        if not path.is_dir():
            raise OSError(f"tokenizer directory {str(path)!r} does not exist (a local Hugging Face tokenizer directory is expected)")
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as err:  # transformers raises several types for a bad directory
            raise ValueError(f"cannot load a tokenizer from {str(path)!r}: {err}") from err
    return tokenizer


def _text_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"{str(path)!r} holds no text files ({', '.join(_TEXT_SUFFIXES)})")
        return files
    if not path.exists():
        raise FileNotFoundError(f"corpus {str(path)!r} does not exist")
    return [path]


def _text_documents(files: list[Path], text_split: str) -> Iterator[tuple[str, int]]:
    """(document text, bytes consumed) for every document of the files."""
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            if f.suffix == ".jsonl":
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)["text"], len(line.encode("utf-8", "replace"))
                    except (json.JSONDecodeError, KeyError, TypeError) as err:
                        raise ValueError(f"{f}:{lineno}: not a JSON object with a 'text' field ({err})") from err
            elif text_split == "file":
                text = fh.read()
                yield text, len(text.encode("utf-8", "replace"))
            else:
                for line in fh:
                    if line.strip():
                        yield line.rstrip("\n"), len(line.encode("utf-8", "replace"))


def _tokenised(files: list[Path], tokenizer: Any, text_split: str, progress: bool, batch: int = 512) -> Iterator[np.ndarray]:
    total = sum(f.stat().st_size for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="tokenising", disable=not progress) as bar:
        texts: list[str] = []
        consumed = 0

        def flush() -> Iterator[np.ndarray]:
            encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
            for ids in encoded:
                yield np.asarray(ids, dtype=np.int64)

        for text, nbytes in _text_documents(files, text_split):
            texts.append(text)
            consumed += nbytes
            if len(texts) == batch:
                yield from flush()
                bar.update(consumed)
                texts, consumed = [], 0
        if texts:
            yield from flush()
        bar.update(consumed)


def _array_documents(arr: np.ndarray, doc_lengths: Any, name: str) -> Iterator[np.ndarray]:
    if arr.ndim == 2:
        if doc_lengths is not None:
            raise ValueError(f"{name}: doc_lengths applies to a 1-D token array, got a 2-D one (each row is a document)")
        yield from arr
        return
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D token array (or 2-D, one document per row), got shape {arr.shape}")
    if doc_lengths is None:
        yield arr
        return
    lengths = np.asarray(doc_lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths < 0).any():
        raise ValueError(f"{name}: doc_lengths must be a 1-D array of non-negative integers")
    if int(lengths.sum()) != arr.shape[0]:
        raise ValueError(f"{name}: doc_lengths sum to {int(lengths.sum())}, but there are {arr.shape[0]} tokens")
    start = 0
    for n in lengths.tolist():
        yield arr[start:start + n]
        start += n


def _text_corpus(files: list[Path], tokenizer: Any, text_split: str, progress: bool, name: str
                 ) -> tuple[Iterable[np.ndarray], str, Any]:
    tok = load_tokenizer(tokenizer)
    if tok is None:
        raise ValueError(f"{name!r} is a text corpus: pass tokenizer= (a local Hugging Face tokenizer directory)")
    if text_split not in ("line", "file"):
        raise ValueError(f"text_split must be 'line' or 'file', got {text_split!r}")
    return _tokenised(files, tok, text_split, progress), name, tok


def _documents(source: Any, tokenizer: Any, doc_lengths: Any, text_split: str, progress: bool) -> tuple[Iterable[np.ndarray], str, Any]:
    """(documents, a name for messages, the loaded tokenizer or None)."""
    paths = isinstance(source, (list, tuple)) and bool(source) and all(isinstance(x, (str, os.PathLike)) for x in source)
    if paths:  # several text files or directories, indexed in the order given
        if any(Path(x).suffix == ".npy" for x in source):
            raise ValueError("a list of paths is for text corpora; index a .npy of token ids on its own")
        files = [f for x in source for f in _text_files(Path(x))]
        return _text_corpus(files, tokenizer, text_split, progress, f"{len(source)} paths ({source[0]}, …)")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if path.suffix == ".npy":
            if not path.is_file():
                raise FileNotFoundError(f"corpus {name!r} does not exist")
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise ValueError(f"{name!r}: not a readable .npy array ({err or type(err).__name__})") from err
            if arr.dtype.kind not in "iu":
                raise ValueError(f"{name!r}: token ids must be integers, the array holds {arr.dtype}")
            return list(_array_documents(arr, doc_lengths, name)), name, None
        return _text_corpus(_text_files(path), tokenizer, text_split, progress, name)
    if isinstance(source, np.ndarray):
        if source.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, the array holds {source.dtype}")
        return list(_array_documents(source, doc_lengths, "tokens")), "tokens", None
    if doc_lengths is not None:
        raise ValueError("doc_lengths applies to one token array or .npy file, not to a list of documents")
    seq = source if isinstance(source, (list, tuple)) else None
    if seq is not None and seq and all(isinstance(x, (int, np.integer)) for x in seq[:1]):
        return [np.asarray(seq)], "tokens", None  # a flat list of ids: one document
    return (source if seq is None else seq), "tokens", None


# ---------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------


class InfGramIndex:
    """A memory-mapped ∞-gram index: fastspec's own directory, or an infini-gram one.

    ``InfGramIndex(path)`` opens a directory written by :meth:`build` (format read from the
    file headers) or by infini-gram's indexer (``tokenized.<s>``, ``table.<s>``,
    ``offset.<s>``; its token width is inferred from the file sizes unless given, and its
    vocabulary is every id below the separator unless ``vocab_size`` is given). Errors name
    the file: ``ValueError`` for a corrupt or truncated file or a width mismatch, ``OSError``
    for a missing or unreadable one.
    """

    def __init__(self, path: str | os.PathLike, *, format: str = "auto", token_width: int | None = None,
                 vocab_size: int | None = None, count_separators: bool = True) -> None:
        self._path = os.fspath(path)
        if token_width not in (None, 2, 4, 1):
            raise ValueError(f"token_width must be 2 or 4 bytes, got {token_width!r}")
        self._engine = _C.infgram_open(self._path, format, int(token_width or 0), int(vocab_size or 0))
        self._engine.count_separators(bool(count_separators))
        self._info = self._engine.info()

    # -- building ---------------------------------------------------------------------

    @classmethod
    def build(cls, tokens_or_path: Any, out_dir: str | os.PathLike, *, vocab_size: int | None = None,
              token_width: int | None = None, tokenizer: Any = None, doc_lengths: Any = None,
              memory_budget: int | str | None = None, threads: int = 2, text_split: str = "line",
              progress: bool = True, overwrite: bool = False) -> InfGramIndex:
        """Index a tokenised corpus into ``out_dir`` and open it.

        ``tokens_or_path``: a list of 1-D token-id arrays (one per document); one 1-D array
        (one document, or split by ``doc_lengths``) or a 2-D one (a document per row); a
        ``.npy`` file of such an array (memory-mapped); or a text file, a directory of
        ``.txt``/``.jsonl``/``.md``/``.rst`` files, or a list of such paths, with ``tokenizer`` (a local Hugging Face
        tokenizer directory or object): ``.jsonl`` lines give their ``"text"``, other files a
        document per non-empty line (``text_split="line"``) or per file (``"file"``).

        Token ids are stored in 16 bits when ``vocab_size <= 65535`` (the value 65535 is the
        document separator), else 32 (``token_width`` forces 4). ``vocab_size`` defaults to the
        tokenizer's size, else the largest id + 1. The corpus is cut into shards (at document
        boundaries) so that building one needs at most ``memory_budget`` bytes (default half of
        physical memory; about ``width + 8`` bytes per token, times ``threads`` shards built at
        once); queries add the shards up.
        """
        out = Path(out_dir)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if token_width not in (None, 2, 4):
            raise ValueError(f"token_width must be 2 or 4 bytes, got {token_width!r}")
        docs, name, tok = _documents(tokens_or_path, tokenizer, doc_lengths, text_split, progress)
        if vocab_size is None and tok is not None:
            vocab_size = len(tok)
        if vocab_size is None:
            if not isinstance(docs, (list, tuple)):
                raise ValueError("pass vocab_size= when the documents come from a one-shot iterator")
            docs = [np.asarray(d) for d in docs]
            vocab_size = 1 + max((int(d.max()) for d in docs if d.size), default=-1)
            if vocab_size <= 0:
                raise ValueError(f"{name}: empty corpus (no tokens)")
        vocab_size = int(vocab_size)
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        width = token_width or (2 if vocab_size <= 0xFFFF else 4)
        if vocab_size > int(_SEP[width]):
            raise ValueError(f"vocab_size {vocab_size} does not fit {width}-byte token ids (at most {int(_SEP[width])}, "
                             f"the largest value being the document separator)")
        budget = _parse_bytes(memory_budget)
        capacity = min(budget // (threads * (width + _BUILD_BYTES_PER_TOKEN) + width), 2**31 - 2)
        if capacity < 2:
            raise ValueError(f"memory_budget={budget} bytes cannot hold a shard of even 2 tokens")

        _check_out_dir(out, overwrite)
        # Built in a temporary directory beside the target and moved into place when complete,
        # so a failed build leaves neither a half index nor an empty directory, and a failed
        # rebuild (overwrite=True) leaves the old index as it was.
        remove_stale(out.parent, out.name)
        tmp = out.parent / temporary_name(out.name)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        writer = _ShardWriter(tmp, width, vocab_size, capacity, threads, budget)
        try:
            # text input has its own bar (bytes tokenised); arrays get one over documents
            bar = tqdm(docs, unit="doc", desc="indexing", disable=not progress or tok is not None,
                       total=len(docs) if isinstance(docs, (list, tuple)) else None)
            for k, doc in enumerate(bar):
                writer.add(_checked_doc(doc, k, name, vocab_size), k)
            bar.close()
            n_shards = writer.close()
            _C.infgram_finish(str(tmp), n_shards)
            write_json(tmp / CHECKSUMS, {"algorithm": "blake2b", "files": {
                f.name: {"size": f.stat().st_size, "blake2b": _digest(f)} for f in _index_files(tmp)}})
            _install(tmp, out)
        except BaseException:
            writer.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(out)

    # -- properties -------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._path

    @property
    def info(self) -> dict[str, Any]:
        """format, path, token_width, vocab_size, n_shards, n_positions, n_docs, n_tokens."""
        return dict(self._info)

    @property
    def token_width(self) -> int:
        return int(self._info["token_width"])

    @property
    def vocab_size(self) -> int:
        return int(self._info["vocab_size"])

    @property
    def n_tokens(self) -> int:
        return int(self._info["n_tokens"])

    @property
    def n_docs(self) -> int:
        return int(self._info["n_docs"])

    @property
    def n_shards(self) -> int:
        return int(self._info["n_shards"])

    def __repr__(self) -> str:
        i = self._info
        return (f"InfGramIndex({i['path']!r}, format={i['format']!r}, {i['n_tokens']} tokens in {i['n_docs']} documents, "
                f"{i['n_shards']} shard(s), {8 * i['token_width']}-bit ids < {i['vocab_size']})")

    # -- queries ----------------------------------------------------------------------

    def count(self, ids: Any) -> int:
        """Occurrences of the n-gram ``ids`` (``count([])``: tokens + separators, infini-gram's;
        tokens alone when opened with ``count_separators=False``)."""
        return int(self._engine.count(_ids(ids, "ids")))

    def prob(self, context: Any, token: int) -> NGramProb:
        """``count(context + [token]) / count(context)``; NaN when the context never occurs."""
        c, n, p = self._engine.prob(_ids(context, "context"), _token(token))
        return NGramProb(prob=float(p), context_count=int(c), count=int(n))

    def next_token_distribution(self, context: Any) -> NextTokenDistribution:
        """Every token seen after ``context`` with its count and ``count / count(context)`` (exact)."""
        total, tokens, counts = self._engine.next_tokens(_ids(context, "context"))
        tokens = tokens.astype(np.int64)
        probs = counts / total if total else np.full(counts.shape, np.nan)
        return NextTokenDistribution(tokens=tokens, counts=counts, probs=probs, context_count=int(total))

    def infgram_prob(self, context: Any, token: int) -> InfGramProb:
        """∞-gram probability of ``token`` after ``context`` and its effective n (see module doc)."""
        c, n, p, suffix = self._engine.infgram_prob(_ids(context, "context"), _token(token))
        return InfGramProb(prob=float(p), effective_n=int(suffix) + 1, suffix_len=int(suffix), context_count=int(c), count=int(n))

    def score(self, sequences: Any, *, threads: int = 1) -> list[SequenceScore]:
        """Matching statistics and ∞-gram probabilities of every position of every sequence.

        ``sequences``: a list of 1-D token-id arrays (or one 1-D array / list of ints: one
        sequence). One call scores them all with the GIL released, split over ``threads``.
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
        """Check the whole index: every data file against the checksum written when it was
        built (``checksums.json``: BLAKE2b and size of each file; infini-gram's indexes have
        none), then every shard's structure (suffix array a sorted permutation, token values
        valid). Raises ``ValueError`` naming the damaged file. Costs a pass over the index.
        Opening an index checks only what is cheap: headers, sizes, counts.

        Returns what was checked: ``{"checksums": files checked or None, "structure": True}``."""
        checked = None
        manifest = os.path.join(self._path, CHECKSUMS)
        if os.path.exists(manifest):
            try:
                with open(manifest) as fh:
                    files = json.load(fh)["files"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{manifest}: unreadable checksums ({err})") from err
            for name, want in sorted(files.items()):
                path = os.path.join(self._path, name)
                if not os.path.isfile(path):
                    raise ValueError(f"{path}: missing (listed in {CHECKSUMS})")
                size = os.path.getsize(path)
                if size != want.get("size"):
                    raise ValueError(f"{path}: damaged: {size} bytes, {want.get('size')} when it was built")
                if _digest(Path(path)) != want.get("blake2b"):
                    raise ValueError(f"{path}: damaged: its BLAKE2b checksum differs from the one written when "
                                     "it was built; rebuild the index")
            checked = len(files)
        self._engine.verify()
        return {"checksums": checked, "structure": True}

    # -- raw arrays (fastspec format) -------------------------------------------------

    def tokens(self, shard: int = 0) -> np.ndarray:
        """The shard's token array, separators included (read-only memory map)."""
        return self._raw(shard, "tokens", _DTYPE[self.token_width])

    def suffix_array(self, shard: int = 0) -> np.ndarray:
        """The shard's suffix array of token positions (read-only memory map)."""
        return self._raw(shard, "suffix_array", np.uint32)

    def _raw(self, shard: int, stem: str, dtype: Any) -> np.ndarray:
        if self._info["format"] != "fastspec":
            raise NotImplementedError("raw arrays are exposed for fastspec-format indexes only")
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"shard {shard} is outside [0, {self.n_shards})")
        return np.memmap(os.path.join(self._path, f"{stem}.{shard}"), dtype=dtype, mode="r", offset=64)


def _checked_doc(doc: Any, k: int, name: str, vocab_size: int) -> np.ndarray:
    arr = np.asarray(doc)
    if arr.ndim != 1:
        raise ValueError(f"{name}: document {k} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: document {k} holds {arr.dtype}, not integer token ids")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            at = int(np.argmax(arr == bad))
            raise ValueError(f"{name}: document {k}, position {at}: token id {bad} is outside [0, {vocab_size})")
    return arr


def _digest(path: Path) -> str:
    """BLAKE2b of a file, read in 8 MiB blocks (hashlib releases the GIL on them)."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _index_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("tokens.*")) + sorted(directory.glob("suffix_array.*"))


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"index directory {str(out)!r} exists and is not a directory")
    old = _index_files(out) if out.is_dir() else []
    if old and not overwrite:
        raise FileExistsError(f"{str(out)!r} already holds an index ({old[0].name}); pass overwrite=True to replace it")


def _install(tmp: Path, out: Path) -> None:
    """Put the complete index built in ``tmp`` at ``out``: one rename when ``out`` is new or
    empty; else the old index files are moved aside, the new ones in, and the old removed."""
    try:
        if not out.exists() or (out.is_dir() and not any(out.iterdir())):
            os.replace(tmp, out)
            return
        trash = out.parent / temporary_name(out.name + ".old")
        trash.mkdir()
        for f in [*_index_files(out), out / CHECKSUMS]:
            if f.exists():
                os.replace(f, trash / f.name)
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
        shutil.rmtree(trash)
        tmp.rmdir()
    except OSError as err:
        raise OSError(err.errno, f"cannot write the index into {out}: {err.strerror}") from err


class _ShardWriter:
    """Fills shard buffers with separator-prefixed documents and builds full ones on a thread
    pool (the C++ build releases the GIL), at most ``threads`` at a time."""

    def __init__(self, out: Path, width: int, vocab_size: int, capacity: int, threads: int, budget: int) -> None:
        self.out, self.width, self.vocab_size, self.capacity, self.budget = out, width, vocab_size, capacity, budget
        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.threads = threads
        self.pending: list[Future[None]] = []
        self.buf = np.empty(0, dtype=_DTYPE[width])
        self.fill = 0
        self.n_shards = 0
        self.tokens = 0

    def add(self, doc: np.ndarray, k: int) -> None:
        need = doc.shape[0] + 1
        if need > self.capacity:
            raise ValueError(f"document {k} has {doc.shape[0]} tokens; a shard under memory_budget={self.budget} bytes "
                             f"holds at most {self.capacity - 1}: raise memory_budget")
        if self.fill + need > self.capacity:
            self._flush()
        if self.fill + need > self.buf.shape[0]:  # grow geometrically up to the shard capacity
            grown = np.empty(min(self.capacity, max(2 * self.buf.shape[0], self.fill + need, 1 << 16)), dtype=self.buf.dtype)
            grown[:self.fill] = self.buf[:self.fill]
            self.buf = grown
        self.buf[self.fill] = _SEP[self.width]
        self.buf[self.fill + 1:self.fill + need] = doc
        self.fill += need
        self.tokens += doc.shape[0]

    def _flush(self) -> None:
        if self.fill == 0:
            return
        text = self.buf[:self.fill].copy() if self.fill < self.buf.shape[0] // 2 else self.buf[:self.fill]
        while len([f for f in self.pending if not f.done()]) >= self.threads:
            next(f for f in self.pending if not f.done()).result()
        self.pending.append(self.pool.submit(_C.infgram_build_shard, text, self.vocab_size, self.n_shards, str(self.out)))
        self.n_shards += 1
        self.buf = np.empty(0, dtype=self.buf.dtype)
        self.fill = 0

    def close(self) -> int:
        if self.tokens == 0:
            raise ValueError("empty corpus: no tokens to index")
        if self.tokens == 1:
            raise ValueError("the corpus has 1 token; an ∞-gram index needs at least 2")
        self._flush()
        for f in self.pending:
            f.result()
        self.pool.shutdown()
        return self.n_shards

    def abort(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True)
        for f in _index_files(self.out):
            f.unlink(missing_ok=True)
