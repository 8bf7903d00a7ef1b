"""Corpus, builders and the memory probe of ``test_bench_infgram.py``.

The corpus is the Python source this machine has (every ``.py`` file under the base
interpreter's library directory, in a fixed shuffled order, one document per file), tokenised
twice with tokenizers trained here on it: a byte-level BPE of 32,000 ids (16-bit index) and a
word-level vocabulary of 200,000 ids (32-bit index). Tokenised corpora are cached under
``.benchmarks/infgram/``. Every 100th file is held out (not indexed) for the query benchmarks.

    python benchmarks/_infgram_bench.py probe fastspec|infini_gram CORPUS_DIR OUT_DIR
prints the build's wall time and peak resident memory (the process tree, sampled every 5 ms,
above the footprint just before the build) as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import shutil
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent.parent / ".benchmarks" / "infgram"
SIZES = {"small": 8 << 20, "full": 100 << 20}  # bytes of source text
HOLDOUT_EVERY = 100


def source_root() -> Path:
    return Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "installed_base": sys.base_prefix})["stdlib"])


def source_files() -> list[Path]:
    root = source_root()
    files = sorted(p for p in root.rglob("*.py") if p.is_file())
    random.Random(0).shuffle(files)
    return files


def corpus(kind: str, size: str) -> Path:
    """Directory with tokens.npy, doc_lengths.npy, heldout.npy, heldout_lengths.npy, meta.json."""
    out = CACHE / f"{kind}-{size}"
    if (out / "meta.json").exists():
        return out
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts, held, total = [], [], 0
    for k, f in enumerate(source_files()):
        try:
            t = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not t.strip():
            continue
        (held if k % HOLDOUT_EVERY == 0 else texts).append(t)
        total += len(t)
        if total >= SIZES[size]:
            break
    sample = texts[: max(1, len(texts) // 8)]
    if kind == "bpe16":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=32000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    else:
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(vocab_size=200000, special_tokens=["[UNK]"], show_progress=False)
        sample = texts
    tok.train_from_iterator(sample, trainer)

    def encode(docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, lengths = [], []
        for start in range(0, len(docs), 256):
            for enc in tok.encode_batch(docs[start:start + 256]):
                ids.append(np.asarray(enc.ids, dtype=np.uint32))
                lengths.append(len(enc.ids))
        return np.concatenate(ids), np.asarray(lengths, dtype=np.int64)

    tokens, lengths = encode(texts)
    h_tokens, h_lengths = encode(held)
    out.mkdir(parents=True, exist_ok=True)
    width = 2 if kind == "bpe16" else 4
    dtype = np.uint16 if width == 2 else np.uint32
    np.save(out / "tokens.npy", tokens.astype(dtype))
    np.save(out / "doc_lengths.npy", lengths)
    np.save(out / "heldout.npy", h_tokens.astype(np.int64))
    np.save(out / "heldout_lengths.npy", h_lengths)
    vocab = tok.get_vocab_size()
    (out / "meta.json").write_text(json.dumps({
        "kind": kind, "size": size, "token_width": width, "vocab_size": vocab, "n_tokens": int(tokens.size),
        "n_docs": int(lengths.size), "max_id": int(tokens.max()), "text_bytes": total,
        "heldout_tokens": int(h_tokens.size), "source": f"*.py under {source_root()}",
    }))
    return out


def meta(corpus_dir: Path) -> dict[str, Any]:
    return json.loads((corpus_dir / "meta.json").read_text())


def write_infini_gram_input(corpus_dir: Path, out: Path) -> None:
    """infini-gram's tokenized.0 / offset.0 for the same token ids (its indexer's step 1 output)."""
    m = meta(corpus_dir)
    width = m["token_width"]
    tokens = np.load(corpus_dir / "tokens.npy", mmap_mode="r")
    lengths = np.load(corpus_dir / "doc_lengths.npy")
    sep = np.array([np.iinfo(tokens.dtype).max], dtype=tokens.dtype)
    out.mkdir(parents=True, exist_ok=True)
    offsets = (np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]) * width).astype("<u8")
    with open(out / "tokenized.0", "wb") as f:
        start = 0
        for n in lengths.tolist():
            f.write(sep.tobytes())
            f.write(np.ascontiguousarray(tokens[start:start + n]).astype(tokens.dtype.newbyteorder("<")).tobytes())
            start += n
    (out / "offset.0").write_bytes(offsets.tobytes())


def build_fastspec(corpus_dir: Path, out: Path, threads: int = 2) -> Any:
    import fastspec

    m = meta(corpus_dir)
    return fastspec.InfGramIndex.build(corpus_dir / "tokens.npy", out, doc_lengths=np.load(corpus_dir / "doc_lengths.npy"),
                                       vocab_size=m["vocab_size"], token_width=m["token_width"], threads=threads,
                                       progress=False, overwrite=True)


def build_infini_gram(index_dir: Path, token_width: int, cpus: int = 2, mem_gib: int = 8) -> None:
    """infini-gram's suffix-array step (its Rust make-part/merge/concat) on tokenized.0."""
    from infini_gram import indexing

    for name in ("table.0",):
        (index_dir / name).unlink(missing_ok=True)
    args = argparse.Namespace(save_dir=str(index_dir), temp_dir=str(index_dir), worker_id=0, shards=1, workers=1,
                              mem=mem_gib, cpus=cpus, token_width=token_width)
    cwd = os.getcwd()
    try:  # build_sa changes directory to run its binaries, and calls exit(1) on their failure
        with contextlib.redirect_stdout(io.StringIO()):
            indexing.build_sa(args)
    except SystemExit as err:
        raise RuntimeError(f"infini-gram's build_sa failed (exit {err.code})") from None
    finally:
        os.chdir(cwd)
    if not (index_dir / "table.0").exists():
        raise RuntimeError("infini-gram's build_sa wrote no table.0")


def _tree_rss_kb(pid: int) -> int:
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def probe(method: str, corpus_dir: Path, out: Path) -> dict[str, Any]:
    m = meta(corpus_dir)
    if method == "fastspec":
        import fastspec  # noqa: F401  (imported before the baseline is taken)
    else:
        import infini_gram.indexing  # noqa: F401

        shutil.rmtree(out, ignore_errors=True)
        write_infini_gram_input(corpus_dir, out)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_kb(os.getpid()))
            time.sleep(0.005)

    base = _tree_rss_kb(os.getpid())
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    error = None
    try:
        if method == "fastspec":
            build_fastspec(corpus_dir, out)
        else:
            build_infini_gram(out, m["token_width"])
    except Exception as err:  # reported, not raised: infini-gram's 32-bit build fails
        error = str(err)
    seconds = time.perf_counter() - t0
    stop.set()
    th.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_rss_mb": (peak[0] - base) / 1024, "peak_rss_total_mb": peak[0] / 1024,
            "largest_child_rss_mb": children / 1024, "error": error}


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "probe":
        if sys.argv[2] == "infini_gram":  # its 32-bit build asks for 32 GiB: keep that from the shared machine
            resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))
        print(json.dumps(probe(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
    else:
        raise SystemExit("usage: _infgram_bench.py probe fastspec|infini_gram CORPUS_DIR OUT_DIR")
