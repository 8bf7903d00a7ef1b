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
import sysconfig
from dataclasses import dataclass
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


#: Folders of the standard library that are not its own code: test suites (large, and
#: stripped from some distributions), IDLE and lib2to3 (absent from some), installed packages.
STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"})


def stdlib_sources(skip: frozenset[str] | set[str] = STDLIB_SKIP) -> list[tuple[str, str]]:
    """(path relative to the standard library, source text) of every ``.py`` file of Python's
    standard library outside the folders named in ``skip``, folders and files in sorted order (files
    of a folder before its subfolders). Files that are not
    UTF-8 (a few templates) are left out. The same Python build gives the same list on every
    machine, whatever is installed beside it."""
    root = sysconfig.get_paths()["stdlib"]
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                try:
                    with open(path, encoding="utf-8") as fh:
                        out.append((os.path.relpath(path, root).replace(os.sep, "/"), fh.read()))
                except UnicodeDecodeError:
                    continue
    if not out:
        raise RuntimeError(f"no Python source found under {root}; is this Python's standard library stripped?")
    return out


def docstring_paragraphs(source: str, *, min_words: int = 8) -> list[str]:
    """The docstrings' paragraphs of one module's source, each on one line (whitespace runs
    become one space), at least ``min_words`` words and not doctest examples. Read with
    ``ast``: nothing is imported. A source ``ast`` cannot parse has none."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []  # a few stdlib files are templates
    paragraphs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            for para in (ast.get_docstring(node) or "").split("\n\n"):
                words = para.split()
                if len(words) >= min_words and not para.lstrip().startswith(">>>"):
                    paragraphs.append(" ".join(words))
    return paragraphs


def stdlib_docstrings(*, min_words: int = 8, max_paragraphs: int | None = None) -> list[str]:
    """Paragraphs of the docstrings of Python's own standard library (:func:`stdlib_sources`,
    :func:`docstring_paragraphs`): real English text that every machine with this Python
    has, in the same order everywhere."""
    paragraphs: list[str] = []
    for _, source in stdlib_sources():
        paragraphs += docstring_paragraphs(source, min_words=min_words)
        if max_paragraphs is not None and len(paragraphs) >= max_paragraphs:
            return paragraphs[:max_paragraphs]
    if not paragraphs:
        raise RuntimeError("no docstrings found in the standard library; is it stripped?")
    return paragraphs


@dataclass(frozen=True)
class StdlibCorpus:
    """The demo's embedded corpus (:func:`stdlib_corpus`): training documents and held-out
    probe paragraphs that share no file and no paragraph."""

    train: list[str]
    """The whole source (code, comments, docstrings) of each training file, one document per file."""
    train_paragraphs: list[str]
    """The docstring paragraphs of the training files (text the model was trained on)."""
    held_paragraphs: list[str]
    """The docstring paragraphs of the held-out files that no training file's docstrings also hold."""
    held_files: list[str]
    """The held-out files' paths, relative to the standard library."""
    sha256: str
    """:func:`texts_digest` of ``train``: what the model was trained on."""


def stdlib_corpus(*, held_out: int = 5, min_words: int = 8, skip: frozenset[str] | set[str] = STDLIB_SKIP
                  ) -> StdlibCorpus:
    """Python's standard library split into training source and held-out docstrings.

    Parameters
    ----------
    held_out
        One file in about ``held_out`` is held out: those whose path's SHA-256, read as an
        integer, is divisible by it. The split depends on the path alone, so it is the same
        for every seed and every Python that has the file.
    min_words
        The shortest docstring paragraph kept, in words.
    skip
        Folders left out (:func:`stdlib_sources`).

    Returns
    -------
    StdlibCorpus
        Training documents (every other file's whole source, in path order), their
        docstring paragraphs, and the held-out files' paragraphs less any paragraph a
        training file's docstrings also hold (licence text and repeated boilerplate), so a
        probe is never text the model saw as a docstring.
    """
    if isinstance(held_out, bool) or not isinstance(held_out, int) or held_out < 2:
        raise ValueError(f"held_out must be an integer >= 2 (one file in held_out is held out), got {held_out!r}")
    train, train_paras, held_paras, held_files = [], [], [], []
    for path, source in stdlib_sources(skip):
        paras = docstring_paragraphs(source, min_words=min_words)
        if int.from_bytes(hashlib.sha256(path.encode()).digest(), "big") % held_out == 0:
            held_files.append(path)
            held_paras += paras
        else:
            train.append(source)
            train_paras += paras
    seen = set(train_paras)
    held_paras = [p for p in dict.fromkeys(held_paras) if p not in seen]
    return StdlibCorpus(train=train, train_paragraphs=train_paras, held_paragraphs=held_paras,
                        held_files=held_files, sha256=texts_digest(train))


__all__ = ["StdlibCorpus", "docstring_paragraphs", "load_texts", "read_texts", "sample_texts", "stdlib_corpus",
           "stdlib_docstrings", "stdlib_sources", "texts_digest"]
