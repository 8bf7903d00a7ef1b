"""The ∞-gram engine against brute-force counting in Python, against infini-gram's own
engine on the same token ids, and on broken inputs (each a precise exception)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastspec
from fastspec import InfGramIndex
from fastspec.ngram.integrity import write_checksums
from infgram_layout import write_infini_gram_layout

# ---------------------------------------------------------------------------------------
# Brute-force reference: plain Python over the list of documents
# ---------------------------------------------------------------------------------------


def ref_count(docs, q, separators=True):
    """Occurrences of q; the empty n-gram counts every token and, as infini-gram counts it,
    every document's separator."""
    q = list(q)
    if not q:
        return sum(len(d) for d in docs) + (len(docs) if separators else 0)
    m = len(q)
    return sum(1 for d in docs for i in range(len(d) - m + 1) if list(d[i:i + m]) == q)


def ref_prob(docs, ctx, tok):
    c = ref_count(docs, ctx)
    n = ref_count(docs, list(ctx) + [tok])
    return c, n, (n / c if c else math.nan)


def ref_suffix_len(docs, ctx):
    ctx = list(ctx)
    return max(l for l in range(len(ctx) + 1) if l == 0 or ref_count(docs, ctx[len(ctx) - l:]) > 0)


def ref_infgram(docs, ctx, tok):
    l = ref_suffix_len(docs, ctx)
    c, n, p = ref_prob(docs, list(ctx)[len(ctx) - l:], tok)
    return c, n, p, l


def ref_ntd(docs, ctx):
    ctx, m = list(ctx), len(ctx)
    out = {}
    for d in docs:
        d = list(d)
        for i in range(len(d) - m):
            if d[i:i + m] == ctx:
                out[d[i + m]] = out.get(d[i + m], 0) + 1
    return dict(sorted(out.items())), ref_count(docs, ctx)


def ref_match_len(docs, seq, i):
    seq = list(seq[:i + 1])
    return max(l for l in range(len(seq) + 1) if l == 0 or ref_count(docs, seq[len(seq) - l:]) > 0)


def check_sorted(index):
    """Every shard's suffix array is a permutation and its suffixes ascend."""
    for s in range(index.n_shards):
        text = np.asarray(index.tokens(s)).astype(np.int64).tolist()
        sa = np.asarray(index.suffix_array(s)).astype(np.int64)
        assert sorted(sa.tolist()) == list(range(len(text)))
        suffixes = [text[p:] for p in sa.tolist()]
        assert all(a < b for a, b in zip(suffixes, suffixes[1:]))


# ---------------------------------------------------------------------------------------
# Hypothesis: any corpus, any query
# ---------------------------------------------------------------------------------------

VOCAB = 5
token = st.integers(0, VOCAB - 1)
run = st.tuples(token, st.integers(1, 12)).map(lambda t: [t[0]] * t[1])  # runs of one repeated token
doc = st.one_of(st.lists(token, max_size=14), run, st.lists(st.one_of(token.map(lambda t: [t]), run), max_size=4).map(lambda parts: sum(parts, [])))
corpus = st.lists(doc, min_size=1, max_size=6).filter(lambda ds: sum(map(len, ds)) >= 2)
query = st.lists(token, max_size=18)  # longer than any document, at times


@contextlib.contextmanager
def built(docs, **kw):
    with tempfile.TemporaryDirectory() as d:
        yield InfGramIndex.build([np.array(x, dtype=np.int64) for x in docs], Path(d) / "idx", vocab_size=VOCAB, progress=False, **kw)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("width", [2, 4])
@SETTINGS
@given(docs=corpus, queries=st.lists(query, min_size=1, max_size=6), tok=token)
def test_counts_and_probs_match_brute_force(width, docs, queries, tok):
    with built(docs, token_width=width) as idx:
        assert idx.token_width == width
        assert idx.n_tokens == sum(map(len, docs)) and idx.n_docs == len(docs)
        assert InfGramIndex(idx.path, count_separators=False).count([]) == ref_count(docs, [], separators=False)
        check_sorted(idx)
        idx.verify()
        for q in queries:
            assert idx.count(q) == ref_count(docs, q)
            c, n, p = ref_prob(docs, q, tok)
            got = idx.prob(q, tok)
            assert (got.context_count, got.count) == (c, n)
            assert (math.isnan(got.prob) and math.isnan(p)) or got.prob == pytest.approx(p, rel=1e-12)
            c, n, p, l = ref_infgram(docs, q, tok)
            got = idx.infgram_prob(q, tok)
            assert (got.context_count, got.count, got.suffix_len, got.effective_n) == (c, n, l, l + 1)
            assert got.prob == pytest.approx(p, rel=1e-12)
            prob, eff_n = got  # unpacks as (prob, effective_n)
            assert eff_n == l + 1
            dist, total = ref_ntd(docs, q)
            got = idx.next_token_distribution(q)
            assert got.context_count == total
            assert dict(zip(got.tokens.tolist(), got.counts.tolist())) == dist


