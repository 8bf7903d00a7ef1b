"""The integrity and identity of an ∞-gram index directory: which format it holds, the
build-time checksums of a fastspec index (``checksums.json``: the size and BLAKE2b of every
data file), checking the files against them, and a cheap fingerprint of the corpus indexed.

A fastspec index is written with its checksums, so one without them is damaged (it cannot be
told apart from one whose data changed). infini-gram's indexer writes none: its directories
get the structural check alone (:meth:`InfGramIndex.verify <fastspec.ngram.index.InfGramIndex.verify>`)
and a sampled fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .._files import write_json

__all__ = ["CHECKSUMS", "FORMATS", "SHARD_MANIFEST", "data_files", "digest", "fingerprint", "formats_present",
           "read_shard_manifest", "verify_checksums", "write_checksums", "write_shard_manifest"]

#: Written at build time beside the data files: the size and BLAKE2b of each, for verify().
CHECKSUMS = "checksums.json"
#: Written by a build of one shard of a split corpus (``--shard I/N``): which shard of which
#: split of which corpus, and the settings that must agree for the shards to combine.
SHARD_MANIFEST = "shard.json"
SHARD_FORMAT = "fastspec.index-shard"
SHARD_VERSION = 1
#: The manifest fields every shard of one split must share (besides its own shard number).
SHARD_SHARED = ("of", "corpus_documents", "corpus_digest", "vocab_size", "token_width", "tokenizer")
#: The file whose presence marks each format (shard 0's token file).
FORMATS = {"fastspec": "tokens.0", "infini-gram": "tokenized.0"}
# The fingerprint of an infini-gram directory reads this much of each end of every file.
_SAMPLE = 1 << 20


def formats_present(directory: str | os.PathLike) -> list[str]:
    """The index formats whose shard-0 token file is in ``directory`` (none, one, or both)."""
    return [name for name, marker in FORMATS.items() if os.path.isfile(os.path.join(directory, marker))]


def data_files(directory: str | os.PathLike) -> list[Path]:
    """The data files of a fastspec index in ``directory`` (``tokens.*``, ``suffix_array.*``)."""
    directory = Path(directory)
    return sorted(directory.glob("tokens.*")) + sorted(directory.glob("suffix_array.*"))


def digest(path: str | os.PathLike) -> str:
    """BLAKE2b (32-byte digest, hex) of a file, read in 8 MiB blocks (hashlib releases the GIL
    on them)."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def write_checksums(directory: str | os.PathLike) -> None:
    """Write ``checksums.json`` for the data files in ``directory`` (a pass over them)."""
    write_json(Path(directory) / CHECKSUMS, {"algorithm": "blake2b", "files": {
        f.name: {"size": f.stat().st_size, "blake2b": digest(f)} for f in data_files(directory)}})


def _missing_checksums(directory: str) -> ValueError:
    return ValueError(f"{directory}: a fastspec-format index without its checksums: "
                      f"{os.path.join(directory, CHECKSUMS)} is missing (fastspec writes it with every index), so "
                      "damage inside the data files cannot be found; rebuild the index")


def _read_checksums(directory: str) -> dict[str, Any] | None:
    """The parsed ``checksums.json`` of ``directory``, or None when there is none."""
    manifest = os.path.join(directory, CHECKSUMS)
    try:
        with open(manifest) as fh:
            content = json.load(fh)
        files = content["files"]
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise TypeError("'files' is not a mapping of file name to {size, blake2b}")
        outside = [name for name in files if os.path.basename(name) != name or name in ("", ".", "..")]
        if outside:  # it lists the index's own files by name: a path would check (and read) another file
            raise TypeError(f"it lists {outside[0]!r}, not the name of a file in the index directory")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{manifest}: unreadable checksums ({err})") from err
    return content


def verify_checksums(directory: str | os.PathLike, format: str) -> int | None:
    """Check every file listed in ``directory``'s ``checksums.json`` (size, then BLAKE2b).

    Parameters
    ----------
    directory
        The index directory.
    format
        The format the index was opened as: ``"fastspec"`` indexes must have their
        checksums; ``"infini-gram"`` ones have none (a ``checksums.json`` there is checked).

    Returns
    -------
    int or None
        The number of files checked; None when there are no checksums (infini-gram).

    Raises
    ------
    ValueError
        Naming the damaged or missing file, an unreadable ``checksums.json``, or the
        directory of a fastspec index whose ``checksums.json`` is missing.
    """
    directory = os.fspath(directory)
    content = _read_checksums(directory)
    if content is None:
        if format == "fastspec":
            raise _missing_checksums(directory)
        return None
    files = content["files"]
    for name, want in sorted(files.items()):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: missing (listed in {CHECKSUMS})")
        size = os.path.getsize(path)
        if size != want.get("size"):
            raise ValueError(f"{path}: damaged: {size} bytes, {want.get('size')} when it was built")
        if digest(path) != want.get("blake2b"):
            raise ValueError(f"{path}: damaged: its BLAKE2b checksum differs from the one written when "
                             "it was built; rebuild the index")
    return len(files)


