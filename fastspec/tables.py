"""Tables in and out: a CSV (or DataFrame) read with errors that name the file, and a
DataFrame written as CSV plus Markdown for the analyses (pass@k, correlations, ablation) and
the report."""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd


def read_table(table: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """``table`` itself if it is a DataFrame, else the CSV file it names."""
    if isinstance(table, pd.DataFrame):
        return table
    path = os.fspath(table)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such table: {path}")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path} as CSV: {err}") from err


def table_name(table: Any) -> str:
    """How an error message names ``table``."""
    return "the table" if isinstance(table, pd.DataFrame) else os.fspath(table)


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
    os.makedirs(out_dir, exist_ok=True)
    csv = os.path.join(out_dir, f"{stem}.csv")
    md = os.path.join(out_dir, f"{stem}.md")
    frame.to_csv(csv, index=False)
    with open(md, "w") as fh:
        fh.write((f"## {title}\n\n" if title else "") + markdown_table(frame, digits=digits) + "\n")
    return csv, md
