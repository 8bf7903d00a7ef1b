"""Issue 18's sweep of the toy model (:mod:`fastspec.toy`): which settings make RankMe fall
from its peak while α rises, and do the controls stay flat?

It uses the installed fastspec (run as a script, its own folder, not the repository root, is
on sys.path), one thread, and takes about 25 minutes on two shared cores::

    OMP_NUM_THREADS=1 python benchmarks/toy_sweep.py --out toy_sweep.csv [--stage all]
    python benchmarks/toy_sweep.py --out toy_sweep.csv --stage none --table --figure docs/toy-best.png

Stages (``--stage``; ``all`` runs them in order):

* ``core``: init (Gaussian, balanced) × labels (hard, soft s = 0.2) × d ∈ {4, 8, 16, 32} ×
  C ∈ {64, 256} × seeds 0, 1 (seed 0 alone at C = 256), the rest at the base settings below.
* ``factors``: one factor at a time around the base, at d = 8, C = 64, seed 0, for
  both inits and both label kinds: power-law exponent, instances per class (and classes drawn
  at random instead of fixed sizes), learning rate, init scale, and the smoothing s.
* ``controls``: for the first setting of :data:`CANDIDATES` (the best of ``core``/``factors``,
  named after looking at them), the main run and the three controls (uniform labels with
  about as many contexts, d = C, MSE) at every d and seeds 0–2 for C = 64, at d ∈ {8, 32} and seed 0 for C = 256.
* ``long``: the first candidate and the hard-label balanced setting at ten times the horizon,
  d = 8, C = 64.

Every run is recorded on a log-spaced step axis (``log_steps`` points) and its landmarks
(:func:`fastspec.toy.compression`) are one CSV row; the CSV is rewritten after every run
(temporary name + rename), and runs already in it are skipped, so an interrupted sweep resumes.
``--table`` prints the Markdown table of docs/toy.md from the CSV; ``--figure`` trains the
best candidate's four conditions once more and draws them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from fastspec import toy
from fastspec._files import save_figure, write_csv

STEPS = 20_000  # a log axis 1..2·10⁴: the soft-label runs reach their optimum well before
LONG_STEPS = 200_000
LOG_STEPS = 80
WIDTHS = (4, 8, 16, 32)
CLASSES = (64, 256)
FALL = 0.10  # the bar: a fall of at least 10% from the peak, with α rising

#: The base setting every stage varies from: the paper's (hard labels from fixed power-law
#: class sizes, full-batch GD on cross-entropy, small init).
BASE: dict[str, Any] = {"exponent": 1.0, "instances": 32, "lr": 2.0, "init_scale": 1e-3, "smoothing": 0.0}
INITS = ("gaussian", "balanced")
LABELS = {"hard": 0.0, "soft": 0.2}

#: Settings (overrides of BASE) that the ``controls`` and ``long`` stages test at every d and C,
#: chosen from the core and factors stages (docs/toy.md says why).
CANDIDATES: dict[str, dict[str, Any]] = {
    "gaussian soft s=0.2": {"init": "gaussian", "smoothing": 0.2},
    "balanced soft s=0.2": {"init": "balanced", "smoothing": 0.2},
}


def _key(cfg: dict[str, Any]) -> str:
    return json.dumps(cfg, sort_keys=True)


def _core() -> Iterator[tuple[str, dict[str, Any]]]:
    for init in INITS:
        for label, s in LABELS.items():
            for c in CLASSES:
                for d in WIDTHS:
                    for seed in ((0, 1) if c < 256 else (0,)):  # a C = 256 run costs five C = 64 ones
                        yield (f"core {init} {label}",
                               {**BASE, "init": init, "smoothing": s, "width": d, "classes": c, "seed": seed})


FACTORS: dict[str, list[dict[str, Any]]] = {
    "exponent": [{"exponent": e} for e in (0.5, 1.5, 2.0)],
    "instances": [{"instances": n} for n in (8, 128)] + [{"instances": None, "contexts": 256}],
    "lr": [{"lr": lr} for lr in (0.5, 8.0)],
    "init_scale": [{"init_scale": s} for s in (1e-5, 1e-1)],
}


def _factors() -> Iterator[tuple[str, dict[str, Any]]]:
    for init in INITS:
        for label, s in LABELS.items():
            for factor, overrides in FACTORS.items():
                for o in overrides:
                    for d in (8,):
                        for seed in (0,):
                            yield (f"factor {factor} {init} {label}",
                                   {**BASE, "init": init, "smoothing": s, **o, "width": d, "classes": 64, "seed": seed})
        for s in (0.05, 0.5):
            for d in (8,):
                for seed in (0,):
                    yield (f"factor smoothing {init}", {**BASE, "init": init, "smoothing": s, "width": d, "classes": 64,
                                                        "seed": seed})


def _contexts(options: dict[str, Any], classes: int) -> int:
    """The number of contexts of the power-law run with these overrides of BASE."""
    o = {**BASE, **options}
    return int(toy._class_sizes("powerlaw", classes, o["exponent"], o["instances"]).sum())


def _conditions(options: dict[str, Any], width: int, classes: int, seed: int) -> dict[str, dict[str, Any]]:
    """The main run of a setting and its three controls, as run configurations. Uniform labels
    get about as many contexts as the power law's (instances each), not 32 per class: C·32
    contexts would make it a different, and eight times costlier, problem."""
    same_size = max(1, round(_contexts(options, classes) / classes))
    base = {**BASE, **options, "width": width, "classes": classes, "seed": seed}
    return {"main": base, "uniform labels": {**base, "labels": "uniform", "instances": same_size},
            "no bottleneck (d=C)": {**base, "width": classes}, "MSE loss": {**base, "loss": "mse"}}


def _controls() -> Iterator[tuple[str, dict[str, Any]]]:
    name, o = next(iter(CANDIDATES.items()))
    for c in CLASSES:
        # C = 256 costs eight times C = 64, and its d = C control (d = 256) thirty times: one seed there
        for seed in ((0, 1, 2) if c < 256 else (0,)):
            for d in (WIDTHS if c < 256 else (8, 32)):
                runs = _conditions(o, d, c, seed)
                for cond in ("main", "uniform labels", "MSE loss"):
                    yield f"{name} | {cond}", runs[cond]
            yield f"{name} | no bottleneck (d=C)", runs["no bottleneck (d=C)"]


def _long() -> Iterator[tuple[str, dict[str, Any]]]:
    first = next(iter(CANDIDATES))
    settings = {first: CANDIDATES[first], "balanced hard": {"init": "balanced", "smoothing": 0.0}}
    for name, o in settings.items():
        for d in (8,):
            yield f"long {name}", {**BASE, **o, "width": d, "classes": 64, "seed": 0, "steps": LONG_STEPS}


STAGES = {"core": _core, "factors": _factors, "controls": _controls, "long": _long}


def run_one(cfg: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Train one setting and return its CSV row (and the frame, or None if it diverged)."""
    kw = {"steps": STEPS, "log_steps": LOG_STEPS, **cfg}
    d, c = kw.pop("width"), kw.pop("classes")
    # every run fits α over the same ranks as its width allows, 1..d (the top d of d = C too,
    # and at most 32, the largest bottleneck, so that α of the d = C control is comparable)
    kw.setdefault("fit_range", (0, min(d, max(WIDTHS))))
    started = time.perf_counter()
    try:
        frame = toy.train(width=d, classes=c, **kw)
    except ValueError as err:
        if "diverged" not in str(err):
            raise
        return {"diverged": True, "error": str(err), "seconds": time.perf_counter() - started}, None
    comp = toy.compression(frame)
    row = {"diverged": False, "error": "", "seconds": time.perf_counter() - started, "contexts": frame.attrs["contexts"],
           "collapse": comp.rankme_trough, "trough_step": comp.trough_step, "peak": comp.rankme_peak,
           "peak_step": comp.peak_step, "after": comp.rankme_after, "after_step": comp.after_step,
           "final": comp.rankme_final, "fall": comp.drop, "alpha_peak": comp.alpha_peak, "alpha_after": comp.alpha_after,
           "alpha_final": comp.alpha_final, "alpha_change": comp.alpha_after / comp.alpha_peak - 1,
           "final_loss": float(frame["loss"].iloc[-1]), "final_accuracy": float(frame["accuracy"].iloc[-1])}
    row["compresses"] = bool(comp.drop >= FALL and comp.alpha_after > comp.alpha_peak)
    return row, frame


