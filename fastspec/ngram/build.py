"""Building a fastspec ∞-gram index: documents (:mod:`.ingest`) cut into shards at document
boundaries, each shard's suffix array built by the C++ engine (SA-IS, on a thread pool, the
GIL released), the checksums written (:mod:`.integrity`), and the whole directory moved into
place at once.

The on-disk format (``csrc/infgram/format.hpp``): per shard s, ``tokens.<s>`` (a 64-byte
header, then the token ids, each document preceded by a separator, the largest value of the
token width) and ``suffix_array.<s>`` (a 64-byte header, then uint32 token positions).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import _C
from .._files import bar_off, remove_stale, temporary_name
from .._settings import SettingError, literal
from .ingest import Corpus, checked_document
from .integrity import CHECKSUMS, FORMATS, SHARD_MANIFEST, data_files, write_checksums, write_shard_manifest

__all__ = ["SEPARATORS", "TOKEN_DTYPES", "ShardPlan", "check_shard_options", "plan_shards", "resolve_vocab_size", "write_index"]

#: The document separator of each token width (bytes): the largest value, never a token id.
SEPARATORS = {2: np.uint16(0xFFFF), 4: np.uint32(0xFFFFFFFF)}
#: The NumPy dtype of the token ids of each token width (bytes).
TOKEN_DTYPES = {2: np.uint16, 4: np.uint32}
# Build memory per token position beyond the text itself: the int32 suffix array, one byte of
# SA-IS type flags, and at most n/2 bucket counters (4 bytes) at its first recursion level.
_BUILD_BYTES_PER_TOKEN = 4 + 1 + 2 + 1


@dataclass(frozen=True)
class ShardPlan:
    """How a corpus is stored and cut: ``vocab_size``, the token ``width`` in bytes, the
    memory ``budget`` in bytes, the ``capacity`` of a shard in token positions (separators
    included) and the number of shards built at once (``threads``)."""

    vocab_size: int
    width: int
    budget: int
    capacity: int
    threads: int


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


def resolve_vocab_size(corpus: Corpus, vocab_size: int | None) -> tuple[Corpus, int]:
    """``vocab_size`` as given, else the tokenizer's size, else the largest id + 1 (which
    reads the documents, so they are kept in a list); the corpus returned is the one to index.

    Raises
    ------
    ValueError
        No vocab_size for a one-shot iterator, an empty corpus, or a vocab_size below 1.
    """
    if vocab_size is None and corpus.tokenizer is not None:
        vocab_size = len(corpus.tokenizer)
    if vocab_size is None:
        if not isinstance(corpus.documents, (list, tuple)):
            raise SettingError("pass {vocab_size} when the documents come from a one-shot iterator", vocab_size=...)
        docs = [np.asarray(d) for d in corpus.documents]
        vocab_size = 1 + max((int(d.max()) for d in docs if d.size), default=-1)
        if vocab_size <= 0:
            raise ValueError(f"{corpus.name}: empty corpus (no tokens)")
        corpus = Corpus(docs, corpus.name, corpus.tokenizer)
    if int(vocab_size) < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    return corpus, int(vocab_size)


def check_shard_options(token_width: int | None, threads: int) -> None:
    """Raise ValueError naming ``threads`` or ``token_width`` when it is out of range (checked
    before the corpus is read, which can take long)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if token_width not in (None, 2, 4):
        raise ValueError(f"token_width must be 2 or 4 bytes, got {token_width!r}")


def plan_shards(vocab_size: int, token_width: int | None, memory_budget: int | str | None, threads: int) -> ShardPlan:
    """The token width (16 bits when ``vocab_size <= 65535``, else 32; ``token_width`` forces
    it) and the shard capacity under ``memory_budget`` (default half of physical memory),
    about ``width + 8`` bytes per token times ``threads`` shards built at once.

    Raises
    ------
    ValueError
        Naming ``threads``, ``token_width``, ``vocab_size`` or ``memory_budget``.
    """
    check_shard_options(token_width, threads)
    width = token_width or (2 if vocab_size <= 0xFFFF else 4)
    if vocab_size > int(SEPARATORS[width]):
        raise ValueError(f"vocab_size {vocab_size} does not fit {width}-byte token ids (at most {int(SEPARATORS[width])}, "
                         f"the largest value being the document separator)")
    budget = _parse_bytes(memory_budget)
    capacity = min(budget // (threads * (width + _BUILD_BYTES_PER_TOKEN) + width), 2**31 - 2)
    if capacity < 2:
        raise SettingError("{memory_budget} bytes cannot hold a shard of even 2 tokens", memory_budget=budget)
    return ShardPlan(vocab_size, width, budget, capacity, threads)


def tokenizer_digest(tokenizer: Any) -> str | None:
    """SHA-256 (hex) of a tokenizer's vocabulary (token → id), None without a tokenizer: the
    same tokenizer gives the same value on every machine, wherever its files are."""
    if tokenizer is None:
        return None
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


class IndexExists(SettingError, FileExistsError):
    """The output directory already holds an index, and ``overwrite`` was not given."""


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"index directory {str(out)!r} exists and is not a directory")
    if out.is_dir() and os.path.isfile(out / FORMATS["infini-gram"]):
        # a fastspec index beside it would make the directory ambiguous (which one is queried?)
        raise FileExistsError(f"{str(out)!r} holds an infini-gram index ({FORMATS['infini-gram']}); "
                              "build the fastspec index into another directory")
    old = data_files(out) if out.is_dir() else []
    if old and not overwrite:
        raise IndexExists(literal(f"{str(out)!r} already holds an index ({old[0].name})") + "; pass {overwrite} to replace it",
                          overwrite=True)


