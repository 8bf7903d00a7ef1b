"""fastspec's ∞-gram engine beside infini-gram (pip ``infini-gram``), same token ids, same run.

Corpus: this machine's Python sources, one document per file, tokenised by a byte-level BPE
(16-bit ids) and by a word-level vocabulary (32-bit index); see ``_infgram_bench.py``. Every
100th file is held out and supplies the queries. Per width (benchmark groups):

- ``build``: fastspec ``InfGramIndex.build`` (tokens .npy → index, SA-IS, ``threads=2``) against
  infini-gram's suffix-array step (``indexing.build_sa``, its Rust make-part/merge/concat, 2
  cpus) on its ``tokenized.0`` of the same ids. Peak memory of each, in a fresh process, in
  ``extra_info`` (the process tree sampled every 5 ms, above its footprint before the build).
  infini-gram's 32-bit build fails on this machine (it asks for 32 GiB): that benchmark
  records the failure (``extra_info["error"]``) and the time it took to fail.
- ``count``: 1,000 n-grams (n = 1..5) from held-out text, one call each.
- ``infgram_prob``: 300 (context of 32 tokens, next token) pairs from held-out text.
- ``score``: every position of the held-out documents: fastspec ``score`` in one call on one
  thread (``tokens_per_s``), against infini-gram's ``infgram_prob`` called once per position
  with the whole preceding document (on the first 1,000 positions: it is slow).

Every benchmark checks its answers against the other engine's (a wrong answer fails it). No
time is asserted. Sizes: ~2.5M tokens by default (CI); ``FASTSPEC_BENCH_FULL=1``: ~30M.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install '.[test]')")
pytest.importorskip("tokenizers", reason="the benchmark corpus is tokenised with the tokenizers library")


def _load() -> Any:
    name = "fastspec_infgram_bench"
    if name not in sys.modules:
        path = Path(__file__).with_name("_infgram_bench.py")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


B = _load()
FULL = os.environ.get("FASTSPEC_BENCH_FULL", "") == "1"
SIZE = "full" if FULL else "small"
KINDS = {2: "bpe16", 4: "word32"}
SCORE_IG_POSITIONS = 1000

try:
    import infini_gram.engine  # noqa: F401

    NO_IG = ""
except ImportError as err:
    NO_IG = f"infini-gram is not importable ({err}); pip install infini-gram"
IG_U32 = "infini-gram cannot build 32-bit indexes here (its make-part asks for 32 GiB); see the build benchmark"


def _param(engine: str, width: int) -> Any:
    marks = []
    if engine == "infini_gram":
        marks.append(pytest.mark.skipif(bool(NO_IG), reason=NO_IG or "-"))
    return pytest.param(engine, width, id=f"{engine}-{8 * width}bit", marks=marks)


def _query_param(engine: str, width: int) -> Any:
    p = _param(engine, width)
    if engine == "infini_gram" and width == 4:
        return pytest.param(engine, width, id=p.id, marks=[pytest.mark.skip(reason=IG_U32)])
    return p


BUILD = [_param(e, w) for w in (2, 4) for e in ("fastspec", "infini_gram")]
QUERY = [_query_param(e, w) for w in (2, 4) for e in ("fastspec", "infini_gram")]


def _rounds() -> int:
    override = os.environ.get("FASTSPEC_BENCH_ROUNDS")
    return max(1, int(override)) if override else (1 if FULL else 3)


@pytest.fixture(scope="session")
def corpora() -> dict[int, Path]:
    return {w: B.corpus(KINDS[w], SIZE) for w in (2, 4)}


@pytest.fixture(scope="session")
def indexes(corpora, tmp_path_factory) -> dict[tuple[str, int], Any]:
    """Both engines' indexes of each corpus, built once for the query benchmarks."""
    root = tmp_path_factory.mktemp("infgram-bench")
    out: dict[tuple[str, int], Any] = {}
    for w, c in corpora.items():
        out["fastspec", w] = B.build_fastspec(c, root / f"fastspec-{w}")
        if not NO_IG and w == 2:
            from infini_gram.engine import InfiniGramEngine

            d = root / f"infini_gram-{w}"
            B.write_infini_gram_input(c, d)
            B.build_infini_gram(d, w)
            out["infini_gram", w] = InfiniGramEngine(index_dir=str(d), eos_token_id=0, vocab_size=65535, token_dtype="u16")
    return out


