"""``fastspec report RESULTS_DIR``: one Markdown and one HTML page that gather a traced run's
figures, phases (with jackknife standard errors where traced with folds), memorization across
checkpoints, correlations, pass@k, ablation and toy-model results.

The report reads what the other commands wrote, by file name, in ``RESULTS_DIR`` or one
folder below it: a trace (``trace.csv`` with its ``config.json``), ``phases.csv``,
``trajectories.png``/``heatmap.png`` (drawn here when missing), ``memorization.csv`` and
``suffix_lengths.csv`` (their figures drawn here), ``correlations.csv``,
``pass_at_k.csv``/``.png``, ``ablation.csv``/``.png``, ``toy.csv``/``.png`` and the demo's
``phase_scores.csv`` (read by :func:`fastspec.analyses.phase_scores.paper_comparison` into
a paragraph on what matches the paper). A section
whose files are absent says which command makes them. Images are linked by relative path, so
the folder can be moved or zipped whole.
"""

from __future__ import annotations

import datetime
import html
import json
import os
from typing import Any

import pandas as pd

from .._files import write_text
from .._version import __version__
from ..analyses.correlation import correlation_table
from ..analyses.memorization import SUFFIX_BINS
from ..analyses.phase_scores import paper_comparison
from ..analyses.toy import summary_table
from ..models.phases import phases
from ..models.trace import load_trace
from .figures import checkpoint_names, plot_memorization, plot_suffix_lengths, plot_trace
from .tables import markdown_table

Block = tuple[str, Any]  # ("h1"|"h2"|"p"|"table"|"img", payload)
#: What the report gathers; a directory with none of them is not a results directory.
RESULT_FILES = ("trace.csv", "correlations.csv", "pass_at_k.csv", "ablation.csv", "toy.csv", "memorization.csv")


def _find(root: str, name: str) -> str | None:
    """``root/name``, else ``root/*/name`` (first in sorted order)."""
    path = os.path.join(root, name)
    if os.path.isfile(path):
        return path
    for sub in sorted(os.listdir(root)):
        path = os.path.join(root, sub, name)
        if os.path.isfile(path):
            return path
    return None


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _phase_runs(labelled: pd.DataFrame) -> str:
    """"warmup: steps 0–64; entropy-seeking: steps 128–400; …" from consecutive labels: each
    phase from its first checkpoint to its last, so that no two ranges overlap."""
    parts, start = [], 0
    labels, steps = labelled["phase"].tolist(), labelled["step"].tolist()
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            lo, hi = steps[start], steps[i - 1]
            parts.append(f"{labels[start]}: step {lo}" if lo == hi else f"{labels[start]}: steps {lo}–{hi}")
            start = i
    return "; ".join(parts)


def _trace_section(root: str, blocks: list[Block]) -> pd.DataFrame | None:
    blocks.append(("h2", "Geometry across checkpoints"))
    csv = _find(root, "trace.csv")
    if csv is None:
        blocks.append(("p", "No trace here (no trace.csv). Make one with `fastspec trace CHECKPOINTS… --data FILE "
                            f"--out {root}`."))
        return None
    trace_dir = os.path.dirname(csv)
    frame = load_trace(trace_dir)
    with open(os.path.join(trace_dir, "config.json")) as fh:
        config = json.load(fh)
    steps = frame["step"].dropna()
    blocks.append(("p", f"{frame['checkpoint'].nunique()} checkpoints"
                        + (f" (steps {int(steps.min())}–{int(steps.max())})" if len(steps) else "")
                        + f", layers {', '.join(str(v) for v in sorted(frame['layer'].unique()))}; "
                        f"{config.get('n_texts')} texts from "
                        f"{'a list given in Python' if config.get('data') == '<texts>' else config.get('data')} (SHA-256 {str(config.get('data_sha256'))[:12]}…), "
                        f"pooling {config.get('pooling')}, α fit ranks {config['fit_range'][0] + 1}..{config['fit_range'][1]}; "
                        f"fastspec {config.get('fastspec')}, torch {config.get('torch')}, transformers {config.get('transformers')}."))
    phases_csv = _find(root, "phases.csv")
    labelled = pd.read_csv(phases_csv) if phases_csv else phases(frame)
    figures = [_find(root, "trajectories.png"), _find(root, "heatmap.png")]
    if None in figures:
        figures = plot_trace(frame, root)
    blocks.append(("img", (_rel(figures[0], root), "RankMe and α of every layer across checkpoints; the last layer's "
                                                   "phases shaded")))
    blocks.append(("img", (_rel(figures[1], root), "Layer × checkpoint heat maps")))
    layer = int(labelled["layer"].iloc[0])
    blocks.append(("p", f"Phases of layer {layer} ({'from ' + _rel(phases_csv, root) if phases_csv else 'default rule'}): "
                        f"{_phase_runs(labelled)}."))
    sub = frame[frame["layer"] == layer].reset_index(drop=True)
    table = pd.DataFrame({"step": sub["step"], "RankMe": sub["rankme"], "RankMe (sv)": sub["rankme_sv"],
                          "α": sub["alpha"], "R²": sub["alpha_r2"], "phase": labelled["phase"]})
    if sub["step"].isna().any() or sub["label"].notna().any():  # stages: name each row
        table.insert(0, "checkpoint", checkpoint_names(sub))
    if sub["rankme_se"].notna().any():  # a trace with folds: the jackknife standard errors beside
        for col, se in (("RankMe", "rankme_se"), ("RankMe (sv)", "rankme_sv_se"), ("α", "alpha_se")):
            table.insert(table.columns.get_loc(col) + 1, f"{col} SE", sub[se])
        blocks.append(("p", f"SE: delete-a-fold jackknife standard errors over {config.get('folds')} folds."))
    blocks.append(("table", table))
    return frame


