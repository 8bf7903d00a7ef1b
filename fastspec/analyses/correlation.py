"""Correlation tables between geometry and per-checkpoint scores (the paper's Table C.2).

Pearson's r and Spearman's ρ, each with its two-sided p-value from ``scipy.stats``
(``pearsonr``, ``spearmanr``), between a geometry metric (RankMe, α, …) of one layer across
checkpoints and each score column of a per-checkpoint table (accuracy, memorization, loss,
pass@k, …), matched on the training step.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..models.phases import pick_layer
from ..models.trace import load_trace
from .inputs import read_table, table_name

MIN_POINTS = 3


def _geometry_frame(geometry: Any) -> pd.DataFrame:
    if isinstance(geometry, pd.DataFrame):
        return geometry
    path = os.fspath(geometry)
    if os.path.isdir(path):
        return load_trace(path)
    return read_table(path)


def _one_layer(frame: pd.DataFrame, layer: int | str | None) -> tuple[pd.DataFrame, int | None]:
    if "layer" not in frame.columns:
        if layer not in (None, "last"):
            raise ValueError(f"layer={layer!r} was asked for, but the geometry table has no 'layer' column")
        return frame, None
    chosen = pick_layer(frame, "last" if layer is None else layer, "the geometry table")
    return frame[frame["layer"] == chosen], chosen


def _pair(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"n": int(keep.sum()), "pearson_r": np.nan, "pearson_p": np.nan, "spearman_rho": np.nan, "spearman_p": np.nan}
    # scipy warns and returns NaN for a constant input; fastspec returns NaN without the noise.
    if x.size >= MIN_POINTS and np.ptp(x) > 0 and np.ptp(y) > 0:
        r = stats.pearsonr(x, y)
        rho = stats.spearmanr(x, y)
        out.update(pearson_r=float(r.statistic), pearson_p=float(r.pvalue),
                   spearman_rho=float(rho.statistic), spearman_p=float(rho.pvalue))
    return out


def correlate(geometry: Any, scores: Any, *, metrics: Sequence[str] = ("rankme", "alpha"), on: str = "step",
              layer: int | str | None = "last", score_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Pearson and Spearman correlations (with p-values) of each geometry metric with each
    score, across checkpoints (the paper's Table C.2).

    Rows are matched on ``on`` (the step); checkpoints with a NaN metric or score are left
    out of that pair, and a pair with fewer than 3 points, or a constant side, gets NaN. The
    p-values are two-sided, from ``scipy.stats.pearsonr`` and ``spearmanr``.

    Parameters
    ----------
    geometry : str, os.PathLike or pandas.DataFrame
        A trace results directory, a DataFrame from :func:`fastspec.load_trace`, or a CSV,
        with an ``on`` column, the ``metrics`` columns, and ``layer`` if it holds several
        layers.
    scores : str, os.PathLike or pandas.DataFrame
        A DataFrame or CSV with the ``on`` column and one numeric column per score
        (accuracy, memorization, loss, pass@k, …), one row per checkpoint.
    metrics : sequence of str, default ("rankme", "alpha")
        The geometry columns to correlate.
    on : str, default "step"
        The column that matches checkpoints between the two tables.
    layer : int or "last", default "last"
        The layer of ``geometry`` to use when it holds several (``"last"``: the deepest).
    score_columns : sequence of str, optional
        The score columns to correlate (default: every numeric, non-boolean column but
        ``on`` and the standard errors, columns named ``<score>_se``).

    Returns
    -------
    pandas.DataFrame
        One row per (metric, score) with ``n``, ``pearson_r``, ``pearson_p``,
        ``spearman_rho`` and ``spearman_p``; ``attrs`` hold the ``layer`` used, ``on``, and
        the steps found on only one side (``only_in_geometry``, ``only_in_scores``).

    Raises
    ------
    ValueError
        A missing ``on``, metric, layer or score column, a checkpoint twice in one table, no
        numeric score column, or fewer than 3 checkpoints in both tables. Errors name the
        file.

    See Also
    --------
    fastspec.load_trace : The geometry table of a trace.
    fastspec.pass_at_k : A score to correlate with.

    Examples
    --------
    >>> import pandas as pd
    >>> geometry = pd.DataFrame({"step": [0, 100, 200, 400, 800],
    ...                          "rankme": [3.1, 9.5, 14.2, 12.8, 11.9], "alpha": [2.1, 1.2, 0.8, 0.9, 1.0]})
    >>> scores = pd.DataFrame({"step": [0, 100, 200, 400, 800, 1600],
    ...                        "accuracy": [0.25, 0.31, 0.40, 0.46, 0.52, 0.55]})
    >>> table = fastspec.correlate(geometry, scores)
    >>> print(table[["metric", "score", "n", "pearson_r", "spearman_rho"]].round(2).to_string(index=False))
    metric    score  n  pearson_r  spearman_rho
    rankme accuracy  5       0.78           0.6
     alpha accuracy  5      -0.77          -0.6
    >>> table.attrs["only_in_scores"]
    [1600]
    """
    geo, used_layer = _one_layer(_geometry_frame(geometry), layer)
    sc = read_table(scores)
    for frame, what in ((geo, "the geometry table"), (sc, table_name(scores))):
        if on not in frame.columns:
            raise ValueError(f"{what} has no {on!r} column to match checkpoints on "
                             f"(columns: {', '.join(map(str, frame.columns))})")
    missing = [m for m in metrics if m not in geo.columns]
    if missing:
        raise ValueError(f"the geometry table has no column {missing[0]!r} (columns: {', '.join(map(str, geo.columns))})")
    if score_columns is None:
        score_columns = [c for c in sc.columns if c != on and not c.endswith("_se")
                         and pd.api.types.is_numeric_dtype(sc[c]) and not pd.api.types.is_bool_dtype(sc[c])]
    else:
        absent = [c for c in score_columns if c not in sc.columns]
        if absent:
            raise ValueError(f"{table_name(scores)} has no column {absent[0]!r}")
    if not score_columns:
        raise ValueError(f"{table_name(scores)} has no numeric score column besides {on!r}")
    for frame, what in ((geo, "the geometry table"), (sc, table_name(scores))):
        dup = frame[on][frame[on].duplicated()]
        if not dup.empty:
            raise ValueError(f"{what} has {on}={dup.iloc[0]} twice: one row per checkpoint is needed")
    merged = geo[[on, *metrics]].merge(sc[[on, *score_columns]], on=on, how="inner")
    if len(merged) < MIN_POINTS:
        raise ValueError(f"only {len(merged)} checkpoints appear in both tables (matched on {on!r}); "
                         f"correlations need at least {MIN_POINTS}. Geometry has {sorted(geo[on].tolist())[:10]}…, "
                         f"{table_name(scores)} has {sorted(sc[on].tolist())[:10]}…")
    rows = []
    for metric in metrics:
        for score in score_columns:
            x = pd.to_numeric(merged[metric], errors="coerce").to_numpy(float)
            y = pd.to_numeric(merged[score], errors="coerce").to_numpy(float)
            rows.append({"metric": metric, "score": score, **_pair(x, y)})
    out = pd.DataFrame(rows)
    out.attrs.update(layer=used_layer, on=on,
                     only_in_geometry=sorted(set(geo[on]) - set(sc[on])),
                     only_in_scores=sorted(set(sc[on]) - set(geo[on])))
    return out


def _cell(r: float, p: float) -> str:
    return "–" if np.isnan(r) else f"{r:.3f} ({p:.2e})"


def correlation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table C.2 layout: one row per score, one column per metric and
    statistic, cells "r (p-value)"."""
    wide: dict[str, dict[str, str]] = {}
    for row in frame.itertuples(index=False):
        cells = wide.setdefault(row.score, {"score": row.score, "n": str(row.n)})
        cells[f"{row.metric} Pearson r (p)"] = _cell(row.pearson_r, row.pearson_p)
        cells[f"{row.metric} Spearman ρ (p)"] = _cell(row.spearman_rho, row.spearman_p)
    return pd.DataFrame(list(wide.values()))