@pytest.fixture(scope="session")
def heldout(corpora) -> dict[int, list[np.ndarray]]:
    out = {}
    for w, c in corpora.items():
        flat = np.load(c / "heldout.npy")
        lengths = np.load(c / "heldout_lengths.npy")
        out[w] = [s for s in np.split(flat, np.cumsum(lengths)[:-1]) if s.size >= 2]
    return out


def _info(benchmark: Any, **kw: Any) -> None:
    benchmark.extra_info.update(machine_cpus=os.cpu_count(), size=SIZE, **kw)


# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------


def _probe(engine: str, corpus_dir: Path, out: Path) -> dict[str, Any]:
    """Build once in a fresh process: wall time, peak memory, and the error if it failed."""
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("_infgram_bench.py")), "probe", engine,
                           str(corpus_dir), str(out)], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"probe {engine} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("engine, width", BUILD)
def test_build(benchmark, engine, width, corpora, tmp_path):
    c = corpora[width]
    m = B.meta(c)
    _info(benchmark, engine=engine, kind="build", token_width=width, n_tokens=m["n_tokens"], n_docs=m["n_docs"],
          vocab_size=m["vocab_size"], max_id=m["max_id"])
    if benchmark.disabled:
        return
    probe = _probe(engine, c, tmp_path / "probe")
    benchmark.extra_info.update({f"probe_{k}": v for k, v in probe.items()})
    if engine == "fastspec":
        out = tmp_path / "fs"
        idx = benchmark.pedantic(B.build_fastspec, args=(c, out), rounds=_rounds(), iterations=1)
        assert idx.n_tokens == m["n_tokens"] and idx.n_docs == m["n_docs"] and idx.token_width == width
        assert probe["error"] is None, probe["error"]
    elif probe["error"] is not None:
        # infini-gram failed in the probe (its 32-bit build): time that failure once, record it.
        assert width == 4, f"infini-gram's {8 * width}-bit build failed: {probe['error']}"
        benchmark.extra_info["error"] = probe["error"]
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    else:
        d = tmp_path / "ig"
        B.write_infini_gram_input(c, d)
        benchmark.pedantic(B.build_infini_gram, args=(d, width), rounds=_rounds(), iterations=1)
        ptr = int(np.ceil(np.log2((d / "tokenized.0").stat().st_size) / 8))
        assert (d / "table.0").stat().st_size == (m["n_tokens"] + m["n_docs"]) * ptr


# ---------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------