def _memorization_section(root: str, blocks: list[Block], trace: pd.DataFrame | None) -> None:
    blocks.append(("h2", "Distributional memorization across checkpoints"))
    csv = _find(root, "memorization.csv")
    if csv is None:
        blocks.append(("p", "Not in this directory. Make it with `fastspec memorization --checkpoints CKPT… --index "
                            "INDEX --items ITEMS.jsonl --out RESULTS_DIR`."))
        return
    memo = pd.read_csv(csv)
    png = plot_memorization(memo, os.path.join(os.path.dirname(csv), "memorization.png"), trace=trace)
    blocks.append(("img", (_rel(png, root), "Memorization (Spearman ρ of ∞-gram and model scores) against step, "
                                            "with the last layer's RankMe and its phases (the paper's Figure 4)")))
    blocks.append(("table", memo))
    suffix = _find(root, "suffix_lengths.csv")
    if suffix:
        table = pd.read_csv(suffix)
        if "checkpoint" not in table:  # written before per-checkpoint rows: one table for all
            table = table.assign(checkpoint="pooled")
        pooled = table[table["checkpoint"] == "pooled"]
        bars = plot_suffix_lengths(pooled, os.path.join(os.path.dirname(suffix), "suffix_lengths.png"))
        blocks.append(("img", (_rel(bars, root), "Effective n of the ∞-gram over the scored tokens of every checkpoint "
                                                "(the paper's Table 1)")))
        wide = table.pivot_table(index="checkpoint", columns="bin", values="share", sort=False) * 100
        blocks.append(("table", wide[[b for b in SUFFIX_BINS if b in wide]].reset_index()
                       .rename(columns={b: f"n {b} (%)" for b in SUFFIX_BINS})))
    blocks.append(("p", f"Data: {_rel(csv, root)}"))


def _table_section(root: str, blocks: list[Block], title: str, stem: str, missing: str, caption: str,
                   transform: Any = None, note: Any = None) -> None:
    blocks.append(("h2", title))
    csv = _find(root, f"{stem}.csv")
    if csv is None:
        blocks.append(("p", f"Not in this directory. {missing}"))
        return
    frame = pd.read_csv(csv)
    for col in frame.columns:  # a column of whole numbers with gaps (ablation's k) reads back as float
        values = frame[col]
        if pd.api.types.is_float_dtype(values) and values.notna().any() and (values.dropna() % 1 == 0).all():
            frame[col] = values.astype("Int64")
    png = _find(root, f"{stem}.png")
    if png:
        blocks.append(("img", (_rel(png, root), caption)))
    if note is not None:
        blocks.append(("p", note(frame)))
    blocks.append(("table", transform(frame) if transform else frame))
    blocks.append(("p", f"Data: {_rel(csv, root)}"))


def _toy_summary(frame: pd.DataFrame) -> pd.DataFrame:
    runs = {}
    for name, sub in frame.groupby("condition", sort=False):
        runs[name] = sub.reset_index(drop=True)
        if "width" in sub.columns:
            runs[name].attrs["width"] = int(sub["width"].iloc[0])
    return summary_table(runs)