@SETTINGS
@given(docs=corpus, seqs=st.lists(query, min_size=1, max_size=4), sharded=st.booleans(), threads=st.sampled_from([1, 2]))
def test_score_is_matching_statistics(docs, seqs, sharded, threads):
    # sharded: a memory budget so small that every shard holds about one document
    capacity = max(map(len, docs)) + 1  # positions: the longest document and its separator
    budget = capacity * (2 + 8 + 2) if sharded else None  # threads=1: (width + 8) + width bytes a position
    with built(docs, memory_budget=budget, threads=1) as idx:
        if sharded:
            assert idx.n_shards >= math.ceil((sum(map(len, docs)) + len(docs)) / capacity)
        scores = idx.score(seqs, threads=threads)
        assert len(scores) == len(seqs)
        for seq, s in zip(seqs, scores):
            assert s.match_len.shape == s.prob.shape == (len(seq),)
            for i in range(len(seq)):
                assert s.match_len[i] == ref_match_len(docs, seq, i)
                c, n, p, l = ref_infgram(docs, seq[:i], seq[i])
                assert (s.context_count[i], s.count[i], s.effective_n[i]) == (c, n, l + 1)
                assert s.prob[i] == pytest.approx(p, rel=1e-12)


def test_sharded_index_adds_shards_up(tmp_path):
    rng = np.random.default_rng(3)
    docs = [rng.integers(0, 4, size=rng.integers(1, 40)) for _ in range(60)]
    one = InfGramIndex.build(docs, tmp_path / "one", progress=False)
    many = InfGramIndex.build(docs, tmp_path / "many", memory_budget=50 * 22, threads=2, progress=False)
    assert one.n_shards == 1 and many.n_shards > 5
    check_sorted(many)
    many.verify()
    for n in range(0, 6):
        for q in [list(rng.integers(0, 4, size=n)) for _ in range(10)]:
            assert many.count(q) == one.count(q) == ref_count(docs, q)
            assert many.infgram_prob(q, 1) == one.infgram_prob(q, 1)
    seq = rng.integers(0, 4, size=300)
    a, b = one.score([seq])[0], many.score([seq])[0]
    assert np.array_equal(a.match_len, b.match_len) and np.array_equal(a.prob, b.prob)


def test_document_boundaries_are_not_crossed(tmp_path):
    idx = InfGramIndex.build([np.array([1, 2]), np.array([3, 4])], tmp_path / "i", progress=False)
    assert idx.count([2, 3]) == 0 and idx.count([1, 2]) == 1
    # the only [2] ends a document: no next token, so the n-gram probability is 0, not NaN
    assert idx.prob([2], 3).prob == 0.0 and idx.next_token_distribution([2]).tokens.size == 0
    s = idx.score([[1, 2, 3, 4]])[0]
    assert s.match_len.tolist() == [1, 2, 1, 2]


def test_inputs_npy_2d_and_doc_lengths(tmp_path):
    flat = np.array([0, 1, 2, 0, 1, 2, 2], dtype=np.int32)
    np.save(tmp_path / "c.npy", flat)
    a = InfGramIndex.build(tmp_path / "c.npy", tmp_path / "a", doc_lengths=[3, 4], progress=False)
    b = InfGramIndex.build([flat[:3], flat[3:]], tmp_path / "b", progress=False)
    c = InfGramIndex.build(np.array([[0, 1, 2], [0, 1, 2]]), tmp_path / "c", progress=False)
    assert a.n_docs == b.n_docs == 2 and a.count([2, 0]) == b.count([2, 0]) == 0
    assert a.count([0, 1, 2]) == 2 and c.count([0, 1, 2]) == 2 and c.n_docs == 2
    assert a.vocab_size == 3 and a.token_width == 2


