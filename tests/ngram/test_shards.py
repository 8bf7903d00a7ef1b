"""∞-gram shards built apart and combined (fastspec.ngram.shards; ``index build --shard I/N``
and ``index combine``): the combined index answers exactly as the index of the whole corpus
(and as brute force), is verified, and shards that do not fit together are refused, naming
the directory, before anything is moved."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fastspec import InfGramIndex
from fastspec.cli import main
from fastspec.ngram.ingest import DocumentSplit, load_tokenizer
from fastspec.ngram.memorization import infgram_scores

WORDS = np.array([3, 7, 300, 1000, 4000])


def corpus(n: int = 90, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [WORDS[rng.integers(0, len(WORDS), size=rng.integers(0, 60))] for _ in range(n)]


def brute_count(docs, q) -> int:
    if not q:
        return sum(len(d) + 1 for d in docs)  # tokens and separators, infini-gram's count([])
    n = len(q)
    return sum(sum(list(d[i:i + n]) == q for i in range(len(d) - n + 1)) for d in docs)


def build_shards(docs, root, count, **kw) -> list:
    # a small memory budget, so that each shard directory holds several shards of its own
    return [InfGramIndex.build(docs, root / f"part{i}", shard=f"{i}/{count}", vocab_size=5000, progress=False,
                               memory_budget=3000, **kw).path for i in range(count)]


def assert_same_answers(a: InfGramIndex, b: InfGramIndex, docs, rng) -> None:
    assert (a.n_docs, a.n_tokens, a.vocab_size, a.token_width) == (b.n_docs, b.n_tokens, b.vocab_size, b.token_width)
    for _ in range(60):
        q = [int(x) for x in WORDS[rng.integers(0, len(WORDS), size=rng.integers(0, 5))]]
        assert a.count(q) == b.count(q) == brute_count(docs, q)
        t = int(WORDS[rng.integers(0, len(WORDS))])
        assert a.infgram_prob(q, t) == b.infgram_prob(q, t)
        pa, pb = a.prob(q, t), b.prob(q, t)
        assert (pa.count, pa.context_count) == (pb.count, pb.context_count)
        na, nb = a.next_token_distribution(q), b.next_token_distribution(q)
        assert na.tokens.tolist() == nb.tokens.tolist() and na.counts.tolist() == nb.counts.tolist()
    seqs = [WORDS[rng.integers(0, len(WORDS), size=40)] for _ in range(6)]
    sa, sb = a.score(seqs), b.score(seqs)
    for x, y in zip(sa, sb):
        np.testing.assert_array_equal(x.match_len, y.match_len)
        np.testing.assert_array_equal(x.prob, y.prob)  # the same integer ratios: bit-equal
    for rule in ("wang", "all"):  # memorization scores of the outputs after a 10-token prompt
        np.testing.assert_array_equal(infgram_scores(a, seqs, [10] * 6, rule=rule),
                                      infgram_scores(b, seqs, [10] * 6, rule=rule))


def test_split_is_round_robin_and_counts_the_corpus():
    split = DocumentSplit.of("1/3")
    assert list(split.take(range(10), size=lambda _: 1)) == [1, 4, 7] and split.seen == 10
    other = DocumentSplit.of((2, 3))
    list(other.take(range(10), size=lambda _: 1))
    assert other.digest == split.digest
    for bad, match in (("3/3", r"shard='3/3'.*\[0, N\)"), ("1/0", "N >= 1"), ("1-3", "is not I/N"), ((1,), "not I/N")):
        with pytest.raises(ValueError, match=match):
            DocumentSplit.of(bad)


@pytest.mark.parametrize("copy", [False, True])
def test_combined_shards_answer_as_the_whole_corpus(tmp_path, copy):
    docs = corpus()
    whole = InfGramIndex.build(docs, tmp_path / "whole", vocab_size=5000, progress=False)
    parts = build_shards(docs, tmp_path, 3)
    manifest = json.loads((tmp_path / "part1" / "shard.json").read_text())
    assert (manifest["shard"], manifest["of"], manifest["corpus_documents"], manifest["n_docs"]) == (1, 3, 90, 30)
    assert InfGramIndex(parts[1]).n_docs == 30 and InfGramIndex(parts[1]).n_shards > 1
    combined = InfGramIndex.combine(tmp_path / "combined", reversed(parts), copy=copy)  # any order
    assert combined.n_shards > 3
    assert_same_answers(combined, whole, docs, np.random.default_rng(1))
    assert combined.verify() == {"checksums": 2 * combined.n_shards, "structure": True}
    # copy: the shards stay, whole and usable; move: their directories are gone
    assert all(os.path.isdir(p) for p in parts) == copy
    if copy:
        assert InfGramIndex(parts[0]).verify()["structure"]


def test_combine_refuses_shards_that_do_not_fit(tmp_path):
    docs = corpus(40)
    parts = build_shards(docs, tmp_path, 2)
    before = sorted(os.listdir(parts[0]))
    with pytest.raises(ValueError, match=r"shard\(s\) 1/2 missing: the directories given hold shards 0 of 2"):
        InfGramIndex.combine(tmp_path / "out", [parts[0]])
    with pytest.raises(ValueError, match=r"part0.* and .*part0.* are both shard 0/2"):
        InfGramIndex.combine(tmp_path / "out", [parts[0], parts[1], parts[0]])
    InfGramIndex.build(docs, tmp_path / "three", shard="1/3", vocab_size=5000, progress=False)
    with pytest.raises(ValueError, match=r"three: of is 3, but .*part0 has 2: only the shards of one split"):
        InfGramIndex.combine(tmp_path / "out", [parts[0], tmp_path / "three"])
    other = corpus(40, seed=1)  # another corpus of as many documents
    InfGramIndex.build(other, tmp_path / "other", shard="1/2", vocab_size=5000, progress=False)
    with pytest.raises(ValueError, match=r"other: corpus_digest is"):
        InfGramIndex.combine(tmp_path / "out", [parts[0], tmp_path / "other"])
    InfGramIndex.build(docs, tmp_path / "wide", shard="1/2", vocab_size=5000, token_width=4, progress=False)
    with pytest.raises(ValueError, match=r"wide: token_width is 4, but .*part0 has 2"):
        InfGramIndex.combine(tmp_path / "out", [parts[0], tmp_path / "wide"])
    InfGramIndex.build(docs, tmp_path / "plain", vocab_size=5000, progress=False)
    with pytest.raises(ValueError, match=r"plain: not a shard of a split corpus \(shard.json is missing"):
        InfGramIndex.combine(tmp_path / "out", [parts[0], tmp_path / "plain"])
    # a damaged file is found before anything moves
    damaged = os.path.join(parts[1], "suffix_array.0")
    with open(damaged, "r+b") as fh:
        fh.seek(70)
        byte = fh.read(1)
        fh.seek(70)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ValueError, match=r"part1/suffix_array.0: damaged"):
        InfGramIndex.combine(tmp_path / "out", parts)
    assert sorted(os.listdir(parts[0])) == before and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="must go to a new directory"):
        InfGramIndex.combine(parts[0], parts)


def test_a_bad_document_is_named_by_its_place_in_the_corpus(tmp_path):
    docs = corpus(10)
    docs[7] = np.array([3, 9999])
    with pytest.raises(ValueError, match=r"document 7, position 1: token id 9999 is outside \[0, 5000\)"):
        InfGramIndex.build(docs, tmp_path / "s", shard="1/3", vocab_size=5000, progress=False)


def test_a_shard_without_documents_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"shard 3/4 holds 0 document\(s\) and 0 token\(s\) of the corpus's 3 "
                                         r"documents.*fewer shards"):
        InfGramIndex.build(corpus(3), tmp_path / "s", shard="3/4", vocab_size=5000, progress=False)
    assert not (tmp_path / "s").exists()


def test_text_shards_tokenise_their_own_documents(tmp_path, tiny_tokenizer):
    tok_dir, texts = tiny_tokenizer
    lines = texts[:40]
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(lines) + "\n")
    whole = InfGramIndex.build(text, tmp_path / "whole", tokenizer=tok_dir, progress=False)
    parts = [InfGramIndex.build(text, tmp_path / f"t{i}", tokenizer=tok_dir, shard=(i, 2), progress=False).path
             for i in range(2)]
    manifests = [json.loads((tmp_path / f"t{i}" / "shard.json").read_text()) for i in range(2)]
    assert manifests[0]["tokenizer"] == manifests[1]["tokenizer"] is not None
    assert [m["n_docs"] for m in manifests] == [20, 20] and manifests[0]["corpus_documents"] == 40
    combined = InfGramIndex.combine(tmp_path / "combined", parts)
    tok = load_tokenizer(tok_dir)
    ids = [np.asarray(x) for x in tok(lines, add_special_tokens=False)["input_ids"]]
    for doc in ids[:10]:
        q = doc[:3].tolist()
        assert combined.count(q) == whole.count(q) == brute_count(ids, q)
    assert combined.count([]) == whole.count([]) and combined.n_docs == 40


def test_cli_build_shards_combine_verify(tmp_path, capsys):
    docs = corpus(30)
    lengths = np.array([len(d) for d in docs])
    np.save(tmp_path / "tokens.npy", np.concatenate(docs).astype(np.int64))
    np.save(tmp_path / "lengths.npy", lengths)
    for i in range(2):
        assert main(["index", "build", str(tmp_path / "tokens.npy"), str(tmp_path / f"s{i}"), "--doc-lengths",
                     str(tmp_path / "lengths.npy"), "--vocab-size", "5000", "--shard", f"{i}/2", "--quiet"]) == 0
    assert main(["index", "combine", str(tmp_path / "idx"), str(tmp_path / "s1"), str(tmp_path / "s0")]) == 0
    capsys.readouterr()
    assert main(["index", "verify", str(tmp_path / "idx")]) == 0
    assert "files match their build-time checksums" in capsys.readouterr().out
    assert main(["index", "count", str(tmp_path / "idx"), "7", "300"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == brute_count(docs, [7, 300])
    assert main(["index", "build", str(tmp_path / "tokens.npy"), str(tmp_path / "bad"), "--shard", "2/2"]) == 2
    assert "--shard 2/2: the shard number I of I/N must be in [0, N)" in capsys.readouterr().err
    assert main(["index", "combine", str(tmp_path / "again"), str(tmp_path / "idx")]) == 2
    assert "not a shard of a split corpus" in capsys.readouterr().err
