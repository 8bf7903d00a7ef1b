"""An index's integrity (fastspec/ngram/integrity.py): verify() refuses a fastspec index
without its checksums, still checks an infini-gram one's structure, refuses a directory
holding both formats."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastspec import InfGramIndex
from fastspec.cli import main
from fastspec.ngram.integrity import CHECKSUMS
from infgram_layout import write_infini_gram_layout

DOCS = [np.array([0, 1, 2, 1, 2]), np.array([2, 2, 0])]


def _set_token(index_dir, position: int, value: int) -> None:
    """Overwrite token ``position`` (separators counted) of shard 0, 16-bit, past the header."""
    with open(index_dir / "tokens.0", "r+b") as fh:
        fh.seek(64 + 2 * position)
        fh.write(np.uint16(value).tobytes())


def test_a_fastspec_index_without_its_checksums_fails_verification(tmp_path, capsys):
    """The issue's case: checksums.json deleted, a token changed (counts change, the suffix
    array stays a permutation): verify used to pass it with exit 0."""
    d = tmp_path / "idx"
    InfGramIndex.build(DOCS, d, progress=False)
    assert InfGramIndex(d).count([1, 2]) == 2
    (d / CHECKSUMS).unlink()
    # the first document's first 1 becomes 0: [1, 2] occurs once, and the suffix array is
    # still sorted, so the structural check alone passes it
    _set_token(d, 2, 0)
    assert InfGramIndex(d).count([1, 2]) == 1  # the damage is real, and opening does not see it
    with pytest.raises(ValueError, match="checksums") as err:
        InfGramIndex(d).verify()
    assert str(d) in str(err.value) and os.path.join(str(d), CHECKSUMS) in str(err.value)
    assert "fastspec-format" in str(err.value)
    assert main(["index", "verify", str(d)]) == 2
    out = capsys.readouterr()
    assert "ok" not in out.out and f"{d}: a fastspec-format index without its checksums" in out.err


def test_an_undamaged_fastspec_index_without_checksums_fails_too(tmp_path):
    """Without the checksums, an intact index cannot be told from a damaged one."""
    d = tmp_path / "idx"
    InfGramIndex.build(DOCS, d, progress=False)
    (d / CHECKSUMS).unlink()
    with pytest.raises(ValueError, match="is missing"):
        InfGramIndex(d).verify()


def test_an_infini_gram_index_gets_the_structural_check(tmp_path, capsys):
    d = tmp_path / "ig"
    write_infini_gram_layout(DOCS, d, 2)
    assert InfGramIndex(d).verify() == {"checksums": None, "structure": True}
    assert main(["index", "verify", str(d)]) == 0
    assert "an infini-gram index (it has no checksums to check); structure verified" in capsys.readouterr().out
    table = (d / "table.0").read_bytes()
    (d / "table.0").write_bytes(table[:1] + table[:1] + table[2:])  # entry 0 repeated: not a permutation
    assert main(["index", "verify", str(d)]) == 2
    assert "table.0" in capsys.readouterr().err


def test_a_directory_with_both_formats_is_refused_as_ambiguous(tmp_path, capsys):
    d = tmp_path / "both"
    InfGramIndex.build(DOCS, d, progress=False)
    write_infini_gram_layout([np.array([1, 1, 1])], d, 2)
    with pytest.raises(ValueError, match="ambiguous") as err:
        InfGramIndex(d)
    assert str(d) in str(err.value) and "tokens.0" in str(err.value) and "tokenized.0" in str(err.value)
    assert main(["index", "verify", str(d)]) == 2
    assert f"{d}: ambiguous" in capsys.readouterr().err
    # naming the format chooses one
    assert InfGramIndex(d, format="fastspec").count([1, 2]) == 2
    assert InfGramIndex(d, format="infini-gram").count([1, 1]) == 2


def test_building_into_an_infini_gram_directory_is_refused(tmp_path):
    d = tmp_path / "ig"
    write_infini_gram_layout(DOCS, d, 2)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="infini-gram index"):
            InfGramIndex.build(DOCS, d, progress=False, overwrite=overwrite)
    assert sorted(os.listdir(d)) == ["offset.0", "table.0", "tokenized.0"]