def test_32_bit_ids(tmp_path):
    big = 1_000_000
    docs = [np.array([big - 1, 5, big - 1, 70000]), np.array([70000, 5, big - 1])]
    idx = InfGramIndex.build(docs, tmp_path / "i", vocab_size=big, progress=False)
    assert idx.token_width == 4
    check_sorted(idx)
    assert idx.count([big - 1]) == 3 and idx.count([5, big - 1]) == 2
    assert idx.infgram_prob([0, 5], big - 1).effective_n == 2
    with pytest.raises(ValueError, match=f"token id {big}"):
        idx.count([big])


def test_text_corpus_with_a_local_tokenizer(tmp_path, tiny_tokenizer):
    tok_dir, texts = tiny_tokenizer
    corpus = tmp_path / "corpus dir"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n".join(texts[:20]) + "\n")
    (corpus / "b.jsonl").write_text("\n".join('{"text": "%s"}' % t for t in texts[20:30]) + "\n")
    idx = InfGramIndex.build(corpus, tmp_path / "idx", tokenizer=tok_dir, progress=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    docs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[:30]]
    assert idx.n_docs == 30 and idx.vocab_size == len(tok)
    assert idx.n_tokens == sum(map(len, docs))
    q = docs[3][:3]
    assert idx.count(q) == ref_count(docs, q)


# ---------------------------------------------------------------------------------------
# infini-gram's layout, written here (any width), and infini-gram's own engine and indexer
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [2, 4])
def test_reads_infini_gram_layout(tmp_path, width):
    rng = np.random.default_rng(width)
    words = np.array([1, 256, 257, 513, 65534] if width == 2 else [1, 256, 65536, 16777216, 4000000000])
    docs = [words[rng.integers(0, 5, size=rng.integers(1, 60))] for _ in range(25)]
    write_infini_gram_layout(docs, tmp_path / "ig table dir", width)
    ig = InfGramIndex(tmp_path / "ig table dir")
    assert ig.info["format"] == "infini-gram" and ig.token_width == width
    assert ig.n_docs == 25 and ig.n_tokens == sum(map(len, docs))
    ig.verify()
    for _ in range(40):
        q = list(words[rng.integers(0, 5, size=rng.integers(0, 7))])
        assert ig.count(q) == ref_count(docs, q)
        t = int(words[rng.integers(0, 5)])
        got = ig.infgram_prob(q, t)
        assert (got.context_count, got.count, got.prob, got.suffix_len) == pytest.approx(ref_infgram(docs, q, t))
        dist, total = ref_ntd(docs, q)
        got = ig.next_token_distribution(q)
        assert dict(zip(got.tokens.tolist(), got.counts.tolist())) == dist and got.context_count == total
    seq = words[rng.integers(0, 5, size=80)]
    s = ig.score([seq])[0]
    assert [s.match_len[i] for i in range(80)] == [ref_match_len(docs, seq, i) for i in range(80)]


def test_reads_sharded_infini_gram_layout(tmp_path):
    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 4, size=rng.integers(1, 50)) * 300 for _ in range(30)]
    for s, part in enumerate((docs[:10], docs[10:25], docs[25:])):
        write_infini_gram_layout(part, tmp_path / "ig", 2, shard=s)
    ig = InfGramIndex(tmp_path / "ig", format="infini-gram", vocab_size=1000)
    assert ig.n_shards == 3 and ig.n_docs == 30 and ig.vocab_size == 1000
    for _ in range(30):
        q = [int(x) * 300 for x in rng.integers(0, 4, size=rng.integers(0, 6))]
        assert ig.count(q) == ref_count(docs, q)
        got, (c, n, p, l) = ig.infgram_prob(q, 300), ref_infgram(docs, q, 300)
        assert (got.context_count, got.count, got.suffix_len) == (c, n, l) and got.prob == pytest.approx(p, rel=1e-12)


def _infini_gram_build(docs, out: Path, shards: int = 1) -> None:
    """Index with infini-gram's own indexer (its Rust suffix-array builder), on our token ids;
    with ``shards`` > 1, document d goes to shard d mod ``shards`` (its tokenizer step
    would split a corpus by files; this writes what that step writes)."""
    indexing = pytest.importorskip("infini_gram.indexing", reason="infini-gram is not installed (pip install infini-gram)")
    out.mkdir(parents=True)
    for s in range(shards):
        with open(out / f"tokenized.{s}", "wb") as f, open(out / f"offset.{s}", "wb") as g:
            off = 0
            for d in docs[s::shards]:
                b = b"\xff\xff" + np.asarray(d, dtype="<u2").tobytes()
                g.write(np.array([off], dtype="<u8").tobytes())
                f.write(b)
                off += len(b)
    args = argparse.Namespace(save_dir=str(out), temp_dir=str(out), worker_id=0, shards=shards, workers=1, mem=1, cpus=1,
                              token_width=2)
    cwd = os.getcwd()
    try:  # build_sa changes directory to run its binary
        with contextlib.redirect_stdout(io.StringIO()):
            indexing.build_sa(args)
    finally:
        os.chdir(cwd)