def _ngrams(seqs: list[np.ndarray], k: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < k:
        s = seqs[rng.integers(len(seqs))]
        n = int(rng.integers(1, 6))
        if s.size > n:
            i = int(rng.integers(0, s.size - n))
            out.append([int(x) for x in s[i:i + n]])
    return out


def _contexts(seqs: list[np.ndarray], k: int, ctx: int, seed: int) -> list[tuple[list[int], int]]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < k:
        s = seqs[rng.integers(len(seqs))]
        if s.size > ctx + 1:
            i = int(rng.integers(ctx, s.size))
            out.append(([int(x) for x in s[i - ctx:i]], int(s[i])))
    return out


def _reference(indexes: Any, width: int) -> Any:
    return indexes.get(("infini_gram", width))


@pytest.mark.parametrize("engine, width", QUERY)
def test_count(benchmark, engine, width, indexes, heldout):
    queries = _ngrams(heldout[width], 1000, seed=1)
    _info(benchmark, engine=engine, kind="count", token_width=width, queries=len(queries))
    if engine == "fastspec":
        idx = indexes["fastspec", width]
        run = lambda: [idx.count(q) for q in queries]  # noqa: E731
    else:
        ig = indexes["infini_gram", width]
        run = lambda: [ig.count(q)["count"] for q in queries]  # noqa: E731
    got = benchmark.pedantic(run, rounds=_rounds(), warmup_rounds=1, iterations=1)
    ref = _reference(indexes, width)
    if ref is not None:
        assert got == [ref.count(q)["count"] for q in queries]
    benchmark.extra_info["per_query_us"] = benchmark.stats.stats.median / len(queries) * 1e6 if benchmark.stats else None
    benchmark.extra_info["mean_count"] = float(np.mean(got))


@pytest.mark.parametrize("engine, width", QUERY)
def test_infgram_prob(benchmark, engine, width, indexes, heldout):
    pairs = _contexts(heldout[width], 300, ctx=32, seed=2)
    _info(benchmark, engine=engine, kind="infgram_prob", token_width=width, queries=len(pairs), context=32)
    if engine == "fastspec":
        idx = indexes["fastspec", width]
        run = lambda: [(r.prob, r.suffix_len) for r in (idx.infgram_prob(c, t) for c, t in pairs)]  # noqa: E731
    else:
        ig = indexes["infini_gram", width]
        run = lambda: [(r["prob"], r["suffix_len"]) for r in (ig.infgram_prob(c, t) for c, t in pairs)]  # noqa: E731
    got = benchmark.pedantic(run, rounds=_rounds(), warmup_rounds=1, iterations=1)
    ref = _reference(indexes, width)
    if ref is not None:
        want = [ig_r for ig_r in ((r["prob"], r["suffix_len"]) for r in (ref.infgram_prob(c, t) for c, t in pairs))]
        assert [g[1] for g in got] == [w[1] for w in want]
        assert all(abs(g[0] - w[0]) <= 1e-12 * max(abs(w[0]), 1e-300) for g, w in zip(got, want))
    benchmark.extra_info["per_query_us"] = benchmark.stats.stats.median / len(pairs) * 1e6 if benchmark.stats else None
    benchmark.extra_info["mean_effective_n"] = float(np.mean([g[1] for g in got]) + 1)


@pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
@pytest.mark.parametrize("width", [2, 4], ids=["16bit", "32bit"])
def test_score_fastspec(benchmark, width, threads, indexes, heldout):
    idx = indexes["fastspec", width]
    seqs = heldout[width]
    n = int(sum(s.size for s in seqs))
    _info(benchmark, engine="fastspec", kind="score", token_width=width, tokens=n, threads=threads)
    scores = benchmark.pedantic(idx.score, args=(seqs,), kwargs={"threads": threads}, rounds=_rounds(), warmup_rounds=1, iterations=1)
    # spot check against fresh per-position queries
    s = scores[0]
    for i in range(0, min(seqs[0].size, 200), 7):
        r = idx.infgram_prob(seqs[0][:i], int(seqs[0][i]))
        assert (r.effective_n, r.prob) == (s.effective_n[i], s.prob[i])
    if benchmark.stats:
        benchmark.extra_info["tokens_per_s"] = n / benchmark.stats.stats.median
    benchmark.extra_info["mean_match_len"] = float(np.mean(np.concatenate([x.match_len for x in scores])))
    benchmark.extra_info["zero_prob_fraction"] = float(np.mean(np.concatenate([x.prob for x in scores]) == 0))


@pytest.mark.skipif(bool(NO_IG), reason=NO_IG or "-")
def test_score_infini_gram(benchmark, indexes, heldout):
    ig = indexes["infini_gram", 2]
    positions = []
    for s in heldout[2]:
        positions.extend((s, i) for i in range(s.size))
        if len(positions) >= SCORE_IG_POSITIONS:
            break
    positions = positions[:SCORE_IG_POSITIONS]
    _info(benchmark, engine="infini_gram", kind="score", token_width=2, tokens=len(positions), threads="engine's own")
    run = lambda: [ig.infgram_prob([int(x) for x in s[:i]], int(s[i])) for s, i in positions]  # noqa: E731
    got = benchmark.pedantic(run, rounds=1, iterations=1)
    ours = {}
    for s, i in positions:
        key = id(s)
        if key not in ours:
            ours[key] = indexes["fastspec", 2].score([s])[0]
        assert ours[key].effective_n[i] == got.pop(0)["suffix_len"] + 1
    if benchmark.stats:
        benchmark.extra_info["tokens_per_s"] = len(positions) / benchmark.stats.stats.median