def _install(tmp: Path, out: Path) -> None:
    """Put the complete index built in ``tmp`` at ``out``: one rename when ``out`` is new or
    empty; else the old index files are moved aside, the new ones in, and the old removed."""
    try:
        if not out.exists() or (out.is_dir() and not any(out.iterdir())):
            os.replace(tmp, out)
            return
        trash = out.parent / temporary_name(out.name + ".old")
        trash.mkdir()
        for f in [*data_files(out), out / CHECKSUMS, out / SHARD_MANIFEST]:
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
    pool (the C++ build releases the GIL), at most ``plan.threads`` at a time."""

    def __init__(self, out: Path, plan: ShardPlan) -> None:
        self.out, self.plan = out, plan
        self.pool = ThreadPoolExecutor(max_workers=plan.threads)
        self.pending: list[Future[None]] = []
        self.buf = np.empty(0, dtype=TOKEN_DTYPES[plan.width])
        self.fill = 0
        self.n_shards = 0
        self.tokens = 0
        self.docs = 0

    def add(self, doc: np.ndarray, k: int) -> None:
        need, capacity = doc.shape[0] + 1, self.plan.capacity
        if need > capacity:
            raise SettingError(f"document {k} has {doc.shape[0]} tokens; a shard under {{memory_budget}} bytes holds at "
                               f"most {capacity - 1}: raise it", memory_budget=self.plan.budget)
        if self.fill + need > capacity:
            self._flush()
        if self.fill + need > self.buf.shape[0]:  # grow geometrically up to the shard capacity
            grown = np.empty(min(capacity, max(2 * self.buf.shape[0], self.fill + need, 1 << 16)), dtype=self.buf.dtype)
            grown[:self.fill] = self.buf[:self.fill]
            self.buf = grown
        self.buf[self.fill] = SEPARATORS[self.plan.width]
        self.buf[self.fill + 1:self.fill + need] = doc
        self.fill += need
        self.tokens += doc.shape[0]
        self.docs += 1

    def _flush(self) -> None:
        if self.fill == 0:
            return
        text = self.buf[:self.fill].copy() if self.fill < self.buf.shape[0] // 2 else self.buf[:self.fill]
        while len([f for f in self.pending if not f.done()]) >= self.plan.threads:
            next(f for f in self.pending if not f.done()).result()
        self.pending.append(self.pool.submit(_C.infgram_build_shard, text, self.plan.vocab_size, self.n_shards,
                                             str(self.out)))
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
        for f in data_files(self.out):
            f.unlink(missing_ok=True)


def write_index(corpus: Corpus, out_dir: str | os.PathLike, plan: ShardPlan, *, progress: bool = True,
                overwrite: bool = False) -> Path:
    """Index ``corpus`` into ``out_dir`` under ``plan``: shards, their headers finished, and
    ``checksums.json``.

    The index is built in a temporary directory beside ``out_dir`` and moved into place when
    complete, so a failed build leaves neither a half index nor an empty directory, and a
    failed rebuild (``overwrite=True``) leaves the old index as it was.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    FileExistsError
        ``out_dir`` holds an index and ``overwrite`` is False, or holds an infini-gram index.
    ValueError, TypeError
        A bad document (named with its position), an empty or one-token corpus, a document
        longer than a shard.
    OSError
        The index cannot be written, naming ``out_dir``.
    """
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    remove_stale(out.parent, out.name)
    tmp = out.parent / temporary_name(out.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writer = _ShardWriter(tmp, plan)
    docs = corpus.documents
    try:
        # text input has its own bar (bytes tokenised); arrays get one over documents
        bar = tqdm(docs, unit="doc", desc="indexing", disable=bar_off(progress and corpus.tokenizer is None),
                   total=len(docs) if isinstance(docs, (list, tuple)) else None)
        split = corpus.split
        for k, doc in enumerate(bar):
            if split is not None:  # errors name the document's place in the whole corpus
                k = k * split.count + split.index
            writer.add(checked_document(doc, k, corpus.name, plan.vocab_size), k)
        bar.close()
        if split is not None and writer.tokens < 2:
            raise ValueError(f"{corpus.name}: shard {split.index}/{split.count} holds {writer.docs} document(s) and "
                             f"{writer.tokens} token(s) of the corpus's {split.seen} documents; an index needs at least "
                             "2 tokens: split the corpus into fewer shards")
        _C.infgram_finish(str(tmp), writer.close())
        write_checksums(tmp)
        if split is not None:
            write_shard_manifest(tmp, shard=split.index, of=split.count, corpus=corpus.name,
                                 corpus_documents=split.seen, corpus_digest=split.digest, vocab_size=plan.vocab_size,
                                 token_width=plan.width, tokenizer=tokenizer_digest(corpus.tokenizer),
                                 tokenizer_name=getattr(corpus.tokenizer, "name_or_path", None), n_docs=writer.docs)
        _install(tmp, out)
    except BaseException:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