def test_agrees_with_infini_gram(tmp_path):
    engine_mod = pytest.importorskip("infini_gram.engine", reason="infini-gram is not installed (pip install infini-gram)")
    rng = np.random.default_rng(11)
    words = np.array([2, 256, 300, 513, 1027, 40000])
    # infini-gram's indexer needs a corpus larger than its 100 kB part overlap to stay sane
    docs = [words[rng.integers(0, 6, size=rng.integers(20, 800))] for _ in range(150)]
    _infini_gram_build(docs, tmp_path / "ig")
    ig = engine_mod.InfiniGramEngine(index_dir=str(tmp_path / "ig"), eos_token_id=2)
    ours = InfGramIndex.build(docs, tmp_path / "fs", progress=False)
    theirs = InfGramIndex(tmp_path / "ig")  # infini-gram's files, read by fastspec
    tokens_only = InfGramIndex(tmp_path / "fs", count_separators=False)
    n_docs = len(docs)
    assert ours.count([]) == theirs.count([]) == ig.count([])["count"] == tokens_only.count([]) + n_docs
    for _ in range(150):
        q = [int(x) for x in words[rng.integers(0, 6, size=rng.integers(1, 10))]]
        assert ours.count(q) == theirs.count(q) == ig.count(q)["count"]
        ctx = [int(x) for x in words[rng.integers(0, 6, size=rng.integers(0, 25))]]
        t = int(words[rng.integers(0, 6)])
        want = ig.infgram_prob(ctx, t)
        for idx in (ours, theirs):
            got = idx.infgram_prob(ctx, t)
            assert got.suffix_len == want["suffix_len"] and got.count == want["cont_cnt"]
            assert got.context_count == want["prompt_cnt"]  # the empty context included (separators)
            assert got.prob == pytest.approx(want["prob"], rel=1e-12)
        alone = tokens_only.infgram_prob(ctx, t)  # the documented option: tokens alone
        assert alone.context_count + (n_docs if alone.suffix_len == 0 else 0) == want["prompt_cnt"]
    seq = [int(x) for x in words[rng.integers(0, 6, size=200)]]
    s = ours.score([seq])[0]
    for i in range(1, 200):
        want = ig.infgram_prob(seq[:i], seq[i])
        assert s.effective_n[i] == want["suffix_len"] + 1 and s.count[i] == want["cont_cnt"]
        assert s.prob[i] == pytest.approx(want["prob"], rel=1e-12)


def test_two_shards_agree_with_infini_gram(tmp_path):
    """A 2-shard index built by infini-gram's indexer opens and answers as infini-gram's engine
    does, and as fastspec's index of the same corpus built as two shards apart and combined."""
    engine_mod = pytest.importorskip("infini_gram.engine", reason="infini-gram is not installed (pip install infini-gram)")
    rng = np.random.default_rng(12)
    words = np.array([2, 256, 300, 513, 1027, 40000])
    docs = [words[rng.integers(0, 6, size=rng.integers(20, 800))] for _ in range(300)]
    _infini_gram_build(docs, tmp_path / "ig", shards=2)
    ig = engine_mod.InfiniGramEngine(index_dir=str(tmp_path / "ig"), eos_token_id=2)
    theirs = InfGramIndex(tmp_path / "ig")
    parts = [InfGramIndex.build(docs, tmp_path / f"part{i}", shard=(i, 2), progress=False).path for i in range(2)]
    ours = InfGramIndex.combine(tmp_path / "fs", parts)
    assert theirs.n_shards == 2 and theirs.n_docs == ours.n_docs == len(docs)
    assert ours.count([]) == theirs.count([]) == ig.count([])["count"]
    for _ in range(100):
        q = [int(x) for x in words[rng.integers(0, 6, size=rng.integers(1, 10))]]
        assert ours.count(q) == theirs.count(q) == ig.count(q)["count"]
        ctx = [int(x) for x in words[rng.integers(0, 6, size=rng.integers(0, 25))]]
        t = int(words[rng.integers(0, 6)])
        want = ig.infgram_prob(ctx, t)
        for idx in (ours, theirs):
            got = idx.infgram_prob(ctx, t)
            assert (got.suffix_len, got.count, got.context_count) == (want["suffix_len"], want["cont_cnt"],
                                                                      want["prompt_cnt"])
            assert got.prob == pytest.approx(want["prob"], rel=1e-12)
    assert theirs.verify() == {"checksums": None, "structure": True}


