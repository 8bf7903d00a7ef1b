"""fastspec.models.phases: phase labels from RankMe trajectories (the rule in its docstring)."""

import numpy as np
import pandas as pd
import pytest

import fastspec
from fastspec.models.phases import zigzag_runs
from traceframes import trace_frame as _frame


def test_zigzag_runs_ignore_moves_smaller_than_tol():
    assert zigzag_runs(np.array([10, 10.2, 9.9, 10.1]), 0.05) == [(0, 3, 0)]
    assert zigzag_runs(np.array([10, 12, 15, 14.9, 11, 10]), 0.05) == [(0, 2, 1), (2, 5, -1)]
    assert zigzag_runs(np.array([10, 5, 4, 8, 20, 19.5, 20.5, 12]), 0.05) == [(0, 2, -1), (2, 6, 1), (6, 7, -1)]
    assert zigzag_runs(np.array([3.0]), 0.05) == [(0, 0, 0)]


def test_the_paper_s_three_phases():
    rank = [50, 20, 8, 12, 30, 45, 44.5, 40, 30, 28]
    alpha = [0.5, 0.9, 1.5, 1.2, 0.8, 0.6, 0.61, 0.7, 0.9, 1.0]
    got = fastspec.phases(_frame(rank, alpha))
    assert got["phase"].tolist() == ["warmup"] * 3 + ["entropy-seeking"] * 3 + ["compression-seeking"] * 4
    assert got["alpha_agrees"].tolist() == [True] * 10
    assert (got["layer"] == 1).all()


def test_warmup_steps_and_alpha_disagreement():
    rank = [10, 20, 30, 25, 20]
    alpha = [1.0, 1.2, 1.4, 1.3, 1.2]  # α moving with RankMe: not the paper's picture, so flagged
    got = fastspec.phases(_frame(rank, alpha), warmup_steps=10)
    assert got["phase"].tolist() == ["warmup", "warmup", "entropy-seeking", "compression-seeking", "compression-seeking"]
    assert got["alpha_agrees"].tolist()[2:] == [False, False, False]
    assert fastspec.phases(_frame(rank))["alpha_agrees"].isna().all()  # no α: unknown, not False
    assert fastspec.phases(_frame(rank), layer=0)["rankme"].tolist() == [r * 0.5 for r in rank]


def test_a_collapse_that_outlasts_the_warmup_is_warmup_to_its_bottom():
    """Steps 0, 10, … 50 with warmup_steps=20: RankMe rises, collapses from step 10 to its
    bottom at step 30 (past the warmup), then rises and falls. The fall under way at step 20
    is warmup up to step 30; the later fall (step 40 → 50) stays compression-seeking."""
    rank = [10, 13, 7, 4, 12, 9]
    got = fastspec.phases(_frame(rank), warmup_steps=20)
    assert got["phase"].tolist() == ["warmup"] * 4 + ["entropy-seeking", "compression-seeking"]
    # a warmup that ends on the bottom: nothing to extend
    assert fastspec.phases(_frame(rank), warmup_steps=30)["phase"].tolist()[3:] == ["warmup", "entropy-seeking",
                                                                                  "compression-seeking"]
    # a warmup that ends during a rise: the rise keeps its label
    assert fastspec.phases(_frame(rank), warmup_steps=0)["phase"].tolist()[:2] == ["warmup", "entropy-seeking"]


def test_errors():
    with pytest.raises(ValueError, match=r"layer 5 is not in the trace \(layers: \[0, 1\]\)"):
        fastspec.phases(_frame([1, 2, 3]), layer=5)
    with pytest.raises(ValueError, match="tol must be in"):
        fastspec.phases(_frame([1, 2, 3]), tol=0)
    frame = _frame([1, 2, 3])
    frame["step"] = pd.array([None, 1, 2] * 2, dtype="Int64")
    with pytest.raises(ValueError, match="warmup_steps needs every checkpoint's step"):
        fastspec.phases(frame, warmup_steps=1)


def test_a_new_phase_can_be_required_to_exceed_its_standard_errors():
    """RankMe 50 → 20 → 30 → 12: with SEs of 4, the rise to 30 is 1.8 SE (10/√(4²+4²)), real
    under the 10% rule but not beyond 2 SE, so the whole trajectory is one fall."""
    rank = [50, 35, 20, 30, 12]
    frame = _frame(rank)
    frame["rankme_se"] = 4.0
    plain = fastspec.phases(frame)
    assert plain["phase"].tolist() == ["warmup"] * 3 + ["entropy-seeking", "compression-seeking"]
    assert plain["rule"].iloc[0] == "zig-zag, moves > 0.1 relative; warmup: a first fall"
    strict = fastspec.phases(frame, se_multiple=2.0)
    assert strict["phase"].tolist() == ["warmup"] * 5
    assert strict["rule"].iloc[0] == "zig-zag, moves > 0.1 relative and > 2 jackknife SE; warmup: a first fall"
    assert zigzag_runs(np.array(rank, float), 0.1, np.full(5, 4.0), 2.0) == [(0, 4, -1)]
    with pytest.raises(ValueError, match=r"se_multiple needs RankMe standard errors: trace with folds=K"):
        fastspec.phases(_frame(rank), se_multiple=2.0)
