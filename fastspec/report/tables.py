"""Tables out: a DataFrame written as CSV plus Markdown, for the analyses (pass@k,
correlations, ablation, the toy model) and the report page."""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd

from .._files import write_csv, write_text
from ..analyses.correlation import correlation_table
from ..analyses.toy import TOL, conditions_table
from .figures import plot_conditions


def _cell(value: Any, digits: int) -> str:
    if value is pd.NA:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.{max(digits - 1, 1)}e}"
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, *, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (floats to ``digits`` decimals, small p-values in
    scientific notation, NaN as –)."""
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def write_table(frame: pd.DataFrame, out_dir: str | os.PathLike, stem: str, *, title: str | None = None,
                digits: int = 4) -> tuple[str, str]:
    """Write ``stem.csv`` and ``stem.md`` into ``out_dir``; return their paths."""
    csv = write_csv(frame, os.path.join(out_dir, f"{stem}.csv"))
    return csv, write_markdown(frame, os.path.join(out_dir, f"{stem}.md"), title=title, digits=digits)


def write_markdown(frame: pd.DataFrame, path: str | os.PathLike, *, title: str | None = None, digits: int = 4) -> str:
    """:func:`markdown_table` of ``frame`` under an optional ``## title`` into ``path``."""
    return write_text(path, (f"## {title}\n\n" if title else "") + markdown_table(frame, digits=digits) + "\n")


def write_correlations(frame: pd.DataFrame, out_dir: str | os.PathLike) -> tuple[str, str]:
    """``correlations.csv`` (long: one row per metric and score, full precision) and
    ``correlations.md`` (Table C.2 layout) in ``out_dir``."""
    layer = frame.attrs.get("layer")
    title = "Correlations across checkpoints" + (f" (layer {layer})" if layer is not None else "")
    md = write_markdown(correlation_table(frame), os.path.join(out_dir, "correlations.md"), title=title)
    return write_csv(frame, os.path.join(out_dir, "correlations.csv")), md  # the long table, full precision


def write_conditions(runs: dict[str, Any], out_dir: str | os.PathLike, *, tol: float = TOL) -> tuple[str, str]:
    """``toy.csv`` (:func:`fastspec.toy.conditions_table`: every run's trajectory with its
    settings) and ``toy.png`` (:func:`~fastspec.report.figures.plot_conditions`) in
    ``out_dir``; returns their paths."""
    out_dir = os.fspath(out_dir)
    csv = write_csv(conditions_table(runs), os.path.join(out_dir, "toy.csv"))
    return csv, plot_conditions(runs, os.path.join(out_dir, "toy.png"), tol=tol)