# ---------------------------------------------------------------------------------------
# Errors: each a precise exception naming the file or the value
# ---------------------------------------------------------------------------------------


@pytest.fixture
def small_index(tmp_path):
    d = tmp_path / "odd dir (1) & 'x' é table"
    InfGramIndex.build([np.array([0, 1, 2, 1, 2]), np.array([2, 2])], d, progress=False)
    return d


def test_odd_path_works(small_index):
    assert InfGramIndex(small_index).count([1, 2]) == 2


def test_query_errors(small_index):
    idx = InfGramIndex(small_index)
    with pytest.raises(ValueError, match=r"token id 3 at position 1 is outside \[0, 3\)"):
        idx.count([1, 3])
    with pytest.raises(ValueError, match="token id -1"):
        idx.prob([0], -1)
    with pytest.raises(TypeError, match="integer"):
        idx.count([1.5])
    with pytest.raises(ValueError, match="1-D"):
        idx.count([[1]])
    with pytest.raises(ValueError, match=r"sequences\[1\]: token id 9 at position 1"):
        idx.score([[0, 1], [0, 9]])
    assert math.isnan(idx.prob([0, 0], 1).prob)  # an unseen context: NaN, not 0


def test_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="empty corpus"):
        InfGramIndex.build([np.array([], dtype=np.int64)], tmp_path / "a", vocab_size=4, progress=False)
    with pytest.raises(ValueError, match="empty corpus"):
        InfGramIndex.build([], tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="1 token"):
        InfGramIndex.build([np.array([3])], tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").glob("tokens.*"))
    with pytest.raises(ValueError, match=r"document 1, position 2: token id 9 is outside \[0, 5\)"):
        InfGramIndex.build([np.array([1, 2]), np.array([1, 2, 9])], tmp_path / "d", vocab_size=5, progress=False)
    with pytest.raises(ValueError, match="vocab_size 70000 does not fit 2-byte"):
        InfGramIndex.build([np.array([1, 2])], tmp_path / "e", vocab_size=70000, token_width=2, progress=False)
    with pytest.raises(ValueError, match="document 0 has 10 tokens"):
        InfGramIndex.build([np.arange(10)], tmp_path / "f", memory_budget=100, threads=1, progress=False)
    with pytest.raises(TypeError, match="float"):
        InfGramIndex.build(np.array([1.0, 2.0]), tmp_path / "g", progress=False)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        InfGramIndex.build(tmp_path / "nope.npy", tmp_path / "h", progress=False)
    with pytest.raises(ValueError, match="tokenizer="):
        (tmp_path / "t.txt").write_text("hello\n")
        InfGramIndex.build(tmp_path / "t.txt", tmp_path / "i", progress=False)
    InfGramIndex.build([np.array([1, 2])], tmp_path / "j", progress=False)
    with pytest.raises(FileExistsError, match="already holds an index"):
        InfGramIndex.build([np.array([1, 2])], tmp_path / "j", progress=False)
    assert InfGramIndex.build([np.array([1, 2, 1])], tmp_path / "j", progress=False, overwrite=True).count([1]) == 2


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda d: (d / "tokens.0").write_bytes((d / "tokens.0").read_bytes()[:-2]), r"tokens\.0.*truncated"),
        (lambda d: (d / "suffix_array.0").write_bytes((d / "suffix_array.0").read_bytes()[:30]), r"suffix_array\.0.*truncated"),
        (lambda d: (d / "suffix_array.0").write_bytes((d / "suffix_array.0").read_bytes() + b"\0"), r"suffix_array\.0.*trailing"),
        (lambda d: _patch(d / "tokens.0", 0, b"XXXX"), r"tokens\.0: not a fastspec index file"),
        (lambda d: _patch(d / "tokens.0", 8, struct.pack("<I", 99)), r"tokens\.0: index format version 99"),
        (lambda d: _patch(d / "suffix_array.0", 16, struct.pack("<I", 4)), r"suffix_array\.0: token width 4 does not match 2"),
        (lambda d: _patch(d / "tokens.0", 52, struct.pack("<I", 0)), r"tokens\.0: the index build did not finish"),
        (lambda d: _patch(d / "tokens.0", 52, struct.pack("<I", 2)), r"suffix_array\.0: shard count 1 does not match 2"),
        (lambda d: (d / "suffix_array.0").unlink(), r"suffix_array\.0: cannot open"),
    ],
)
def test_corrupt_index_files(small_index, damage, match):
    damage(small_index)
    with pytest.raises((ValueError, OSError), match=match):
        InfGramIndex(small_index)


