"""fastspec.analyses.phase_scores: per-phase start/end values and the comparison with the paper."""

import numpy as np
import pandas as pd
import pytest

from fastspec.analyses.phase_scores import PEAK_TOLERANCE, paper_comparison, phase_scores

STEPS = [0, 1, 2, 4, 100, 200, 500, 1000, 1500, 2000]
PHASES = ["warmup"] * 3 + ["entropy-seeking"] * 4 + ["compression-seeking"] * 3


def _labelled(rankme, alpha):
    return pd.DataFrame({"step": STEPS, "rankme": rankme, "alpha": alpha, "phase": PHASES})


def _scores(cloze, memorization):
    return pd.DataFrame({"step": STEPS, "cloze_accuracy": cloze, "pass@1": np.linspace(0, 0.3, 10),
                         "memorization": memorization, "train_loss": np.linspace(7, 3, 10)})


RANK = [20, 8, 3, 5, 9, 12, 15, 14, 13, 12]
ALPHA = [1.0, 2.0, 3.0, 2.5, 2.0, 1.5, 1.2, 1.25, 1.3, 1.4]
CLOZE = [0.25, 0.25, 0.26, 0.3, 0.35, 0.4, 0.42, 0.44, 0.46, 0.5]
MEMO = [0.1, 0.1, 0.1, 0.2, 0.3, 0.4, 0.6, 0.55, 0.5, 0.45]


def test_each_run_from_where_its_move_began_to_its_end():
    got = phase_scores(_labelled(RANK, ALPHA), _scores(CLOZE, MEMO))
    assert got["phase"].tolist() == ["warmup", "entropy-seeking", "compression-seeking"]
    assert got["first_step"].tolist() == [0, 2, 500] and got["last_step"].tolist() == [2, 500, 2000]
    assert got["n_checkpoints"].tolist() == [3, 4, 3]
    # entropy-seeking starts at the warmup's last checkpoint (step 2), compression at step 500
    assert got["rankme_start"].tolist() == [20, 3, 15] and got["rankme_end"].tolist() == [3, 15, 12]
    assert got["alpha_start"].tolist() == [1.0, 3.0, 1.2] and got["alpha_end"].tolist() == [3.0, 1.2, 1.4]
    assert got["memorization_start"].tolist() == [0.1, 0.1, 0.6] and got["cloze_accuracy_end"].tolist()[2] == 0.5
    assert (got["memorization_peak_step"] == 500).all() and (got["cloze_accuracy_peak_step"] == 2000).all()
    assert "train_loss_start" not in got  # only the scores asked for
    only_geometry = phase_scores(_labelled(RANK, ALPHA))
    assert list(only_geometry.columns) == ["phase", "first_step", "last_step", "n_checkpoints", "rankme_start",
                                           "rankme_end", "alpha_start", "alpha_end"]


def test_a_run_that_matches_the_paper():
    text = paper_comparison(phase_scores(_labelled(RANK, ALPHA), _scores(CLOZE, MEMO)))
    assert "all three of the paper's (matches)" in text
    assert "RankMe 3.0 → 15.0, α falls (3.000 → 1.200; the paper: α falls — matches)" in text
    assert "RankMe 15.0 → 12.0 (20% below its peak), α rises (1.200 → 1.400; the paper: α rises while RankMe " \
           "falls — matches)" in text
    assert "peaks at step 500; entropy-seeking ends at step 500 (the paper: memorization peaks at the end of " \
           "entropy-seeking — matches" in text
    assert "during compression-seeking it falls (0.600 → 0.450)" in text
    assert "multiple-choice accuracy rises (0.420 → 0.500) and pass@1 rises" in text
    assert "does not match" not in text


def test_a_run_that_does_not():
    alpha = ALPHA[:7] + [1.15, 1.1, 1.0]   # α falls with RankMe in compression-seeking
    cloze = CLOZE[:7] + [0.41, 0.40, 0.38]  # and the score gets worse
    memo = MEMO[:6] + [0.5, 0.55, 0.6, 0.7]  # memorization peaks at the end, far from step 500
    text = paper_comparison(phase_scores(_labelled(RANK, alpha), _scores(cloze, memo)))
    assert "α falls (1.200 → 1.000; the paper: α rises while RankMe falls — does not match)" in text
    assert f"peaks at step 2000; entropy-seeking ends at step 500 (the paper: memorization peaks at the end of " \
           f"entropy-seeking — does not match, within {PEAK_TOLERANCE:.0%}" in text
    assert "multiple-choice accuracy falls (0.420 → 0.380)" in text and "improve in compression-seeking — does " \
           "not match" in text


@pytest.mark.parametrize("se, verdict, z", [
    (0.01, "matches", "5.7 standard errors"),  # cloze 0.42 → 0.50 over √2·0.01: 5.7 SE; pass@1 0.2 → 0.3: 7.1
    (0.05, "not shown: no score moved by more than 2 standard errors", "1.1 standard errors"),
])
def test_score_changes_are_weighed_against_their_standard_errors(se, verdict, z):
    scores = _scores(CLOZE, MEMO).assign(**{"cloze_accuracy_se": se, "pass@1_se": se})
    table = phase_scores(_labelled(RANK, ALPHA), scores)
    assert table["cloze_accuracy_se_start"].tolist() == [se] * 3 and "memorization_se_start" not in table
    text = paper_comparison(table)
    assert f"multiple-choice accuracy rises (0.420 → 0.500, {z})" in text
    assert f"improve in compression-seeking — {verdict})" in text


def test_a_score_that_falls_beyond_its_standard_errors_does_not_match():
    cloze = CLOZE[:7] + [0.3, 0.25, 0.2]
    scores = _scores(cloze, MEMO).assign(**{"cloze_accuracy_se": 0.01, "pass@1_se": 0.01})
    text = paper_comparison(phase_scores(_labelled(RANK, ALPHA), scores))
    assert "multiple-choice accuracy falls (0.420 → 0.200, 15.6 standard errors)" in text
    assert "improve in compression-seeking — does not match)" in text


def test_a_run_without_compression():
    rank = [20, 8, 3, 5, 9, 12, 15, 16, 17, 18]
    labelled = _labelled(rank, ALPHA).assign(phase=["warmup"] * 3 + ["entropy-seeking"] * 7)
    text = paper_comparison(phase_scores(labelled, _scores(CLOZE, MEMO)))
    assert "not all three of the paper's (missing: compression-seeking)" in text
    assert "No compression-seeking phase" in text and "RankMe 3.0 → 18.0" in text


@pytest.mark.parametrize("step, matches", [(400, True), (300, False)])
def test_the_memorization_peak_tolerance(step, matches):
    """Memorization peaking one checkpoint before entropy-seeking ends (step 500): at step
    400 that is within 25% of the end, at step 300 it is not."""
    steps = STEPS[:5] + [step] + STEPS[6:]
    memo = MEMO[:5] + [0.7] + MEMO[6:]
    text = paper_comparison(phase_scores(_labelled(RANK, ALPHA).assign(step=steps),
                                         _scores(CLOZE, memo).assign(step=steps)))
    assert f"peaks at step {step}; entropy-seeking ends at step 500" in text
    assert (f"entropy-seeking — {'matches' if matches else 'does not match'}, within {PEAK_TOLERANCE:.0%}") in text
