"""The paper's three pretraining phases, labelled from RankMe and α trajectories.

The paper marked them by eye: "warmup" coincides with the learning-rate warmup (rapid
collapse), "entropy-seeking" is RankMe rising and α falling, "compression-seeking" is
RankMe falling and α rising. :func:`phases` makes that a rule:

1. Take one layer's trajectory (default: the last traced layer, as the paper's Figure 2),
   in training order.
2. Cut RankMe into monotone runs with a zig-zag filter of relative threshold ``tol``: a run
   ends at an extremum only once RankMe has moved more than ``tol`` (relative) the other
   way, so noise smaller than ``tol`` never splits a run. Rising runs are entropy-seeking,
   falling runs compression-seeking; a checkpoint takes the label of the run that ends at
   or passes through it (the first checkpoint, that of the first run). A trajectory that
   never moves by more than ``tol`` either way is one run with no trend, labelled ``flat``
   (a fourth label: too little movement to name a phase).
3. Warmup: checkpoints at step ≤ ``warmup_steps`` when it is given (the learning-rate
   warmup), and the rest of a falling run under way at its last one (the collapse often
   bottoms out just after the learning rate peaks); otherwise, when the first run falls
   (the early collapse), that run.

``tol`` defaults to 10%: the paper's phases move RankMe by tens of percent, while one
checkpoint's wobble on a few thousand sequences is a few percent.
4. α is not used to label, but ``alpha_agrees`` says whether α moved the opposite way to
   RankMe over the same run, as the paper describes (None where α is missing).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .trace import load_trace

WARMUP, ENTROPY, COMPRESSION = "warmup", "entropy-seeking", "compression-seeking"


def pick_layer(frame: Any, layer: Any, what: str = "the trace") -> int:
    """The layer index ``layer`` names in ``frame``'s ``layer`` column: ``"last"`` is the
    deepest; anything else must be one of them."""
    layers = sorted(int(v) for v in frame["layer"].unique())
    if layer == "last":
        return layers[-1]
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or int(layer) not in layers:
        raise ValueError(f"layer {layer!r} is not in {what} (layers: {layers})")
    return int(layer)


def zigzag_runs(values: np.ndarray, tol: float, se: np.ndarray | None = None,
                se_multiple: float = 0.0) -> list[tuple[int, int, int]]:
    """Monotone runs (start, end, direction ±1) of ``values`` that move by more than ``tol``
    relative to their starting extremum; the end of one run is the start of the next. With
    standard errors ``se`` and ``se_multiple`` = z, a move must also exceed z·√(se_a² + se_b²)
    between the two points it compares."""
    v = np.asarray(values, dtype=np.float64)
    e = np.zeros_like(v) if se is None else np.nan_to_num(np.asarray(se, dtype=np.float64))

    def beyond(i: int, ref: int) -> bool:
        gap = abs(v[i] - v[ref])
        return bool(gap > tol * abs(v[ref]) and gap > se_multiple * float(np.hypot(e[i], e[ref])))

    if len(v) < 2:
        return [(0, len(v) - 1, 0)] if len(v) else []
    runs: list[tuple[int, int, int]] = []
    start, direction, extreme = 0, 0, 0  # direction 0: no move beyond tol yet
    for i in range(1, len(v)):
        if direction == 0:
            if beyond(i, start):
                direction, extreme = (1 if v[i] > v[start] else -1), i
            continue
        if (v[i] - v[extreme]) * direction > 0:
            extreme = i
        elif beyond(i, extreme):
            runs.append((start, extreme, direction))
            start, direction, extreme = extreme, -direction, i
    runs.append((start, len(v) - 1, direction))
    return runs


def phases(results: Any, *, layer: int | str = "last", warmup_steps: int | None = None, tol: float = 0.1,
           se_multiple: float | None = None) -> Any:
    """Label every checkpoint of a trace ``warmup``, ``entropy-seeking`` or ``compression-seeking``.

    The paper (Li, Ghosh, Richards et al., 2025) marked its three pretraining phases by eye;
    this is a rule for them, on one layer's trajectory in training order:

    1. RankMe is cut into monotone runs by a zig-zag filter of relative threshold ``tol``:
       a run ends at an extremum only once RankMe has moved more than ``tol`` (relative)
       the other way, so noise smaller than ``tol`` never splits a run. Rising runs are
       entropy-seeking, falling runs compression-seeking; a trajectory that never moves by
       more than ``tol`` is one run labelled ``flat``.
    2. Warmup: the checkpoints at a step up to ``warmup_steps`` when it is given (the
       learning-rate warmup); otherwise, when the first run falls (the early collapse),
       that run.
    3. α does not label; ``alpha_agrees`` says whether α moved the opposite way to RankMe
       over the same run, as the paper describes.

    Parameters
    ----------
    results : str, os.PathLike or pandas.DataFrame
        A results directory, or `fastspec.load_trace`'s DataFrame (the columns
        ``checkpoint``, ``step``, ``layer``, ``rankme`` and ``alpha`` are used).
    layer : int or 'last', default 'last'
        The layer whose trajectory is labelled (``'last'``: the deepest traced, as the
        paper's Figure 2).
    warmup_steps : int, optional
        The learning-rate warmup's length in steps; None: the first run, when it falls.
    tol : float, default 0.1
        The relative move that ends a run, in (0, 1). The paper's phases move RankMe by tens
        of percent, while one checkpoint's wobble on a few thousand texts is a few percent.
    se_multiple : float, optional
        ``z``, for a trace made with ``folds``: a change of direction must also exceed z
        jackknife standard errors of the two RankMe values it compares.

    Returns
    -------
    pandas.DataFrame
        One row per checkpoint, in training order: ``checkpoint``, ``step``, ``layer``,
        ``rankme``, ``alpha``, ``phase``, ``alpha_agrees`` (None where α is missing or the
        run is flat) and ``rule``, the rule used, in words.

    Raises
    ------
    ValueError
        ``tol`` outside (0, 1), a ``layer`` not in the trace, ``warmup_steps`` with a
        checkpoint of unknown step, or ``se_multiple`` for a trace without standard errors.

    Examples
    --------
    >>> import pandas as pd
    >>> steps = [0, 100, 1000, 4000, 16000, 64000, 143000]
    >>> frame = pd.DataFrame({"checkpoint": [f"step{s}" for s in steps], "step": steps, "layer": 12,
    ...                       "rankme": [60.0, 12.0, 35.0, 90.0, 140.0, 95.0, 70.0],
    ...                       "alpha": [0.9, 1.6, 1.2, 0.8, 0.6, 0.8, 0.9]})
    >>> fastspec.phases(frame)[["step", "rankme", "phase", "alpha_agrees"]]
         step  rankme                phase  alpha_agrees
    0       0    60.0               warmup          True
    1     100    12.0               warmup          True
    2    1000    35.0      entropy-seeking          True
    3    4000    90.0      entropy-seeking          True
    4   16000   140.0      entropy-seeking          True
    5   64000    95.0  compression-seeking          True
    6  143000    70.0  compression-seeking          True
    """
    import pandas as pd

    frame = results if isinstance(results, pd.DataFrame) else load_trace(results)
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    chosen = pick_layer(frame, layer)
    sub = frame[frame["layer"] == chosen].reset_index(drop=True)
    rank = sub["rankme"].to_numpy(dtype=np.float64)
    alpha = sub["alpha"].to_numpy(dtype=np.float64)
    labels = [ENTROPY] * len(sub)
    agrees: list[bool | None] = [None] * len(sub)
    rule = f"zig-zag, moves > {tol:g} relative"
    se = None
    if se_multiple is not None:
        if "rankme_se" not in sub or sub["rankme_se"].isna().all():
            raise ValueError("se_multiple needs RankMe standard errors: trace with folds=K (fastspec trace --folds K)")
        se = sub["rankme_se"].to_numpy(dtype=np.float64)
        rule += f" and > {se_multiple:g} jackknife SE"
    runs = zigzag_runs(rank, tol, se, se_multiple or 0.0)
    for k, (start, end, direction) in enumerate(runs):
        label = ENTROPY if direction > 0 else COMPRESSION
        if direction == 0:  # flat within tol throughout: no trend to name
            label = "flat"
        a_move = alpha[end] - alpha[start]
        agree = None if np.isnan(a_move) or direction == 0 else bool(np.sign(a_move) == -direction)
        for i in range(start if k == 0 else start + 1, end + 1):
            labels[i], agrees[i] = label, agree
    if warmup_steps is not None:
        steps = sub["step"].to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(steps).any():
            raise ValueError("warmup_steps needs every checkpoint's step, and some are unknown")
        inside = np.flatnonzero(steps <= warmup_steps)
        for i in inside:
            labels[i] = WARMUP
        # The collapse the warmup starts can bottom out a checkpoint or two after the learning
        # rate peaks: a fall under way at the warmup's last checkpoint is warmup to its end,
        # not a compression-seeking phase.
        for start, end, direction in runs:
            if len(inside) and direction < 0 and start <= inside[-1] < end:
                for i in range(inside[-1] + 1, end + 1):
                    labels[i] = WARMUP
    elif runs and runs[0][2] < 0:
        for i in range(runs[0][0], runs[0][1] + 1):
            labels[i] = WARMUP
    out = sub[["checkpoint", "step", "layer", "rankme", "alpha"]].copy()
    out["phase"] = labels
    out["alpha_agrees"] = agrees
    out["rule"] = rule + (f"; warmup: steps <= {warmup_steps}" if warmup_steps is not None else "; warmup: a first fall")
    return out