@pytest.mark.parametrize("name", ["tokens.0", "suffix_array.0"])
def test_every_header_byte_damaged(small_index, name):
    """Each byte of a header set to 0x00, 0x01, 0x80 or 0xFF: the index opens and answers (a byte
    that does not matter, or the same value) or fails with an error naming the file; the
    answers of an index that opens are checked by verify()."""
    path = small_index / name
    clean = path.read_bytes()
    for at in range(64):
        for value in (0x00, 0x01, 0x80, 0xFF):
            damaged = bytearray(clean)
            damaged[at] = value
            path.write_bytes(bytes(damaged))
            try:
                idx = InfGramIndex(small_index)
                idx.verify()
                assert idx.count([1, 2]) == 2  # whatever opened and verified still counts right
            except (ValueError, OSError) as err:
                assert str(small_index) in str(err)
    path.write_bytes(clean)


def test_corrupt_suffix_array_entry_is_an_error_not_a_crash(small_index):
    _patch(small_index / "suffix_array.0", 64 + 4 * 3, struct.pack("<I", 10**6))
    idx = InfGramIndex(small_index)  # header-level checks pass; the entry is caught when read
    with pytest.raises(ValueError, match=r"suffix_array\.0: suffix array entry \d+ holds 1000000"):
        for q in ([0], [1], [2], [1, 2], [2, 2]):
            idx.count(q)
        idx.verify()
    _patch(small_index / "suffix_array.0", 64 + 4 * 3, struct.pack("<I", 0))
    with pytest.raises(ValueError, match=r"suffix_array\.0: damaged: its BLAKE2b checksum differs"):
        InfGramIndex(small_index).verify()
    write_checksums(small_index)  # checksums that match the damage: the structural check still finds it
    with pytest.raises(ValueError, match=r"suffix_array\.0: position 0 appears twice"):
        InfGramIndex(small_index).verify()


@pytest.mark.parametrize("name", ["tokens.0", "suffix_array.0"])
def test_any_flipped_data_byte_is_found_by_index_verify(tmp_path, name, capsys):
    """One flipped byte past the header can give wrong counts with no error on opening; the
    build-time checksums find every one, and the CLI exits 2 naming the file."""
    from fastspec.cli import main

    d = tmp_path / "idx"
    rng = np.random.default_rng(5)
    InfGramIndex.build([rng.integers(0, 50, 300) for _ in range(4)], d, vocab_size=50, progress=False)
    assert main(["index", "verify", str(d)]) == 0
    capsys.readouterr()
    path = d / name
    clean = path.read_bytes()
    for at in rng.choice(np.arange(64, len(clean)), size=20, replace=False):
        damaged = bytearray(clean)
        damaged[at] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(damaged))
        assert main(["index", "verify", str(d)]) == 2
        assert f"{path}: damaged" in capsys.readouterr().err
    path.write_bytes(clean)
    assert main(["index", "verify", str(d)]) == 0
    assert "2 files match their build-time checksums; structure verified" in capsys.readouterr().out


def test_infini_gram_layout_errors(tmp_path):
    docs = [np.array([1, 2, 3, 1, 2])] * 3
    d = tmp_path / "ig"
    write_infini_gram_layout(docs, d, 2)
    with pytest.raises(ValueError, match=r"table\.0: .*token width mismatch"):
        InfGramIndex(d, token_width=4)
    with pytest.raises(ValueError, match=r"vocab_size 3 .*|token id 3"):
        InfGramIndex(d, vocab_size=3).count([3])
    (d / "table.0").write_bytes((d / "table.0").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"table\.0: cannot infer the token width.*truncated"):
        InfGramIndex(d)
    with pytest.raises(OSError, match="not an index directory"):
        InfGramIndex(tmp_path / "missing")
    with pytest.raises(ValueError, match="format must be"):
        InfGramIndex(d, format="v7")


