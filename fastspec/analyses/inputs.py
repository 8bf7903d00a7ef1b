"""Tables in: a CSV file (or a DataFrame) that an analysis reads, with errors that name the
file."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd


def read_table(table: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """``table`` itself if it is a DataFrame, else the CSV file it names."""
    if isinstance(table, pd.DataFrame):
        return table
    path = os.fspath(table)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a CSV table")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such table: {path}")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path} as CSV: {err}") from err


def table_name(table: Any) -> str:
    """How an error message names ``table``."""
    return "the table" if isinstance(table, pd.DataFrame) else os.fspath(table)
