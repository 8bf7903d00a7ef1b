"""One ∞-gram index from the shards of a corpus built apart (``fastspec index build … --shard
I/N`` on any machines), without building anything again.

A fastspec index is already a set of shards (``tokens.<s>``, ``suffix_array.<s>``), and every
query adds the shards up; n-grams never cross a document, so an index whose shards hold
disjoint sets of documents counts exactly what one index of all of them counts. Combining is
therefore renaming: the shard directories' files are moved (or copied) into the new
directory under one numbering, shard directory I's files after those of I − 1. The only bytes
that change are two fields of each file's 64-byte header, its shard number and the number of
shards, which the engine checks; since those change, the files are moved or copied, never
hard-linked or symlinked (writing the header of a link would rewrite the shard directory's
file too, and leave that directory inconsistent).

Before anything is moved, every shard directory is checked: its ``shard.json`` (the same
split, corpus and settings as the others; no shard missing or given twice), its headers, and
each data file against its build-time checksum. The same read computes the new checksums, so
the combined index is written with a ``checksums.json`` that ``fastspec index verify``
checks, and damage from before the combine is not blessed by it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Sequence

from .. import _C
from .._files import remove_stale, temporary_name, write_json
from .build import _check_out_dir, _install
from .integrity import CHECKSUMS, SHARD_MANIFEST, SHARD_SHARED, _read_checksums, read_shard_manifest

__all__ = ["combine_shards"]

# csrc/infgram/format.hpp: FileHeader.shard and FileHeader.n_shards, little-endian uint32.
_HEADER_BYTES = 64
_SHARD_FIELD = 48
_STEMS = ("tokens", "suffix_array")


def _patched(header: bytes, shard: int, n_shards: int) -> bytes:
    return header[:_SHARD_FIELD] + struct.pack("<II", shard, n_shards) + header[_SHARD_FIELD + 8:]


def _local_shards(directory: Path, manifest: dict[str, Any]) -> int:
    """The number of shards in a shard directory, from its headers, checked against the
    manifest (n_docs, vocab_size, token width)."""
    info = _C.infgram_open(str(directory), "fastspec", 0, 0).info()  # the engine's cheap checks: headers, sizes
    for key, have in (("n_docs", info["n_docs"]), ("vocab_size", info["vocab_size"]),
                      ("token_width", info["token_width"])):
        if manifest[key] != have:
            raise ValueError(f"{directory}: {SHARD_MANIFEST} says {key}={manifest[key]!r}, its index files "
                             f"{have!r}: the directory was changed after it was built")
    return int(info["n_shards"])


def _checked_digests(directory: Path, names: list[str], patches: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Read each file once: check it against the directory's build-time checksum, and return
    the size and BLAKE2b it will have with its header replaced by ``patches[name]``."""
    content = _read_checksums(str(directory))
    if content is None:
        raise ValueError(f"{directory}: {CHECKSUMS} is missing (fastspec writes it with every index), so the shard's "
                         "files cannot be checked before they are combined; rebuild the shard")
    listed = content["files"]
    out = {}
    for name in names:
        path = directory / name
        want = listed.get(name)
        if want is None:
            raise ValueError(f"{path}: not listed in {directory / CHECKSUMS}")
        old, new = hashlib.blake2b(digest_size=32), hashlib.blake2b(digest_size=32)
        size = 0
        with open(path, "rb") as fh:
            header = fh.read(_HEADER_BYTES)
            old.update(header)
            new.update(patches[name])
            size += len(header)
            while block := fh.read(8 << 20):
                old.update(block)
                new.update(block)
                size += len(block)
        if size != want.get("size") or old.hexdigest() != want.get("blake2b"):
            raise ValueError(f"{path}: damaged: it differs from the checksum written when the shard was built; "
                             "rebuild that shard")
        out[name] = {"size": size, "blake2b": new.hexdigest()}
    return out


def _check_split(dirs: list[Path], manifests: list[dict[str, Any]]) -> list[int]:
    """The order of ``dirs`` by shard number, after checking they are every shard of one split."""
    first, head = manifests[0], dirs[0]
    for d, m in zip(dirs[1:], manifests[1:]):
        for key in SHARD_SHARED:
            if m[key] != first[key]:
                raise ValueError(f"{d}: {key} is {m[key]!r}, but {head} has {first[key]!r}: only the shards of one "
                                 "split of one corpus, built with the same settings, combine")
    count = int(first["of"])
    where: dict[int, Path] = {}
    for d, m in zip(dirs, manifests):
        if m["shard"] in where:
            raise ValueError(f"{d} and {where[m['shard']]} are both shard {m['shard']}/{count}: give each shard once")
        where[m["shard"]] = d
    missing = [i for i in range(count) if i not in where]
    if missing:
        raise ValueError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing: the directories given hold "
                         f"shards {', '.join(str(i) for i in sorted(where))} of {count}")
    return sorted(range(len(dirs)), key=lambda k: manifests[k]["shard"])


