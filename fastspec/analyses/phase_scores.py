"""What the geometry and the scores do in each phase, and how that compares with the paper.

The paper (Li, Ghosh, Richards et al., 2025) describes three phases of pretraining from the
last layer's RankMe and α: a warmup collapse, entropy-seeking (RankMe up, α down) and
compression-seeking (RankMe down, α up). It finds distributional memorization peaking at the
end of entropy-seeking and downstream scores still improving during compression-seeking.
:func:`phase_scores` tabulates, for each run of consecutive checkpoints with one phase label
(:func:`fastspec.phases`), every metric's value where the run starts and where it ends;
:func:`paper_comparison` reads that table and says, claim by claim, what matches the paper
and what does not. Nothing in the sentences is fixed text about the outcome: each is computed
from the run's numbers.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

ENTROPY, COMPRESSION = "entropy-seeking", "compression-seeking"
#: The per-checkpoint scores compared, when the scores table has them.
SCORES = ("cloze_accuracy", "pass@1", "memorization")
#: A memorization peak within this fraction of the step where entropy-seeking ends counts as
#: "at the end of entropy-seeking" (checkpoints are spaced; the peak of a noisy score wanders).
PEAK_TOLERANCE = 0.25
#: Where the scores come with standard errors (``<score>_se``), a change over a phase counts
#: as a rise or a fall only beyond this many standard errors of the difference (the two
#: checkpoints' errors taken as independent).
SIGNIFICANT = 2.0


def phase_scores(labelled: pd.DataFrame, scores: pd.DataFrame | None = None, *,
                 columns: Sequence[str] = SCORES) -> pd.DataFrame:
    """One row per run of consecutive checkpoints with the same phase label.

    Parameters
    ----------
    labelled
        :func:`fastspec.phases`' table: ``step``, ``rankme``, ``alpha``, ``phase``, in
        training order.
    scores
        Per-checkpoint scores with a ``step`` column (the demo's ``scores.csv``), or None. A
        score's standard error, where known, is the column ``<score>_se``.
    columns
        The score columns reported, where ``scores`` has them.

    Returns
    -------
    pandas.DataFrame
        ``phase``, ``first_step``, ``last_step``, ``n_checkpoints``, and for ``rankme``,
        ``alpha`` and each score ``<metric>_start`` and ``<metric>_end``: the value at the
        run's first and last checkpoint. A run is measured from the last checkpoint of the
        run before it (where the move it is named for began), as the phase rule cuts runs at
        extrema; the first run from its own first checkpoint. A score is also given its
        ``<score>_peak_step``: the step of its highest value over the whole trajectory (the
        same in every row), and, where ``scores`` has them, ``<score>_se_start`` and
        ``<score>_se_end``.
    """
    frame = labelled[["step", "rankme", "alpha", "phase"]].reset_index(drop=True)
    present: list[str] = []
    errors: list[str] = []
    if scores is not None:
        present = [c for c in columns if c in scores.columns]
        errors = [f"{c}_se" for c in present if f"{c}_se" in scores.columns]
        frame = frame.merge(scores[["step", *present, *errors]], on="step", how="left")
    metrics = ["rankme", "alpha", *present, *errors]
    labels = frame["phase"].tolist()
    rows, start = [], 0
    for i in range(1, len(labels) + 1):
        if i < len(labels) and labels[i] == labels[start]:
            continue
        first = start - 1 if start > 0 else start  # a run's move starts at the previous run's last checkpoint
        row: dict[str, Any] = {"phase": labels[start], "first_step": int(frame["step"][first]),
                               "last_step": int(frame["step"][i - 1]), "n_checkpoints": i - start}
        for m in metrics:
            row[f"{m}_start"], row[f"{m}_end"] = float(frame[m][first]), float(frame[m][i - 1])
        for m in present:
            values = frame[m].to_numpy(dtype=np.float64)
            row[f"{m}_peak_step"] = int(frame["step"][int(np.nanargmax(values))]) if np.isfinite(values).any() else None
        rows.append(row)
        start = i
    return pd.DataFrame(rows)


def _move(start: float, end: float, digits: int = 3) -> str:
    return f"{start:.{digits}f} → {end:.{digits}f}"


def _direction(start: float, end: float) -> str:
    if not (math.isfinite(start) and math.isfinite(end)) or start == end:
        return "stays"
    return "rises" if end > start else "falls"


def _score_move(row: Any, name: str, col: str) -> tuple[str, float | None]:
    """"pass@1 rises (0.021 → 0.025, 0.9 standard errors)" and the change in standard errors
    of the difference (None without standard errors)."""
    start, end = row[f"{col}_start"], row[f"{col}_end"]
    text, z = f"{name} {_direction(start, end)} ({_move(start, end)}", None
    if f"{col}_se_start" in row:
        se = math.hypot(row[f"{col}_se_start"], row[f"{col}_se_end"])
        if se > 0 and math.isfinite(se):
            z = (end - start) / se
            text += f", {abs(z):.1f} standard errors"
    return text + ")", z


def paper_comparison(table: pd.DataFrame) -> str:
    """One paragraph: what of the paper's picture this run reproduces, and what it does not.

    Parameters
    ----------
    table
        :func:`phase_scores`' table.

    Returns
    -------
    str
        Sentences on the phases found (with the compression fall as a share of peak
        RankMe), α in each phase, the memorization peak against the end of entropy-seeking,
        and the scores during compression-seeking, each followed by whether it matches the
        paper. Where the table has the scores' standard errors, a score's change counts only
        beyond :data:`SIGNIFICANT` standard errors of the difference.
    """
    phases = table["phase"].tolist()
    found = [p for p in ("warmup", ENTROPY, COMPRESSION) if p in phases]
    parts = [f"Phases found on the last layer: {', '.join(found) or 'none'}"
             + (" — all three of the paper's (matches)." if len(found) == 3
                else f" — not all three of the paper's (missing: {', '.join(p for p in ('warmup', ENTROPY, COMPRESSION) if p not in found)}).")]
    comp = table[table["phase"] == COMPRESSION]
    ent = table[table["phase"] == ENTROPY]
    if len(ent):
        before = ent[ent["last_step"] <= comp.iloc[-1]["first_step"]] if len(comp) else ent
        e = (before if len(before) else ent).iloc[-1]  # the entropy-seeking run the compression follows
        a = _direction(e["alpha_start"], e["alpha_end"])
        parts.append(f"Entropy-seeking (steps {e['first_step']}–{e['last_step']}): RankMe "
                     f"{_move(e['rankme_start'], e['rankme_end'], 1)}, α {a} ({_move(e['alpha_start'], e['alpha_end'])}; "
                     f"the paper: α falls — {'matches' if a == 'falls' else 'does not match'}).")
    if len(comp):
        c = comp.iloc[-1]
        fall = 1 - c["rankme_end"] / c["rankme_start"]
        a = _direction(c["alpha_start"], c["alpha_end"])
        parts.append(f"Compression-seeking (steps {c['first_step']}–{c['last_step']}): RankMe "
                     f"{_move(c['rankme_start'], c['rankme_end'], 1)} ({fall:.0%} below its peak), α {a} "
                     f"({_move(c['alpha_start'], c['alpha_end'])}; the paper: α rises while RankMe falls — "
                     f"{'matches' if a == 'rises' else 'does not match'}).")
        if "memorization_start" in c:
            peak, boundary = c["memorization_peak_step"], c["first_step"]
            near = peak is not None and abs(peak - boundary) <= PEAK_TOLERANCE * boundary
            m = _direction(c["memorization_start"], c["memorization_end"])
            parts.append(f"Memorization (Spearman ρ) peaks at step {peak}; entropy-seeking ends at step {boundary} "
                         f"(the paper: memorization peaks at the end of entropy-seeking — "
                         f"{'matches' if near else 'does not match'}, within {PEAK_TOLERANCE:.0%} of that step "
                         f"counting as the end); during compression-seeking it {m} "
                         f"({_move(c['memorization_start'], c['memorization_end'])}).")
        downs = [(name, col) for name, col in (("multiple-choice accuracy", "cloze_accuracy"), ("pass@1", "pass@1"))
                 if f"{col}_start" in c]
        if downs:
            moves = [_score_move(c, name, col) for name, col in downs]
            zs = [z for _, z in moves]
            if any(z is None for z in zs):  # no standard errors: the direction alone
                verdict = "matches" if all(c[f"{col}_end"] > c[f"{col}_start"] for _, col in downs) \
                    else "does not match"
            elif all(z > SIGNIFICANT for z in zs):
                verdict = "matches"
            elif any(z < -SIGNIFICANT for z in zs):
                verdict = "does not match"
            else:
                verdict = f"not shown: no score moved by more than {SIGNIFICANT:g} standard errors"
            parts.append(f"During compression-seeking {' and '.join(m for m, _ in moves)} (the paper: downstream "
                         f"scores improve in compression-seeking — {verdict}).")
    elif len(ent):
        parts.append("No compression-seeking phase: the paper's claims about it (α rising while RankMe falls, "
                     "scores improving, memorization past its peak) cannot be checked on this run.")
    return " ".join(parts)
