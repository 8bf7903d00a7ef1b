"""One experiment on the demo's training recipe: train a tiny GPT-NeoX on the standard
library's source, trace its last layer, label the phases and summarise the fall.

This is the script behind the table of recipes in docs/explanation/demo-recipe.md. It runs
for minutes (10,000 steps take about 8 minutes on one idle core), so it is not a test::

    python benchmarks/demo_recipe.py OUT --seed 1 --steps 7000 --every 500

It prints, per checkpoint, the training loss, RankMe, α over three fit ranges and the phase
(with and without the warmup boundary), then one JSON line with the summary, also written to
``OUT/summary.json``. "fall" is 1 − RankMe(last) / RankMe(peak after the warmup); "smoothed"
takes a 3-point moving average first.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from fastspec.demo import log_spaced_steps
from fastspec.models.data import stdlib_corpus
from fastspec.models.phases import phases
from fastspec.models.tiny import TinyLMConfig, train_checkpoints
from fastspec.models.trace import load_trace, trace
from fastspec.spectral import alpha_req

FIT_RANGES = ((0, 24), (2, 24), (1, 16))


def _alpha(eigenvalues: np.ndarray, fit_range: tuple[int, int]) -> float:
    try:
        return alpha_req(eigenvalues, fit_range=fit_range).alpha
    except ValueError:  # too few positive eigenvalues in the range (step 0)
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    for name, default in (("seed", 0), ("hidden", 32), ("layers", 4), ("steps", 10000), ("every", 500),
                          ("warmup", 100), ("vocab", 2048), ("batch", 16), ("n-probe", 1500), ("threads", 1)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--final-lr", type=float, default=0.0)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    args = parser.parse_args()

    t0 = time.time()
    corpus = stdlib_corpus(held_out=5)
    cfg = TinyLMConfig(hidden=args.hidden, layers=args.layers, vocab_size=args.vocab, steps=args.steps,
                       warmup=args.warmup, lr=args.lr, final_lr=args.final_lr, weight_decay=args.weight_decay,
                       batch_size=args.batch, seed=args.seed,
                       save_steps=log_spaced_steps(args.steps, args.every, min(args.every, 250)))
    t1 = time.time()
    dirs = train_checkpoints(corpus.train, os.path.join(args.out, "model"), cfg, progress=False,
                             threads=args.threads)
    t2 = time.time()
    with open(os.path.join(args.out, "model", "training.json")) as fh:
        info = json.load(fh)
    frame = trace(dirs, corpus.held_paragraphs[:args.n_probe], os.path.join(args.out, "trace"), layers=[args.layers],
                  max_length=64, batch_size=32, progress=False, fit_range=(0, min(24, args.hidden - 1)))
    t3 = time.time()
    spectra = load_trace(os.path.join(args.out, "trace"), eigenvalues=True)
    labelled, unbounded = phases(frame, warmup_steps=args.warmup), phases(frame)
    r, steps = labelled["rankme"].to_numpy(), labelled["step"].to_numpy()
    smooth = np.convolve(r, np.ones(3) / 3, mode="same")
    smooth[0], smooth[-1] = r[0], r[-1]
    peak = int(np.argmax(np.where(steps > args.warmup, r, -1)))
    peak_smooth = int(np.argmax(np.where(steps > args.warmup, smooth, -1)))
    for i, row in spectra.iterrows():
        lam = np.asarray(row["eigenvalues"])
        loss = info["train_loss"].get(str(int(row["step"])), float("nan"))
        alphas = " ".join(f"a{a + 1}..{b} {_alpha(lam, (a, b)):.3f}" for a, b in FIT_RANGES)
        print(f"{int(row['step']):>6} loss {loss:.3f} RankMe {row['rankme']:7.2f} {alphas} "
              f"{labelled['phase'][i]} | {unbounded['phase'][i]}")
    summary = {"args": vars(args), "tokens": info["n_train_tokens"],
               "epochs": args.steps * args.batch * cfg.seq_len / info["n_train_tokens"],
               "peak": float(r[peak]), "peak_step": int(steps[peak]), "final": float(r[-1]),
               "fall": float(1 - r[-1] / r[peak]), "fall_lowest": float(1 - r[peak:].min() / r[peak]),
               "fall_smoothed": float(1 - smooth[-1] / smooth[peak_smooth]),
               "phases": sorted(set(labelled["phase"])), "corpus_s": t1 - t0, "train_s": t2 - t1,
               "trace_s": t3 - t2, "final_loss": info["train_loss"][str(args.steps)], "corpus_sha256": corpus.sha256}
    print(json.dumps(summary))
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
