"""Corpus ingestion for the ∞-gram index: what :meth:`InfGramIndex.build
<fastspec.ngram.index.InfGramIndex.build>` accepts, turned into a stream of documents, each a
1-D array of integer token ids.

Accepted: a list of token-id arrays (a document each); one 1-D array (one document, or split
by ``doc_lengths``) or a 2-D one (a document per row); a ``.npy`` file of such an array
(memory-mapped); a text file, a directory of ``.txt``/``.jsonl``/``.md``/``.rst`` files, or a
list of such paths, tokenised with a Hugging Face tokenizer (``.jsonl`` lines give their
``"text"``, other files a document per non-empty line or per file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from .._files import bar_off
from .._settings import SettingError

__all__ = ["Corpus", "DocumentSplit", "TEXT_SUFFIXES", "checked_document", "corpus_documents", "load_tokenizer",
           "split_corpus"]

TEXT_SUFFIXES = (".txt", ".jsonl", ".md", ".rst")


@dataclass(frozen=True)
class Corpus:
    """A corpus ready to index: its ``documents`` (an iterable of 1-D id arrays, a list when
    its length is known), a ``name`` for messages, and the loaded ``tokenizer`` (None for ids).
    ``split``: the :class:`DocumentSplit` already applied to ``documents`` (text corpora are
    split before they are tokenised), None when they are the whole corpus."""

    documents: Iterable[np.ndarray]
    name: str
    tokenizer: Any = None
    split: "DocumentSplit | None" = None


@dataclass
class DocumentSplit:
    """Shard ``index`` of ``count`` of a corpus split by document: document d (0-based, in the
    order the corpus is read) belongs to shard ``d mod count``.

    A round robin rather than contiguous ranges, so that a machine can take its documents
    from a stream without knowing how many there are, and the shards come out of similar
    size. While :meth:`take` runs it counts every document of the corpus (``seen``) and
    hashes their sizes (``digest``: SHA-256 of each document's size in corpus order, token
    ids for arrays, UTF-8 bytes for text), so that shards of the same corpus can be told from
    shards of another when they are combined, without reading the corpus twice.
    """

    index: int
    count: int
    seen: int = 0
    _hash: Any = field(default_factory=hashlib.sha256, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) or self.count < 1:
            raise SettingError("{shard} must be I/N with N >= 1", shard=f"{self.index}/{self.count}")
        if isinstance(self.index, bool) or not isinstance(self.index, (int, np.integer)) \
                or not 0 <= self.index < self.count:
            raise SettingError("{shard}: the shard number I of I/N must be in [0, N)", shard=f"{self.index}/{self.count}")
        self.index, self.count = int(self.index), int(self.count)

    @classmethod
    def of(cls, shard: "str | tuple[int, int] | DocumentSplit") -> "DocumentSplit":
        """A split from ``"I/N"``, ``(I, N)`` or a split (whose counts start again)."""
        if isinstance(shard, DocumentSplit):
            return cls(shard.index, shard.count)
        if isinstance(shard, str):
            match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
            if not match:
                raise SettingError("{shard} is not I/N (shard I of N, e.g. 0/4)", shard=shard)
            return cls(int(match[1]), int(match[2]))
        if isinstance(shard, (tuple, list)) and len(shard) == 2:
            return cls(*shard)
        raise SettingError("{shard} is not I/N (a string like '0/4', or a pair (I, N))", shard=shard)

    def take(self, items: Iterable[Any], size: Any = len) -> Iterator[Any]:
        """The items of this shard, counting and hashing (``size(item)``) every item passed."""
        for d, item in enumerate(items):
            self.seen = d + 1
            self._hash.update(int(size(item)).to_bytes(8, "little"))
            if d % self.count == self.index:
                yield item

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the sizes of the documents :meth:`take` has passed over."""
        return self._hash.hexdigest()