def _phase_section(root: str, blocks: list[Block]) -> None:
    """The paragraph that compares the run with the paper, and the per-phase table it reads."""
    csv = _find(root, "phase_scores.csv")
    if csv is None:
        return  # only the demo writes it (scores per checkpoint beside the phases)
    table = pd.read_csv(csv)
    blocks += [("h2", "Against the paper, phase by phase"), ("p", paper_comparison(table)),
               ("p", "Each metric where each phase starts (the last checkpoint of the phase before, where its move "
                     "began) and ends:"), ("table", table), ("p", f"Data: {_rel(csv, root)}")]


def _ablation_note(frame: pd.DataFrame) -> str:
    base = frame[frame["mode"] == "none"]["accuracy"]
    return ("Multiple-choice accuracy with the top-k eigenvectors of the layer's covariance retained or removed"
            + (f" (unablated: {float(base.iloc[0]):.3f})" if len(base) else "") + ".")


def build_report(results_dir: str | os.PathLike) -> list[Block]:
    """The report's blocks (see :func:`write_report`)."""
    root = os.fspath(results_dir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no such results directory: {root}")
    if not any(_find(root, name) for name in RESULT_FILES):
        raise ValueError(f"{root}: holds no fastspec results (none of {', '.join(RESULT_FILES)}, here or one folder "
                         "below); make them with fastspec trace, correlate, pass-at-k, ablate, toy or demo")
    blocks: list[Block] = [("h1", f"fastspec report: {os.path.basename(os.path.abspath(root))}"),
                           ("p", f"Written {datetime.datetime.now():%Y-%m-%d %H:%M} by fastspec {__version__} from "
                                 f"the files in {os.path.abspath(root)}.")]
    trace = _trace_section(root, blocks)
    _memorization_section(root, blocks, trace)
    _table_section(root, blocks, "Correlations with per-checkpoint scores", "correlations",
                   "Make it with `fastspec correlate RESULTS_DIR SCORES.csv --out RESULTS_DIR`.", "",
                   transform=correlation_table,
                   note=lambda f: "Pearson r and Spearman ρ with two-sided p-values (scipy.stats), across checkpoints "
                                  "(the paper's Table C.2 layout).")
    scores = _find(root, "scores.csv")
    if scores:
        blocks += [("p", f"The per-checkpoint scores ({_rel(scores, root)}):"), ("table", pd.read_csv(scores))]
    _phase_section(root, blocks)
    _table_section(root, blocks, "pass@k", "pass_at_k",
                   "Make it with `fastspec pass-at-k TABLE.csv --k 1 16 256 --by step --out RESULTS_DIR`.",
                   "pass@k across checkpoints (unbiased estimator of Chen et al., 2021)")
    _table_section(root, blocks, "Top-k eigenvector ablation", "ablation",
                   "Make it with `fastspec ablate MODEL --items ITEMS.jsonl --basis-data TEXTS --out RESULTS_DIR`.",
                   "Accuracy against k, retaining or removing the top-k eigenvectors", note=_ablation_note)
    _table_section(root, blocks, "Toy model", "toy", "Make it with `fastspec toy --out RESULTS_DIR`.",
                   "RankMe and α of the toy model's bottleneck: the main run and its three controls",
                   transform=_toy_summary,
                   note=lambda f: "A linear bottleneck trained by gradient descent on power-law next tokens (the paper's "
                                  "§3.3); a run compresses when RankMe falls more than 3% from its peak while α rises.")
    return blocks


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, payload in blocks:
        if kind in ("h1", "h2"):
            out.append(("#" if kind == "h1" else "##") + " " + payload)
        elif kind == "p":
            out.append(payload)
        elif kind == "table":
            out.append(markdown_table(payload))
        elif kind == "img":
            path, caption = payload
            out.append(f"![{caption}]({path})" + (f"\n\n*{caption}*" if caption else ""))
    return "\n\n".join(out) + "\n"


def render_html(blocks: list[Block]) -> str:
    title = next((p for k, p in blocks if k == "h1"), "fastspec report")
    body = []
    for kind, payload in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "table":
            body.append(payload.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.4g}", border=0))
        elif kind == "img":
            path, caption = payload
            body.append(f'<figure><img src="{html.escape(path)}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
             "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:90%}"
             "table{border-collapse:collapse;font-size:90%}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
             "text-align:right}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(results_dir: str | os.PathLike) -> tuple[str, str]:
    """Write ``report.md`` and ``report.html`` into ``results_dir``; return their paths."""
    root = os.fspath(results_dir)
    blocks = build_report(root)
    return (write_text(os.path.join(root, "report.md"), render_markdown(blocks)),
            write_text(os.path.join(root, "report.html"), render_html(blocks)))
