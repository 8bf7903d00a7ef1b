"""An index's integrity and identity (fastspec/ngram/integrity.py): verify() refuses a
fastspec index without its checksums, still checks an infini-gram one's structure, refuses a
directory holding both formats; the fingerprint tells corpora apart and is stable."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest

from fastspec import InfGramIndex
from fastspec.cli import main
from fastspec.ngram.integrity import CHECKSUMS, fingerprint, verify_checksums
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
    with pytest.raises(ValueError, match="is missing"):
        InfGramIndex(d).fingerprint


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


# ---------------------------------------------------------------------------------------
# fingerprint
# ---------------------------------------------------------------------------------------


def _corpus(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 40, size=rng.integers(5, 60)) for _ in range(30)]


def test_fingerprints_tell_corpora_apart_and_survive_a_rebuild(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    fa = InfGramIndex.build(_corpus(0), a, vocab_size=40, progress=False).fingerprint
    fb = InfGramIndex.build(_corpus(1), b, vocab_size=40, progress=False).fingerprint
    assert len(fa) == 64 and int(fa, 16) >= 0 and fa != fb
    # one corpus differing in a single token
    changed = _corpus(0)
    changed[7][3] = (changed[7][3] + 1) % 40
    assert InfGramIndex.build(changed, tmp_path / "c", vocab_size=40, progress=False).fingerprint != fa
    # the build is deterministic: the same corpus rebuilt in place gives the same identity,
    # another corpus rebuilt in place another
    assert InfGramIndex.build(_corpus(0), a, vocab_size=40, progress=False, overwrite=True).fingerprint == fa
    assert InfGramIndex.build(_corpus(1), a, vocab_size=40, progress=False, overwrite=True).fingerprint == fb


def test_a_sharded_build_is_deterministic_too(tmp_path):
    """Several shards built on two threads (in whichever order they finish): same files."""
    kw = dict(vocab_size=40, memory_budget=200 * 22, threads=2, progress=False)
    first = InfGramIndex.build(_corpus(2), tmp_path / "x", **kw)
    assert first.n_shards > 2
    again = InfGramIndex.build(_corpus(2), tmp_path / "y", **kw)
    assert again.fingerprint == first.fingerprint
    assert (tmp_path / "x" / CHECKSUMS).read_text() == (tmp_path / "y" / CHECKSUMS).read_text()
    # the same corpus cut into other shards is other files, so another identity (documented)
    assert InfGramIndex.build(_corpus(2), tmp_path / "z", vocab_size=40, progress=False).fingerprint != first.fingerprint


def test_the_fastspec_fingerprint_follows_the_checksums(tmp_path):
    d = tmp_path / "idx"
    before = InfGramIndex.build(DOCS, d, progress=False).fingerprint
    manifest = d / CHECKSUMS
    content = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(content, indent=4, sort_keys=True))  # formatting alone: same identity
    assert InfGramIndex(d).fingerprint == before
    content["files"]["tokens.0"]["blake2b"] = "0" * 64
    manifest.write_text(json.dumps(content))
    assert InfGramIndex(d).fingerprint != before
    manifest.write_text("{not json")
    with pytest.raises(ValueError, match=f"{CHECKSUMS}: unreadable checksums"):
        InfGramIndex(d).fingerprint


def test_fingerprints_agree_across_processes(tmp_path):
    fs, ig, ig2 = tmp_path / "fs", tmp_path / "ig", tmp_path / "ig2"
    InfGramIndex.build(_corpus(3), fs, vocab_size=40, progress=False)
    write_infini_gram_layout(_corpus(3), ig, 2)
    write_infini_gram_layout(_corpus(4), ig2, 2)
    here = [InfGramIndex(p).fingerprint for p in (fs, ig, ig2)]
    assert len(set(here)) == 3
    code = ("import sys; from fastspec import InfGramIndex\n"
            "for p in sys.argv[1:]: print(InfGramIndex(p).fingerprint)")
    # from tmp_path: python -c puts the working directory first, and the source tree has no _C
    out = subprocess.run([sys.executable, "-c", code, str(fs), str(ig), str(ig2)], capture_output=True, text=True,
                         timeout=300, check=True, cwd=tmp_path).stdout.split()
    assert out == here


def test_the_infini_gram_fingerprint_samples_each_file_s_ends(tmp_path):
    """Over names, sizes and the first and last MiB of each file: a change there or in a size
    shows; one in the middle of a large file does not (the price of reading 2 MiB a file)."""
    rng = np.random.default_rng(0)
    size = 3 << 20
    for name, n in (("tokenized.0", size), ("table.0", size), ("offset.0", 800)):
        (tmp_path / name).write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    base = fingerprint(tmp_path, "infini-gram", 1)
    assert fingerprint(tmp_path, "infini-gram", 1) == base

    def flipped(name: str, at: int) -> str:
        path = tmp_path / name
        clean = path.read_bytes()
        damaged = bytearray(clean)
        damaged[at] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            return fingerprint(tmp_path, "infini-gram", 1)
        finally:
            path.write_bytes(clean)

    assert flipped("tokenized.0", 10) != base
    assert flipped("table.0", size - 1) != base
    assert flipped("offset.0", 400) != base
    assert flipped("tokenized.0", size // 2) == base
    with open(tmp_path / "offset.0", "ab") as fh:
        fh.write(b"\0" * 8)
    assert fingerprint(tmp_path, "infini-gram", 1) != base


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/tokens.0", ".."])
def test_checksums_that_list_a_path_outside_the_index_are_refused(tmp_path, name):
    d = tmp_path / "idx"
    InfGramIndex.build(DOCS, d, progress=False)
    (tmp_path / "outside.bin").write_bytes(b"x")
    content = json.loads((d / CHECKSUMS).read_text())
    content["files"][name] = {"size": 1, "blake2b": "0" * 64}
    (d / CHECKSUMS).write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"unreadable checksums .*{re.escape(repr(name))}, not the name of a file"):
        verify_checksums(d, "fastspec")