def load_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object from a local Hugging Face tokenizer directory (``str`` or path),
    or ``tokenizer`` itself when it is already one (None stays None).

    Raises
    ------
    OSError
        The directory does not exist.
    ValueError
        transformers cannot load a tokenizer from it.
    """
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
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"{str(path)!r} holds no text files ({', '.join(TEXT_SUFFIXES)})")
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


def _tokenised(files: list[Path], tokenizer: Any, text_split: str, progress: bool, batch: int = 512,
               split: DocumentSplit | None = None) -> Iterator[np.ndarray]:
    total = sum(f.stat().st_size for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="tokenising", disable=bar_off(progress)) as bar:
        texts: list[str] = []
        consumed = 0

        def flush() -> Iterator[np.ndarray]:
            encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
            for ids in encoded:
                yield np.asarray(ids, dtype=np.int64)

        documents = _text_documents(files, text_split)
        if split is not None:  # other shards' documents are read, never tokenised
            documents = split.take(documents, size=lambda doc: doc[1])
        for text, nbytes in documents:
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


def _text_corpus(files: list[Path], tokenizer: Any, text_split: str, progress: bool, name: str,
                 split: DocumentSplit | None) -> Corpus:
    tok = load_tokenizer(tokenizer)
    if tok is None:
        raise ValueError(f"{name!r} is a text corpus: pass tokenizer= (a local Hugging Face tokenizer directory)")
    if text_split not in ("line", "file"):
        raise ValueError(f"text_split must be 'line' or 'file', got {text_split!r}")
    return Corpus(_tokenised(files, tok, text_split, progress, split=split), name, tok, split)


def split_corpus(corpus: Corpus, split: DocumentSplit | None) -> Corpus:
    """``corpus`` with only ``split``'s documents (a list stays a list); unchanged when
    ``split`` is None or already applied (text corpora, split before tokenising)."""
    if split is None or corpus.split is not None:
        return corpus
    docs = split.take(corpus.documents, size=np.size)
    if isinstance(corpus.documents, (list, tuple)):
        docs = list(docs)
    return Corpus(docs, corpus.name, corpus.tokenizer, split)


def _npy_corpus(path: Path, doc_lengths: Any) -> Corpus:
    name = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {name!r} does not exist")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{name!r}: not a readable .npy array ({err or type(err).__name__})") from err
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name!r}: token ids must be integers, the array holds {arr.dtype}")
    return Corpus(list(_array_documents(arr, doc_lengths, name)), name)


def corpus_documents(source: Any, tokenizer: Any = None, doc_lengths: Any = None, text_split: str = "line",
                     progress: bool = True, split: DocumentSplit | None = None) -> Corpus:
    """The documents of ``source`` (any input listed in the module docstring).

    Parameters
    ----------
    source
        Token ids (arrays, a list of arrays, a flat list of ints), a ``.npy`` path, or text
        paths (one, or a list, indexed in the order given).
    tokenizer
        For text: a local Hugging Face tokenizer directory or object.
    doc_lengths
        For one 1-D array or ``.npy``: the length of each document, summing to its size.
    text_split
        ``"line"`` (a document per non-empty line) or ``"file"``; ``.jsonl`` is always a
        document per line.
    progress
        A tqdm bar over the bytes tokenised (text input only).
    split
        For text: keep only this shard's documents, before they are tokenised (token ids
        are split later, by :func:`split_corpus`, once the vocabulary size is known).

    Returns
    -------
    Corpus
        Text is tokenised lazily, as the documents are iterated.

    Raises
    ------
    ValueError, TypeError, FileNotFoundError
        Naming the file, the argument or the document.
    """
    paths = isinstance(source, (list, tuple)) and bool(source) and all(isinstance(x, (str, os.PathLike)) for x in source)
    if paths:
        if any(Path(x).suffix == ".npy" for x in source):
            raise ValueError("a list of paths is for text corpora; index a .npy of token ids on its own")
        files = [f for x in source for f in _text_files(Path(x))]
        return _text_corpus(files, tokenizer, text_split, progress, f"{len(source)} paths ({source[0]}, …)", split)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix == ".npy":
            return _npy_corpus(path, doc_lengths)
        return _text_corpus(_text_files(path), tokenizer, text_split, progress, str(path), split)
    if isinstance(source, np.ndarray):
        if source.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, the array holds {source.dtype}")
        return Corpus(list(_array_documents(source, doc_lengths, "tokens")), "tokens")
    if doc_lengths is not None:
        raise ValueError("doc_lengths applies to one token array or .npy file, not to a list of documents")
    seq = source if isinstance(source, (list, tuple)) else None
    if seq is not None and seq and all(isinstance(x, (int, np.integer)) for x in seq[:1]):
        return Corpus([np.asarray(seq)], "tokens")  # a flat list of ids: one document
    return Corpus(source if seq is None else seq, "tokens")


def checked_document(doc: Any, k: int, name: str, vocab_size: int) -> np.ndarray:
    """Document ``k`` of corpus ``name`` as an array, after checking that it is 1-D and holds
    integer ids in ``[0, vocab_size)``; the error names the document and the position."""
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
