"""Figures of a trace: RankMe and α against training step per layer, with the phases shaded
(the paper's Figure 2), and layer × step heat maps (its Figure 3)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

PHASE_COLORS = {"warmup": "#bbbbbb", "entropy-seeking": "#9ecae1", "compression-seeking": "#fdae6b", "flat": "#eeeeee"}


def _x(frame: Any) -> tuple[np.ndarray, str]:
    """Training step when every checkpoint has one, else the checkpoint's order."""
    steps = frame["step"]
    if steps.isna().any():
        return frame["index"].to_numpy(dtype=np.float64), "checkpoint (order given)"
    return steps.to_numpy(dtype=np.float64), "training step"


def step_axis(ax: Any, x: np.ndarray) -> None:
    positive = x[x > 0]
    if len(positive) and positive.max() / positive.min() > 50:  # Pythia-style log-spaced checkpoints
        ax.set_xscale("symlog", linthresh=float(positive.min()))


def plot_trace(results: Any, out_dir: str | os.PathLike, *, phase_layer: int | str = "last",
               warmup_steps: int | None = None) -> list[str]:
    """Write ``trajectories.png`` and ``heatmap.png`` into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from .phases import phases
    from .trace import load_trace

    frame = results if isinstance(results, pd.DataFrame) else load_trace(results)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    layers = sorted(frame["layer"].unique())
    labelled = phases(frame, layer=phase_layer, warmup_steps=warmup_steps)
    px, xlabel = _x(frame[frame["layer"] == labelled["layer"].iloc[0]])
    cmap = plt.get_cmap("viridis")

    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for ax, metric, name in zip(axes, ("rankme", "alpha"), ("RankMe", "α (alpha-ReQ)")):
        _shade(ax, px, labelled["phase"].tolist())
        for j, layer in enumerate(layers):
            sub = frame[frame["layer"] == layer]
            x, _ = _x(sub)
            ax.plot(x, sub[metric].to_numpy(dtype=np.float64), marker="o", ms=3, lw=1.2,
                    color=cmap(j / max(len(layers) - 1, 1)), label=f"layer {layer}")
        ax.set_ylabel(name)
        step_axis(ax, px)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(xlabel)
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
    fig.savefig(traj, dpi=130, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4 + 0.08 * len(layers)))
    order = frame.drop_duplicates("checkpoint")[["checkpoint", "step", "index"]]
    ticks = [str(s) if not pd.isna(s) else str(i) for s, i in zip(order["step"], order["index"])]
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
    fig.savefig(heat, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return [traj, heat]


def _shade(ax: Any, x: np.ndarray, labels: list[str]) -> None:
    """Shade each checkpoint's span (midpoint to midpoint) with its phase's colour."""
    if len(x) == 0:
        return
    edges = np.concatenate([[x[0]], (x[1:] + x[:-1]) / 2, [x[-1]]])
    for i, label in enumerate(labels):
        ax.axvspan(edges[i], edges[i + 1], color=PHASE_COLORS.get(label, "#ffffff"), alpha=0.5, lw=0)
