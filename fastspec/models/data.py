"""Texts to trace: local files, a deterministic sample, and the embedded default corpus.

Every checkpoint of a trace sees the same sample, so a trace's RankMe/α changes are the
model's and not the data's. The sample is drawn once from the file's documents with a
seeded generator and kept in file order; its SHA-256 goes into the run's configuration.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from typing import Any, Iterator, Sequence

import numpy as np

from .._settings import SettingError, literal

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")


def read_texts(path: str | os.PathLike, *, text_field: str = "text") -> list[str]:
    """All documents of a local file: ``.txt`` (one per non-blank line), ``.jsonl`` (the
    ``text_field`` of each line) or ``.parquet`` (the ``text_field`` column)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a text file ({', '.join(TEXT_SUFFIXES)})")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in TEXT_SUFFIXES:
        raise ValueError(f"{path}: unknown text file type {suffix!r}; expected one of {', '.join(TEXT_SUFFIXES)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if suffix == ".txt":
        with open(path, encoding="utf-8") as fh:
            texts = [line.rstrip("\n") for line in fh if line.strip()]
    elif suffix == ".jsonl":
        texts = _read_jsonl(path, text_field)
    else:
        import pandas as pd

        try:
            frame = pd.read_parquet(path, columns=[text_field])
        except (KeyError, ValueError) as err:  # pyarrow names a missing column in a ValueError/KeyError
            raise ValueError(f"{path}: cannot read column {text_field!r}: {err}") from err
        texts = frame[text_field].tolist()
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"{path}: row {bad[0]} of column {text_field!r} is {type(texts[bad[0]]).__name__}, not text")
        texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"{path}: no documents (the file is empty or every document is blank)")
    return texts


def iter_jsonl(path: str) -> Iterator[tuple[str, Any]]:
    """(``"path:line"``, record) for each non-blank line of a JSON-lines file; a line that is
    not JSON is a ValueError naming the file and line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not JSON: {err}") from err


def _read_jsonl(path: str, text_field: str) -> list[str]:
    texts = []
    for where, record in iter_jsonl(path):
        if not isinstance(record, dict) or text_field not in record:
            raise SettingError(literal(f"{where}: no field {text_field!r}") + " (use {text_field} to name the text field)",
                               text_field=...)
        if not isinstance(record[text_field], str):
            raise ValueError(f"{where}: field {text_field!r} is {type(record[text_field]).__name__}, not text")
        if record[text_field].strip():
            texts.append(record[text_field])
    return texts


def sample_texts(texts: Sequence[str], n: int | None, *, seed: int = 0, source: str = "the data") -> list[str]:
    """``n`` documents drawn without replacement with a seeded generator, in their original
    order; all of them when ``n`` is None."""
    if n is None:
        return list(texts)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    if n > len(texts):
        raise ValueError(f"asked for {n} sequences but {source} has only {len(texts)} documents")
    picked = np.sort(np.random.default_rng(seed).choice(len(texts), size=int(n), replace=False))
    return [texts[i] for i in picked]


def load_texts(path: str | os.PathLike, n: int | None = None, *, seed: int = 0, text_field: str = "text") -> list[str]:
    """The deterministic sample of ``n`` documents (all when None) from a local text file.

    The sample is drawn without replacement by NumPy's ``default_rng(seed)`` and kept in the
    file's order, so every checkpoint of a trace sees the same texts.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.txt`` file (a document per non-blank line), ``.jsonl`` (the ``text_field`` of
        each line) or ``.parquet`` (the ``text_field`` column).
    n : int, optional
        The number of documents to draw; None: all of them.
    seed : int, default 0
        The seed of the draw.
    text_field : str, default 'text'
        The field or column holding the text, in ``.jsonl`` and ``.parquet`` files.

    Returns
    -------
    list of str
        The documents, in file order.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        An unknown file type, a file with no documents, a line that is not JSON, a text that
        is not a string, or ``n`` larger than the number of documents; each names the file
        (and line).
    fastspec.SettingError
        A ``.jsonl`` line without ``text_field``.

    Examples
    --------
    >>> import pathlib
    >>> _ = pathlib.Path("texts.txt").write_text("first\\nsecond\\n\\nthird\\nfourth\\nfifth\\n")
    >>> fastspec.load_texts("texts.txt")
    ['first', 'second', 'third', 'fourth', 'fifth']
    >>> fastspec.load_texts("texts.txt", n=3, seed=1)
    ['second', 'third', 'fourth']
    """
    return sample_texts(read_texts(path, text_field=text_field), n, seed=seed, source=os.fspath(path))


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of the sample (length-prefixed, so no two samples collide by concatenation)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def stdlib_docstrings(*, min_words: int = 8, max_paragraphs: int | None = None) -> list[str]:
    """Paragraphs of the docstrings of Python's own standard library: real English text that
    every machine with this Python has. Read with ``ast`` (nothing is imported), files in
    sorted order, so the same Python version gives the same corpus everywhere."""
    root = os.path.dirname(os.__file__)
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
    paragraphs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # a few stdlib files are templates or other encodings
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for para in doc.split("\n\n"):
                    words = para.split()
                    if len(words) >= min_words and not para.lstrip().startswith(">>>"):
                        paragraphs.append(" ".join(words))
                        if max_paragraphs is not None and len(paragraphs) >= max_paragraphs:
                            return paragraphs
    if not paragraphs:
        raise RuntimeError(f"no docstrings found under {root}; is this Python's standard library stripped?")
    return paragraphs


__all__ = ["load_texts", "read_texts", "sample_texts", "stdlib_docstrings", "texts_digest"]
