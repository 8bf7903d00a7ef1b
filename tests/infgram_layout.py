"""An infini-gram index written in Python, as infini-gram's indexer lays it out, for the tests
that read that format (no infini-gram install needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_infini_gram_layout(docs, out: Path, width: int, shard: int = 0) -> None:
    """tokenized/table/offset as infini-gram's indexer writes them: 0xFF.. separators before each
    document, byte offsets of every token sorted by their byte suffixes, ceil(log2(size)/8)-byte
    little-endian pointers."""
    dtype = {2: "<u2", 4: "<u4"}[width]
    sep = b"\xff" * width
    parts, offsets, off = [], [], 0
    for d in docs:
        b = sep + np.asarray(d, dtype=dtype).tobytes()
        parts.append(b)
        offsets.append(off)
        off += len(b)
    data = b"".join(parts)
    ptr = int(np.ceil(np.log2(len(data)) / 8))
    order = sorted(range(0, len(data), width), key=lambda p: data[p:])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tokenized.{shard}").write_bytes(data)
    (out / f"offset.{shard}").write_bytes(np.array(offsets, dtype="<u8").tobytes())
    (out / f"table.{shard}").write_bytes(b"".join(p.to_bytes(ptr, "little") for p in order))
