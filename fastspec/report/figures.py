"""Every figure fastspec draws (matplotlib, Agg): a trace's RankMe and α against training step
per layer with the phases shaded (the paper's Figure 2) and its layer × step heat maps
(Figure 3), an eigenspectrum with its α fit, pass@k against step (Figure 6C), accuracy under
top-k eigenvector ablation (Table 2), and the toy model's four conditions."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .._files import save_figure
from ..analyses.toy import TOL, compression
from ..models.phases import phases
from ..models.trace import load_trace
from ..spectral import rankme

PHASE_COLORS = {"warmup": "#bbbbbb", "entropy-seeking": "#9ecae1", "compression-seeking": "#fdae6b", "flat": "#eeeeee"}


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: figures go to files, no display is opened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _x(frame: Any) -> tuple[np.ndarray, str]:
    """Training step when every checkpoint has one, else the checkpoint's order."""
    steps = frame["step"]
    if steps.isna().any():
        return frame["index"].to_numpy(dtype=np.float64), "checkpoint (order given)"
    return steps.to_numpy(dtype=np.float64), "training step"


def checkpoint_names(frame: Any) -> list[str]:
    """One name per row for axes and tables: the label given (``base``, ``sft``…), else the
    step, else the checkpoint's last path component."""
    labels = frame["label"] if "label" in frame else pd.Series([None] * len(frame), index=frame.index)
    return [str(lab) if isinstance(lab, str) and lab else str(int(step)) if not pd.isna(step)
            else str(ck).rstrip("/").rsplit("/", 1)[-1] for lab, step, ck in zip(labels, frame["step"], frame["checkpoint"])]


def _se_band(ax: Any, x: np.ndarray, y: np.ndarray, frame: Any, column: str, color: Any) -> None:
    """± one jackknife standard error around y, where ``frame`` has them (a trace made with folds)."""
    se = frame[column].to_numpy(dtype=np.float64) if column in frame else None
    if se is not None and np.isfinite(se).any():
        ax.fill_between(x, y - se, y + se, color=color, alpha=0.2, lw=0)


def step_axis(ax: Any, x: np.ndarray) -> None:
    positive = x[x > 0]
    if len(positive) and positive.max() / positive.min() > 50:  # Pythia-style log-spaced checkpoints
        ax.set_xscale("symlog", linthresh=float(positive.min()))