def sweep(out: str, stages: list[str]) -> pd.DataFrame:
    done = pd.read_csv(out) if os.path.exists(out) else pd.DataFrame()
    rows = done.to_dict("records")
    seen = {r["key"] for r in rows}
    for stage in stages:
        for group, cfg in STAGES[stage]():
            key = _key(cfg)
            if key in seen:
                continue
            seen.add(key)
            row, _ = run_one(cfg)
            rows.append({"stage": stage, "group": group, "key": key, "init": cfg.get("init"),
                         "labels": cfg.get("labels", "powerlaw"), "loss": cfg.get("loss", "ce"),
                         "smoothing": cfg["smoothing"], "width": cfg["width"], "classes": cfg["classes"],
                         "seed": cfg["seed"], "exponent": cfg["exponent"], "instances": cfg.get("instances"),
                         "lr": cfg["lr"], "init_scale": cfg["init_scale"], "steps": cfg.get("steps", STEPS), **row})
            write_csv(pd.DataFrame(rows), out)
            r = rows[-1]
            verdict = "diverged" if r["diverged"] else (f"collapse {r['collapse']:.2f} peak {r['peak']:.3f} "
                                                        f"fall {100 * r['fall']:.1f}% α {100 * r['alpha_change']:+.0f}%")
            print(f"[{len(rows)}] {group} d={cfg['width']} C={cfg['classes']} seed {cfg['seed']}: {verdict} "
                  f"({r['seconds']:.1f}s)", flush=True)
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> str:
    """Markdown: one row per (group, d, C, non-default factors), the seeds' range."""
    frame = frame[~frame["diverged"].astype(bool)].copy()
    frame["setting"] = [_setting(r) for r in frame.to_dict("records")]
    lines = ["| condition | d | C | seeds | collapse | peak | fall | α change | compresses? (≥ 10%) | 3% rule |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (setting, d, c), g in frame.groupby(["setting", "width", "classes"], sort=False):
        def rng(col, fmt, scale=1.0):
            lo, hi = fmt.format(g[col].min() * scale), fmt.format(g[col].max() * scale)
            return lo if lo == hi else f"{lo} to {hi}"
        def verdict(yes):
            n = int(yes.sum())
            return "yes" if n == len(g) else ("no" if n == 0 else f"{n}/{len(g)}")
        loose = (g["fall"] > toy.TOL) & (g["alpha_after"] > g["alpha_peak"])  # fastspec.toy.compression's default
        lines.append(f"| {setting} | {d} | {c} | {len(g)} | {rng('collapse', '{:.2f}')} | {rng('peak', '{:.2f}')} | "
                     f"{rng('fall', '{:.1f}%', 100)} | {rng('alpha_change', '{:+.0f}%', 100)} | "
                     f"{verdict(g['compresses'].astype(bool))} | {verdict(loose)} |")
    return "\n".join(lines)


def _setting(r: dict[str, Any]) -> str:
    group = r["group"]
    if " | " in group:  # the controls stage: "<candidate> | <condition>"
        candidate, cond = group.split(" | ")
        group = f"controls of {candidate}: {cond}"
    parts = [group]
    for col, base in (("exponent", BASE["exponent"]), ("lr", BASE["lr"]), ("init_scale", BASE["init_scale"])):
        if not np.isclose(r[col], base):
            parts.append(f"{col}={r[col]:g}")
    inst = r["instances"]
    if pd.isna(inst):
        parts.append("classes drawn, D=256")
    elif int(inst) != BASE["instances"]:
        parts.append(f"instances={int(inst)}")
    if r["group"].startswith("factor smoothing"):
        parts.append(f"s={r['smoothing']:g}")
    if r["steps"] != STEPS:
        parts.append(f"{int(r['steps'])} steps")
    return " ".join(parts)


def figure(name: str, path: str, width: int = 8, classes: int = 64, seed: int = 0) -> str:
    """The four conditions of a candidate (main, uniform labels, d = C, MSE) on a log step axis,
    and the paper's setting as written (balanced init, hard labels) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for cond, cfg in _conditions(CANDIDATES[name], width, classes, seed).items():
        kw = {"steps": STEPS, "log_steps": LOG_STEPS, "fit_range": (0, width), **cfg}
        runs[cond] = toy.train(width=kw.pop("width"), classes=kw.pop("classes"), **kw)
    # and, dashed, the paper's setting as written: balanced init, hard labels (BASE)
    paper = toy.train(width=width, classes=classes, seed=seed, steps=STEPS, log_steps=LOG_STEPS, init="balanced", **BASE)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.9))
    for (cond, frame), color in zip(runs.items(), ("k", "C0", "C2", "C3")):
        c = toy.compression(frame)
        x = np.maximum(frame["step"].to_numpy(dtype=np.float64), 0.7)  # step 0 drawn at the axis' left edge
        label = f"{cond}: fall {100 * c.drop:.1f}%"
        axes[0].plot(x, frame["rankme"] / frame.attrs["width"], color=color, lw=1.4, label=label)
        axes[1].plot(x, frame["alpha"], color=color, lw=1.4, label=cond)
    x = np.maximum(paper["step"].to_numpy(dtype=np.float64), 0.7)
    label = f"balanced init, hard labels: fall {100 * toy.compression(paper).drop:.1f}%"
    axes[0].plot(x, paper["rankme"] / width, color="0.5", ls="--", lw=1.2, label=label)
    axes[1].plot(x, paper["alpha"], color="0.5", ls="--", lw=1.2)
    axes[0].set_ylabel("RankMe / d")
    axes[1].set_ylabel(f"α (ranks 1..{width})")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"toy model, {name} (first class 32 contexts, lr 2, init scale 1e-3): d={width}, C={classes}, "
                 f"seed {seed}; the d=C control has d={classes}", fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="toy_sweep.csv", help="the CSV (rewritten after every run; resumed)")
    parser.add_argument("--stage", default="all", choices=["all", *STAGES, "none"])
    parser.add_argument("--table", action="store_true", help="print docs/toy.md's table from the CSV")
    parser.add_argument("--figure", help="PNG of the first candidate's four conditions")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the runs are small matrix products
    if args.stage != "none":
        sweep(args.out, list(STAGES) if args.stage == "all" else [args.stage])
    if args.table:
        print(table(pd.read_csv(args.out)))
    if args.figure:
        print("wrote", figure(next(iter(CANDIDATES)), args.figure))
    return 0


if __name__ == "__main__":
    sys.exit(main())