def _ends_digest(path: str, size: int) -> str:
    """SHA-256 of a file's first and last MiB (the whole file when it is at most 2 MiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(_SAMPLE))
        if size > _SAMPLE:
            fh.seek(max(_SAMPLE, size - _SAMPLE))
            h.update(fh.read(_SAMPLE))
    return h.hexdigest()


def fingerprint(directory: str | os.PathLike, format: str, n_shards: int) -> str:
    """A SHA-256 (hex) identifying the corpus an index holds, cheap to compute.

    - fastspec format: over the content of ``checksums.json`` (each data file's name, size
      and BLAKE2b, written at build time), canonicalised (sorted keys, no whitespace), so it
      reads one small file. It names the index as built; :func:`verify_checksums` checks that
      the files still match it.
    - infini-gram format (no checksums): over the names and sizes of ``tokenized.<s>``,
      ``table.<s>`` and ``offset.<s>`` of every shard and a SHA-256 of each file's first and
      last MiB. A sample: two corpora of equal sizes that differ only away from the ends of
      every file would share it.

    The same corpus built again with the same settings gives the same value (the build is
    deterministic: SA-IS, shards numbered in corpus order, no time stamp in the headers); built
    with another token width or cut into other shards (``memory_budget``, ``threads``) it gives
    another, since the files differ.

    Raises
    ------
    ValueError
        A fastspec index without ``checksums.json``, or with an unreadable one.
    OSError
        An infini-gram data file that cannot be read.
    """
    directory = os.fspath(directory)
    if format == "fastspec":
        content = _read_checksums(directory)
        if content is None:
            raise _missing_checksums(directory)
        canonical = {"algorithm": content.get("algorithm"), "files": content["files"]}
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(("fastspec\n" + text).encode()).hexdigest()
    parts = []
    for s in range(n_shards):
        for stem in ("tokenized", "table", "offset"):
            path = os.path.join(directory, f"{stem}.{s}")
            size = os.path.getsize(path)
            parts.append([f"{stem}.{s}", size, _ends_digest(path, size)])
    return hashlib.sha256(("infini-gram\n" + json.dumps(parts, separators=(",", ":"))).encode()).hexdigest()


def write_shard_manifest(directory: str | os.PathLike, *, shard: int, of: int, corpus: str, corpus_documents: int,
                         corpus_digest: str, vocab_size: int, token_width: int, tokenizer: str | None,
                         tokenizer_name: str | None, n_docs: int) -> None:
    """Write ``shard.json``: this directory holds shard ``shard`` of ``of`` of a corpus split by
    document (document d in shard d mod ``of``); ``corpus_documents`` and ``corpus_digest``
    identify the corpus (its number of documents and :attr:`DocumentSplit.digest
    <fastspec.ngram.ingest.DocumentSplit.digest>`), ``corpus`` names it for people;
    ``tokenizer`` is the digest of the tokenizer's vocabulary (None for token ids),
    ``tokenizer_name`` where it was loaded from (for people: paths differ between machines)."""
    write_json(Path(directory) / SHARD_MANIFEST, {
        "format": SHARD_FORMAT, "version": SHARD_VERSION, "shard": shard, "of": of,
        "split": f"document d (0-based, in corpus order) is in shard d mod {of}",
        "corpus": corpus, "corpus_documents": corpus_documents, "corpus_digest": corpus_digest,
        "vocab_size": vocab_size, "token_width": token_width, "tokenizer": tokenizer,
        "tokenizer_name": tokenizer_name, "n_docs": n_docs})


def read_shard_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``shard.json`` of ``directory``, checked.

    Raises
    ------
    ValueError
        Naming the directory: no manifest (not built with ``--shard``), or an unreadable or
        malformed one.
    """
    path = os.path.join(os.fspath(directory), SHARD_MANIFEST)
    try:
        with open(path) as fh:
            content = json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{os.fspath(directory)}: not a shard of a split corpus ({SHARD_MANIFEST} is missing; "
                         "shards are built with `fastspec index build ... --shard I/N`)") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable shard manifest ({err})") from err
    if not isinstance(content, dict) or content.get("format") != SHARD_FORMAT:
        raise ValueError(f"{path}: not a fastspec shard manifest")
    if content.get("version") != SHARD_VERSION:
        raise ValueError(f"{path}: shard manifest version {content.get('version')!r} is not supported "
                         f"(expected {SHARD_VERSION})")
    missing = [k for k in ("shard", "n_docs", *SHARD_SHARED) if k not in content]
    if missing:
        raise ValueError(f"{path}: the shard manifest lacks {', '.join(missing)}")
    return content