def combine_shards(out_dir: str | os.PathLike, shard_dirs: Sequence[str | os.PathLike], *, copy: bool = False,
                   overwrite: bool = False) -> Path:
    """Make one index in ``out_dir`` of the shard directories of a split corpus.

    Parameters
    ----------
    out_dir
        The index directory to write (beside it, a temporary one is filled and renamed).
    shard_dirs
        Every shard directory of one split (``--shard I/N`` for I = 0 … N−1), in any order.
    copy
        Copy the files (the shard directories stay as they are) instead of moving them
        (which needs ``out_dir`` on the same file system as every shard directory, and
        empties and removes the shard directories once the index is in place).
    overwrite
        Replace an index already in ``out_dir``.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ValueError
        Naming the directory: not a shard (no ``shard.json``), a shard of another split or
        corpus or with other settings, a shard given twice or missing, a damaged file.
    FileExistsError
        ``out_dir`` holds an index and ``overwrite`` is False.
    OSError
        A shard directory on another file system than ``out_dir`` without ``copy``, or a
        file that cannot be moved or written.
    """
    dirs = [Path(d) for d in shard_dirs]
    if not dirs:
        raise ValueError("no shard directories given")
    out = Path(out_dir)
    if any(d.resolve() == out.resolve() for d in dirs):
        raise ValueError(f"{out}: the combined index must go to a new directory, not into one of the shards")
    manifests = [read_shard_manifest(d) for d in dirs]
    order = _check_split(dirs, manifests)
    _check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        device = os.stat(out.parent).st_dev
        for d in dirs:
            if os.stat(d).st_dev != device:
                raise OSError(f"{d} is on another file system than {out}: files cannot be moved there; pass copy=True "
                              "(--copy), or combine into a directory beside the shards")
    # The plan: (source directory, its shard s, the global shard g), and each file's new header.
    plan = []
    for k in order:
        for s in range(_local_shards(dirs[k], manifests[k])):
            plan.append((dirs[k], s, len(plan)))
    total = len(plan)
    checksums: dict[str, Any] = {}
    headers: dict[tuple[Path, str], tuple[bytes, bytes]] = {}  # (dir, name) -> (old, new)
    for d in (dirs[k] for k in order):
        names, patches = [], {}
        for src, s, g in plan:
            if src != d:
                continue
            for stem in _STEMS:
                with open(d / f"{stem}.{s}", "rb") as fh:
                    old = fh.read(_HEADER_BYTES)
                headers[(d, f"{stem}.{s}")] = (old, _patched(old, g, total))
                names.append(f"{stem}.{s}")
                patches[f"{stem}.{s}"] = headers[(d, f"{stem}.{s}")][1]
        digests = _checked_digests(d, names, patches)
        for src, s, g in plan:
            if src == d:
                for stem in _STEMS:
                    checksums[f"{stem}.{g}"] = digests[f"{stem}.{s}"]
    remove_stale(out.parent, out.name)
    tmp = out.parent / temporary_name(out.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    moved: list[tuple[Path, Path, bytes]] = []
    try:
        for src, s, g in plan:
            for stem in _STEMS:
                a, b = src / f"{stem}.{s}", tmp / f"{stem}.{g}"
                old, new = headers[(src, a.name)]
                if copy:
                    shutil.copyfile(a, b)
                else:
                    os.replace(a, b)
                    moved.append((a, b, old))
                with open(b, "r+b") as fh:
                    fh.write(new)
        write_json(tmp / CHECKSUMS, {"algorithm": "blake2b", "files": dict(sorted(checksums.items()))})
        _install(tmp, out)
    except BaseException:
        for a, b, old in reversed(moved):  # put every moved file back as it was
            with open(b, "r+b") as fh:
                fh.write(old)
            os.replace(b, a)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not copy:  # the shard directories hold only their manifests and checksums now
        for d in dirs:
            for name in (SHARD_MANIFEST, CHECKSUMS):
                (d / name).unlink(missing_ok=True)
            try:
                d.rmdir()
            except OSError:
                pass  # something else of the user's is in it: leave it
    return out