def plot_trace(results: Any, out_dir: str | os.PathLike, *, phase_layer: int | str = "last",
               warmup_steps: int | None = None, tol: float = 0.1, se_multiple: float | None = None) -> list[str]:
    """Write ``trajectories.png`` and ``heatmap.png`` into ``out_dir``; return their paths. A
    trace made with folds gets a band of ± one jackknife standard error around each line. The
    phases are shaded by :func:`fastspec.phases` with ``tol`` and ``se_multiple``."""
    plt = _pyplot()

    frame = results if isinstance(results, pd.DataFrame) else load_trace(results)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    layers = sorted(frame["layer"].unique())
    labelled = phases(frame, layer=phase_layer, warmup_steps=warmup_steps, tol=tol, se_multiple=se_multiple)
    px, xlabel = _x(frame[frame["layer"] == labelled["layer"].iloc[0]])
    cmap = plt.get_cmap("viridis")

    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for ax, metric, name in zip(axes, ("rankme", "alpha"), ("RankMe", "α (alpha-ReQ)")):
        _shade(ax, px, labelled["phase"].tolist())
        for j, layer in enumerate(layers):
            sub = frame[frame["layer"] == layer]
            x, _ = _x(sub)
            y = sub[metric].to_numpy(dtype=np.float64)
            color = cmap(j / max(len(layers) - 1, 1))
            ax.plot(x, y, marker="o", ms=3, lw=1.2, color=color, label=f"layer {layer}")
            _se_band(ax, x, y, sub, f"{metric}_se", color)
        ax.set_ylabel(name)
        step_axis(ax, px)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    if xlabel.startswith("checkpoint"):  # stages without a step (base, SFT, DPO, RLVR): a categorical axis
        axes[-1].set_xticks(px, checkpoint_names(frame[frame["layer"] == labelled["layer"].iloc[0]]), rotation=30)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(layers) > 8:  # a legend of every layer would hide the lines: show the colour scale
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(layers[0], layers[-1]))
        fig.colorbar(sm, ax=axes, label="layer")
    else:
        axes[0].legend(handles, labels, fontsize=7, ncol=2)
    from matplotlib.patches import Patch

    present = [p for p in PHASE_COLORS if p in set(labelled["phase"])]
    axes[1].legend([Patch(color=PHASE_COLORS[p]) for p in present],
                   [f"{p} (layer {labelled['layer'].iloc[0]})" for p in present], fontsize=7, loc="best")
    fig.suptitle("Representation geometry across training")
    traj = os.path.join(out_dir, "trajectories.png")
    save_figure(fig, traj, dpi=130, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4 + 0.08 * len(layers)))
    order = frame.drop_duplicates("checkpoint")
    ticks = checkpoint_names(order)
    for ax, metric, name in zip(axes, ("rankme", "alpha"), ("RankMe", "α")):
        grid = frame.pivot_table(index="layer", columns="checkpoint", values=metric, sort=False)
        grid = grid.reindex(columns=order["checkpoint"].tolist())
        im = ax.imshow(grid.to_numpy(dtype=np.float64), aspect="auto", origin="lower", cmap="magma",
                       interpolation="nearest")
        ax.set_yticks(range(len(grid.index)), [str(v) for v in grid.index])
        every = max(1, len(ticks) // 12)
        ax.set_xticks(range(0, len(ticks), every), ticks[::every], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("layer")
        ax.set_title(name)
        fig.colorbar(im, ax=ax)
    heat = os.path.join(out_dir, "heatmap.png")
    save_figure(fig, heat, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return [traj, heat]


def _shade(ax: Any, x: np.ndarray, labels: list[str]) -> None:
    """Shade each checkpoint's span (midpoint to midpoint) with its phase's colour."""
    if len(x) == 0:
        return
    edges = np.concatenate([[x[0]], (x[1:] + x[:-1]) / 2, [x[-1]]])
    for i, label in enumerate(labels):
        ax.axvspan(edges[i], edges[i + 1], color=PHASE_COLORS.get(label, "#ffffff"), alpha=0.5, lw=0)


def plot_spectrum(eigenvalues: np.ndarray, fit: Any, path: str, *, population: np.ndarray | None = None,
                  title: str = "Eigenspectrum") -> None:
    """Log-log eigenspectrum with the alpha-ReQ fit line over its range (none when ``fit`` is
    None: a spectrum shorter than the range), and the population spectrum, dashed, when known."""
    plt = _pyplot()

    ranks = np.arange(1, eigenvalues.size + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    pos = eigenvalues > 0
    ax.loglog(ranks[pos], eigenvalues[pos], lw=1.6, label="measured eigenvalues")
    if population is not None:
        ax.loglog(np.arange(1, population.size + 1), population, "k--", lw=1.0, label="construction λᵢ")
    if fit is not None:
        start, stop = fit.fit_range
        fr = np.arange(start + 1, stop + 1)
        ax.loglog(fr, fit.predict(fr), "r-", lw=3, alpha=0.8,
                  label=f"fit: α = {fit.alpha:.3f}, R² = {fit.r2:.4f} (ranks {start + 1}..{stop})")
        ax.axvspan(start + 1, stop, color="r", alpha=0.07)
    ax.set_xlabel("rank i")
    ax.set_ylabel("eigenvalue λᵢ")
    ax.set_title(f"{title}\nRankMe = {rankme(eigenvalues):.1f}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_pass_at_k(frame: pd.DataFrame, by: str | Sequence[str], path: str | os.PathLike) -> str:
    """pass@k against the ``by`` column (e.g. step), one line per k, as the paper's Figure 6C."""
    plt = _pyplot()

    col = by if isinstance(by, str) else by[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    x = frame[col]
    numeric = pd.api.types.is_numeric_dtype(x)
    for name in [c for c in frame.columns if c.startswith("pass@")]:
        ax.plot(x if numeric else range(len(x)), frame[name], "o-", ms=3, label=name)
    if numeric:
        step_axis(ax, x.to_numpy(dtype=np.float64))  # log-spaced checkpoints get a symlog axis
    else:
        ax.set_xticks(range(len(x)), [str(v) for v in x], rotation=45, ha="right")
    ax.set_xlabel(col)
    ax.set_ylabel("pass@k")
    top = float(np.nanmax(frame[[c for c in frame.columns if c.startswith("pass@")]].to_numpy(dtype=np.float64)))
    ax.set_ylim(0, min(1.0, max(1.2 * top, 0.05)))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"pass@k over {frame['n_problems'].iloc[0]} problems, n={frame['n'].min()} samples each")
    fig.tight_layout()
    out = os.fspath(path)
    save_figure(fig, out)
    plt.close(fig)
    return out


def plot_ablation(frame: pd.DataFrame, path: str | os.PathLike, *, title: str | None = None) -> str:
    """Accuracy against k (log axis) for retain and remove, with the unablated accuracy and
    chance as horizontal lines."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for mode, style in (("retain", "o-"), ("remove", "s-")):
        sub = frame[frame["mode"] == mode]
        if not sub.empty:
            ax.plot(sub["k"].astype(float), sub["accuracy"], style, label=f"{mode} top-k")
    base = frame[frame["mode"] == "none"]["accuracy"]
    if not base.empty:
        ax.axhline(float(base.iloc[0]), color="k", lw=1.2, label=f"no ablation ({float(base.iloc[0]):.3f})")
    chance = frame.attrs.get("chance")
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("k (eigenvectors)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    layer = frame.attrs.get("layer")
    ax.set_title(title or f"Top-k eigenvector ablation at layer {layer}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = os.fspath(path)
    save_figure(fig, out)
    plt.close(fig)
    return out


def plot_conditions(runs: dict[str, Any], path: str | os.PathLike, *, tol: float = TOL) -> str:
    """RankMe (top) and α (bottom) against step, one column per condition, the phases of
    :func:`compression` shaded (warmup, entropy-seeking, compression-seeking). Writes a PNG
    to ``path`` and returns it. Runs recorded with ``log_steps`` get a logarithmic step axis."""
    plt = _pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    path = os.fspath(path)
    fig, axes = plt.subplots(2, len(runs), figsize=(3.4 * len(runs), 5.6), sharex="col", squeeze=False)
    for j, (name, frame) in enumerate(runs.items()):
        c = compression(frame, tol)
        x = frame["step"].to_numpy(dtype=np.float64)
        spans = [("warmup", 0, c.trough_step), ("entropy-seeking", c.trough_step, c.peak_step)]
        if c.compresses:
            spans.append(("compression-seeking", c.peak_step, c.after_step))
        for row, (metric, label) in enumerate((("rankme", "RankMe"), ("alpha", "α (alpha-ReQ)"))):
            ax = axes[row, j]
            for phase, lo, hi in spans:
                if hi > lo:
                    ax.axvspan(lo, hi, color=PHASE_COLORS[phase], alpha=0.5, lw=0)
            ax.plot(x, frame[metric].to_numpy(dtype=np.float64), color="k", lw=1.4)
            if metric == "alpha" and (frame["alpha"] > 0).all():
                ax.set_yscale("log")  # the warmup spike is ten times the later rise
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(NullFormatter())
            if frame.attrs.get("log_steps"):  # recorded on a log step axis (step 0 included): drawn on one
                ax.set_xscale("symlog", linthresh=1)
            ax.grid(alpha=0.3, which="both")
            if j == 0:
                ax.set_ylabel(label)
        axes[0, j].axhline(frame.attrs.get("width", np.nan), color="0.4", ls=":", lw=1)
        axes[0, j].plot([c.peak_step], [c.rankme_peak], "o", color="C3", ms=5)
        verdict = f"compresses: −{100 * c.drop:.1f}%" if c.compresses else f"no compression (fall {100 * c.drop:.1f}%)"
        attrs = frame.attrs
        axes[0, j].set_title(f"{name}\nd={attrs.get('width')}, C={attrs.get('classes')}, {attrs.get('loss')}\n{verdict}",
                             fontsize=9)
        axes[1, j].set_xlabel("step")
    fig.legend([Patch(color=PHASE_COLORS[p]) for p in ("warmup", "entropy-seeking", "compression-seeking")],
               ["warmup", "entropy-seeking", "compression-seeking"], loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fit = next(iter(runs.values())).attrs.get("fit_range")
    fig.suptitle(f"Toy model: linear bottleneck, power-law next tokens (α over ranks {fit[0] + 1}..{fit[1]}; "
                 f"dotted: d)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(fig, path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_memorization(memo: pd.DataFrame, path: str | os.PathLike, *, trace: pd.DataFrame | None = None,
                      warmup_steps: int | None = None) -> str:
    """The paper's Figure 4: distributional memorization (Spearman ρ) against step and, with a
    trace, the last layer's RankMe below it (± one jackknife SE where the trace has folds),
    its phases shaded on both."""
    plt = _pyplot()
    rows = 2 if trace is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(7.5, 3.2 * rows), sharex=True, squeeze=False)
    axes = axes[:, 0]
    x = memo["step"].to_numpy(dtype=np.float64)
    if trace is not None:
        labelled = phases(trace, warmup_steps=warmup_steps)
        px = labelled["step"].to_numpy(dtype=np.float64)
        for ax in axes:
            _shade(ax, px, labelled["phase"].tolist())
        last = trace[trace["layer"] == labelled["layer"].iloc[0]]
        y = last["rankme"].to_numpy(dtype=np.float64)
        lx = last["step"].to_numpy(dtype=np.float64)
        axes[1].plot(lx, y, "o-", ms=3, color="C0")
        _se_band(axes[1], lx, y, last, "rankme_se", "C0")
        axes[1].set_ylabel(f"RankMe (layer {labelled['layer'].iloc[0]})")
        present = [p for p in PHASE_COLORS if p in set(labelled["phase"])]
        from matplotlib.patches import Patch

        axes[0].legend([Patch(color=PHASE_COLORS[p]) for p in present], present, fontsize=7, loc="best")
    axes[0].plot(x, memo["rho"].to_numpy(dtype=np.float64), "o-", ms=3, color="C3")
    axes[0].set_ylabel("memorization (Spearman ρ)")
    axes[0].set_title(f"Distributional memorization across training ({memo['rule'].iloc[0]} rule, "
                      f"{int(memo['n_items'].max())} items)", fontsize=10)
    for ax in axes:
        step_axis(ax, x)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training step")
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    plt.close(fig)
    return os.fspath(path)


def plot_suffix_lengths(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """The paper's Table 1 as bars: the share of scored tokens per effective n of the ∞-gram."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=120)
    ax.bar(table["bin"].astype(str), 100 * table["share"].to_numpy(dtype=np.float64), color="C2")
    ax.set_xlabel("effective n of the ∞-gram (longest matching suffix + 1)")
    ax.set_ylabel("share of scored tokens (%)")
    ax.set_title(f"∞-gram suffix lengths over {int(table['n_tokens'].iloc[0])} tokens", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return os.fspath(path)