def test_a_list_of_text_files_is_one_corpus(tmp_path, tiny_tokenizer):
    tok_dir, texts = tiny_tokenizer
    (tmp_path / "a.txt").write_text("\n".join(texts[:6]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts[6:10]) + "\n")
    both = InfGramIndex.build([tmp_path / "a.txt", str(tmp_path / "b.jsonl")], tmp_path / "both", tokenizer=str(tok_dir),
                              progress=False)
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "a.txt").write_text((tmp_path / "a.txt").read_text())
    (tmp_path / "ab" / "b.jsonl").write_text((tmp_path / "b.jsonl").read_text())
    one = InfGramIndex.build(tmp_path / "ab", tmp_path / "one", tokenizer=str(tok_dir), progress=False)
    assert (both.n_docs, both.n_tokens) == (one.n_docs, one.n_tokens) == (10, one.n_tokens)
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        InfGramIndex.build([tmp_path / "a.txt", tmp_path / "nowhere.txt"], tmp_path / "x", tokenizer=str(tok_dir),
                           progress=False)


def test_cli_index_build_count_prob(tmp_path, capsys, tiny_tokenizer):
    from fastspec.cli import main

    np.save(tmp_path / "c.npy", np.array([0, 1, 2, 0, 1, 3], dtype=np.uint16))
    out = tmp_path / "my index"
    assert main(["index", "build", str(tmp_path / "c.npy"), str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["n_tokens"] == 6
    assert main(["index", "count", str(out), "0", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 2
    ig = tmp_path / "ig"
    write_infini_gram_layout([np.array([0, 1, 2, 0, 1, 3], dtype=np.int64)], ig, 2)
    assert main(["index", "count", str(ig), "0", "--token-width", "2", "1"]) == 0  # ids on both sides of an option
    assert json.loads(capsys.readouterr().out) == {"ids": [0, 1], "count": 2}
    with pytest.raises(SystemExit):
        main(["index", "count", str(ig), "0", "--token-width", "2", "x"])
    capsys.readouterr()
    assert main(["index", "build", str(tmp_path / "c.npy"), str(out), "--quiet"]) == 2
    assert "already holds an index (tokens.0); pass --overwrite to replace it" in capsys.readouterr().err
    np.save(tmp_path / "lengths.npy", np.array([2, 4]))
    assert main(["index", "build", str(tmp_path / "c.npy"), str(tmp_path / "split"), "--doc-lengths",
                 str(tmp_path / "lengths.npy"), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["n_docs"] == 2
    assert main(["index", "prob", str(out), "--context", "2", "0", "--token", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["prob"] == 1.0 and got["effective_n"] == 3 and got["infgram_prob"] == 1.0
    assert main(["index", "prob", str(out), "--context", "3", "3", "--token", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["prob"] is None and got["effective_n"] == 2  # unseen context: null n-gram prob, ∞-gram backs off
    # text corpus and text queries through a local tokenizer
    tok_dir, texts = tiny_tokenizer
    (tmp_path / "t.txt").write_text("\n".join(texts[:10]) + "\n")
    assert main(["index", "build", str(tmp_path / "t.txt"), str(tmp_path / "ti"), "--tokenizer", str(tok_dir), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["index", "count", str(tmp_path / "ti"), "--text", texts[0], "--tokenizer", str(tok_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["count"] >= 1
    # errors: exit 2, a message naming the file or the value
    assert main(["index", "count", str(out), "7"]) == 2
    assert "token id 7" in capsys.readouterr().err
    assert main(["index", "count", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (out / "tokens.0").write_bytes(b"junk")
    assert main(["index", "count", str(out), "1"]) == 2
    assert "tokens.0: truncated" in capsys.readouterr().err
    assert main(["index", "build", str(tmp_path / "missing.npy"), str(tmp_path / "x"), "--quiet"]) == 2
    assert "missing.npy" in capsys.readouterr().err
    assert main(["index", "count", str(tmp_path / "ti"), "--text", "cat"]) == 2
    assert "--text needs --tokenizer" in capsys.readouterr().err


def test_backends_report_the_engine():
    info = fastspec.backends()["infgram"]
    assert info["available"] and "SA-IS" in info["detail"]
