"""pass@k: the unbiased estimator of Chen et al. (2021), vectorised, and per-problem tables.

For a problem with ``n`` sampled answers of which ``c`` are correct, the probability that at
least one of ``k`` answers drawn without replacement is correct is

    pass@k = 1 − C(n−c, k) / C(n, k) = 1 − ∏_{i=n−c+1}^{n} (1 − k/i),

and it is 1 when n − c < k. The product form never forms a binomial coefficient (C(512, 256)
has 153 digits); fastspec sums ``log1p(−k/i)`` and takes ``−expm1`` of the sum, so that a
pass@k near 0 (small c, small k) keeps its relative precision as well.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .inputs import read_table, table_name


def _as_counts(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            bad = arr[~(np.isfinite(arr) & (arr == np.round(arr)))].flat[0]
            raise ValueError(f"{name} must hold whole numbers, got {bad!r}")
    return arr.astype(np.int64)


def pass_at_k(n: Any, c: Any, k: Any) -> np.ndarray | float:
    """Unbiased pass@k of Chen et al. (2021) for ``n`` samples with ``c`` correct.

    pass@k = 1 − C(n−c, k) / C(n, k), the probability that at least one of ``k`` answers drawn
    without replacement from the ``n`` is correct; 1 when n − c < k. Computed as
    −expm1(Σ_{i=n−c+1}^{n} log1p(−k/i)), which forms no binomial coefficient and keeps the
    relative precision of a pass@k near 0.

    Parameters
    ----------
    n : int or array_like of int
        Samples per problem, at least 1.
    c : int or array_like of int
        Correct samples, 0 ≤ c ≤ n.
    k : int or array_like of int
        Answers drawn, 1 ≤ k ≤ n: with k > n there is no way to draw k of the n samples, and
        that is an error, not a 1.

    Returns
    -------
    float or numpy.ndarray
        pass@k, of the broadcast shape of ``n``, ``c`` and ``k`` (scalars, lists or arrays
        of whole numbers); a float when all three are scalars.

    Raises
    ------
    ValueError
        Counts out of range (the message names the first offending n, c, k and where it is),
        numbers that are not whole, or shapes that do not broadcast.
    TypeError
        Counts that are not numbers (booleans included).

    Examples
    --------
    >>> round(fastspec.pass_at_k(10, 3, 1), 3), round(fastspec.pass_at_k(10, 3, 5), 3)
    (0.3, 0.917)
    >>> fastspec.pass_at_k(10, 8, 5)  # fewer than k wrong answers: certain
    1.0

    One row per problem, one column per k:

    >>> np.round(fastspec.pass_at_k(100, np.array([1, 50])[:, None], [1, 10, 100]), 3)
    array([[0.01 , 0.1  , 1.   ],
           [0.5  , 0.999, 1.   ]])
    >>> fastspec.pass_at_k(5, 2, 6)
    Traceback (most recent call last):
    ...
    ValueError: k must be at most n (cannot draw k of n samples): n=5, c=2, k=6
    """
    arrays = [_as_counts(name, v) for name, v in (("n", n), ("c", c), ("k", k))]
    try:
        n_, c_, k_ = np.broadcast_arrays(*arrays)
    except ValueError:
        shapes = ", ".join(f"{name} {a.shape}" for name, a in zip("nck", arrays))
        raise ValueError(f"n, c and k must broadcast against each other, got {shapes}; for one row per problem "
                         "and one column per k, pass c[:, None] (and n[:, None] if n is per problem)") from None
    checks = [(n_ < 1, "n must be at least 1"), (c_ < 0, "c must be at least 0"), (c_ > n_, "c must be at most n"),
              (k_ < 1, "k must be at least 1"), (k_ > n_, "k must be at most n (cannot draw k of n samples)")]
    for bad, why in checks:
        if np.any(bad):
            i = np.argwhere(bad)[0]
            at = tuple(int(j) for j in i)
            raise ValueError(f"{why}: n={int(n_[at])}, c={int(c_[at])}, k={int(k_[at])}"
                             + (f" at index {at}" if n_.ndim else ""))
    certain = n_ - c_ < k_
    out = np.ones(n_.shape)
    # One running sum per distinct (n, k): Σ_{i=n−c+1}^{n} log1p(−k/i) is its c-th prefix sum
    # over i = n, n−1, …, k+1, so every c of that (n, k) is a lookup. Tables repeat n (the
    # samples per problem) and k, so this is a handful of O(n) sums however many problems.
    live = ~certain
    pairs, which = np.unique(np.stack([n_[live], k_[live]]), axis=1, return_inverse=True)
    c_live = c_[live]
    order = np.argsort(which.reshape(-1), kind="stable")
    bounds = np.searchsorted(which.reshape(-1)[order], np.arange(pairs.shape[1] + 1))
    values = np.empty(c_live.shape)
    for j, (n, k) in enumerate(pairs.T):
        prefix = np.concatenate([[0.0], np.cumsum(np.log1p(-k / np.arange(n, k, -1, dtype=np.float64)))])
        sel = order[bounds[j]:bounds[j + 1]]
        values[sel] = 0.0 - np.expm1(prefix[c_live[sel]])  # 0.0 − x: c = 0 gives +0.0, not −0.0
    out[live] = values
    return float(out) if out.ndim == 0 else out


def pass_at_k_table(table: pd.DataFrame | str | os.PathLike, ks: Sequence[int], *, by: str | Sequence[str] | None = None,
                    problem: str = "problem") -> pd.DataFrame:
    """Mean pass@k over problems, for every k in ``ks`` (and every group of ``by``).

    ``table``: a DataFrame or CSV path with either one row per problem and columns ``n``
    (samples) and ``c`` (correct ones), or one row per sample with a boolean ``correct``
    column and a ``problem`` column (n and c are then counted). ``by``: column(s) such as
    ``checkpoint`` or ``step`` to report separately. Returns one row per group with the
    columns ``pass@k`` for each k, ``n_problems`` and ``n`` (the smallest sample count, which
    bounds k).
    """
    frame = read_table(table)
    groups = [by] if isinstance(by, str) else list(by or [])
    missing = [col for col in groups if col not in frame.columns]
    if missing:
        raise ValueError(f"{table_name(table)} has no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})")
    if {"n", "c"} <= set(frame.columns):
        counts = frame
    elif "correct" in frame.columns:
        if problem not in frame.columns:
            raise ValueError(f"{table_name(table)} has a 'correct' column but no {problem!r} column to group samples by")
        correct = frame["correct"]
        if correct.dtype != bool and not correct.isin([0, 1]).all():
            raise ValueError(f"{table_name(table)}: column 'correct' must be boolean (or 0/1)")
        counts = (frame.assign(correct=correct.astype(bool)).groupby(groups + [problem], sort=False)["correct"]
                  .agg(n="size", c="sum").reset_index())
    else:
        raise ValueError(f"{table_name(table)} needs columns 'n' and 'c' (one row per problem) or 'problem' and "
                         f"'correct' (one row per sample); it has {', '.join(map(str, frame.columns))}")
    if counts.empty:
        raise ValueError(f"{table_name(table)} holds no problems")
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks is empty: give at least one k")
    rows = []
    for key, sub in (counts.groupby(groups, sort=False) if groups else [((), counts)]):
        n, c = sub["n"].to_numpy(), sub["c"].to_numpy()
        row: dict[str, Any] = dict(zip(groups, key if isinstance(key, tuple) else (key,)))
        for k in ks:
            row[f"pass@{k}"] = float(np.mean(pass_at_k(n, c, k)))
        row.update(n_problems=len(sub), n=int(n.min()))
        rows.append(row)
    return pd.DataFrame(rows)
