"""fastspec.models.data's embedded corpus: the standard library's source, split by file."""

import ast
import hashlib
import os
import sysconfig

import pytest

from fastspec.models.data import (STDLIB_SKIP, docstring_paragraphs, stdlib_corpus, stdlib_docstrings,
                                  stdlib_sources, texts_digest)


@pytest.fixture(scope="module")
def sources():
    return stdlib_sources()


@pytest.fixture(scope="module")
def paragraphs(sources):
    """Each file's docstring paragraphs, parsed once for the module (ast over ~10 MB)."""
    return {p: docstring_paragraphs(s) for p, s in sources}


@pytest.fixture(scope="module")
def corpus():
    return stdlib_corpus()


def test_sources_are_the_files_as_read_in_sorted_order(sources):
    root = sysconfig.get_paths()["stdlib"]
    paths = [p for p, _ in sources]
    assert len(paths) == len(set(paths)) > 100
    assert all(p.endswith(".py") and not set(p.split("/")[:-1]) & STDLIB_SKIP for p in paths)
    assert "os.py" in paths and "json/decoder.py" in paths
    text = dict(sources)
    with open(os.path.join(root, "json", "decoder.py"), encoding="utf-8") as fh:
        assert text["json/decoder.py"] == fh.read()
    # a folder's files (sorted) before its subfolders (sorted): what os.walk gives with sorted names
    top = [p for p in paths if "/" not in p]
    assert top == sorted(top) and paths[:len(top)] == top
    # the test suites are left out by default and read when asked for
    if os.path.isdir(os.path.join(root, "test")):
        assert any(p.startswith("test/") for p, _ in stdlib_sources(STDLIB_SKIP - {"test"}))


def test_docstring_paragraphs():
    source = '''"""Module text that is long enough to be a paragraph of eight words.

    Short.

    >>> an example that is eight words long or more, kept out
    """
    def f():
        """A function's   docstring, spread
        over two lines, with eight or more words."""
    '''
    got = docstring_paragraphs(source.replace("\n    ", "\n"))
    assert got == ["Module text that is long enough to be a paragraph of eight words.",
                   "A function's docstring, spread over two lines, with eight or more words."]
    assert docstring_paragraphs("def (:") == []


def test_stdlib_docstrings_are_the_sources_paragraphs(sources, paragraphs):
    want = [q for p, _ in sources for q in paragraphs[p]]
    assert stdlib_docstrings(max_paragraphs=300) == want[:300]


def test_corpus_splits_by_file_hash_and_shares_no_text(sources, paragraphs, corpus):
    held = {p for p, _ in sources if int(hashlib.sha256(p.encode()).hexdigest(), 16) % 5 == 0}
    assert set(corpus.held_files) == held and 0 < len(held) < len(sources) / 3
    assert corpus.train == [s for p, s in sources if p not in held]
    assert corpus.sha256 == texts_digest(corpus.train)
    assert corpus.train_paragraphs == [q for p, _ in sources if p not in held for q in paragraphs[p]]
    # probes: paragraphs of the held-out files, each once, none also a training docstring
    assert len(corpus.held_paragraphs) > 1500
    assert len(set(corpus.held_paragraphs)) == len(corpus.held_paragraphs)
    assert not set(corpus.held_paragraphs) & set(corpus.train_paragraphs)
    held_text = {q for p in held for q in paragraphs[p]}
    assert set(corpus.held_paragraphs) <= held_text
    # the module docstring of a held-out file is in no training document
    path = sorted(held)[0]
    doc = ast.get_docstring(ast.parse(dict(sources)[path]), clean=False)
    if doc and len(doc) > 200:
        assert not any(doc in s for s in corpus.train)


def test_corpus_checks_its_argument():
    with pytest.raises(ValueError, match="held_out must be an integer >= 2"):
        stdlib_corpus(held_out=1)
