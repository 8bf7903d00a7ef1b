"""pass@k against exact rational arithmetic, the edge cases, and the per-problem tables."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pandas as pd
import pytest

import fastspec


def exact(n: int, c: int, k: int) -> Fraction:
    """1 − C(n−c, k)/C(n, k) in rationals (math.comb is 0 when k > n − c)."""
    return 1 - Fraction(comb(n - c, k), comb(n, k))


def test_every_small_case_matches_fractions():
    cases = [(n, c, k) for n in range(1, 21) for c in range(0, n + 1) for k in range(1, n + 1)]
    n, c, k = (np.array(v) for v in zip(*cases))
    got = fastspec.pass_at_k(n, c, k)
    want = np.array([float(exact(*case)) for case in cases])
    assert got.shape == (len(cases),)
    # the product form and expm1/log1p keep ~1e-15 relative error; 1e-12 leaves room
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n,c,k", [(512, 1, 1), (512, 3, 256), (512, 0, 256), (512, 256, 256), (512, 257, 256),
                                   (400, 7, 100), (512, 511, 1)])
def test_paper_sizes_match_fractions(n, c, k):
    # n = 512 samples, k up to 256 (the paper's AMC-23 setting); C(512, 256) has 153 digits
    assert fastspec.pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), rel=1e-12, abs=0)


def test_edge_cases():
    assert fastspec.pass_at_k(10, 0, 5) == 0.0
    # +0.0, not −0.0 (−expm1(0)), which a table or a NumPy array would print as "-0."
    assert str(fastspec.pass_at_k(10, 0, 5)) == "0.0" and str(fastspec.pass_at_k([10], [0], 5)) == "[0.]"
    assert fastspec.pass_at_k(10, 6, 5) == 1.0  # n − c = 4 < k: every draw of 5 holds a correct one
    assert fastspec.pass_at_k(10, 10, 10) == 1.0
    assert fastspec.pass_at_k(1, 1, 1) == 1.0
    assert isinstance(fastspec.pass_at_k(5, 2, 1), float)
    assert fastspec.pass_at_k(5, 2, 1) == pytest.approx(0.4)  # k = 1 is the fraction correct


def test_the_readme_call_one_row_per_problem_one_column_per_k():
    correct = np.array([3, 9, 0, 512])
    got = fastspec.pass_at_k(512, correct[:, None], [16, 256])
    assert got.shape == (4, 2)
    for i, ci in enumerate(correct):
        for j, kj in enumerate([16, 256]):
            assert got[i, j] == pytest.approx(float(exact(512, int(ci), kj)), rel=1e-12)


def test_broadcasting():
    c = np.array([[0], [3], [16]])
    got = fastspec.pass_at_k(16, c, np.array([1, 4, 16]))
    assert got.shape == (3, 3)
    for i, ci in enumerate([0, 3, 16]):
        for j, kj in enumerate([1, 4, 16]):
            assert got[i, j] == pytest.approx(float(exact(16, ci, kj)), rel=1e-12)


@pytest.mark.parametrize("args,match", [
    ((4, 1, 5), "k must be at most n"),
    ((4, 5, 1), "c must be at most n"),
    ((4, -1, 1), "c must be at least 0"),
    ((4, 1, 0), "k must be at least 1"),
    ((0, 0, 1), "n must be at least 1"),
    ((4, 1.5, 1), "whole numbers"),
    (([4, 4], [1, 1], [1, 9]), r"k must be at most n.*index \(1,\)"),
    ((512, [3, 9, 0], [16, 256]), r"must broadcast against each other, got n \(\), c \(3,\), k \(2,\); .*pass c\[:, None\]"),
])
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        fastspec.pass_at_k(*args)


def test_booleans_and_strings_are_refused():
    with pytest.raises(TypeError, match="integers"):
        fastspec.pass_at_k(True, 1, 1)
    with pytest.raises(TypeError, match="integers"):
        fastspec.pass_at_k("4", 1, 1)


def test_table_per_problem_and_per_sample(tmp_path):
    from fastspec.analyses.passk import pass_at_k_table

    counts = pd.DataFrame({"step": [0, 0, 1, 1], "problem": ["a", "b", "a", "b"], "n": [8] * 4, "c": [0, 2, 5, 8]})
    table = pass_at_k_table(counts, [1, 4], by="step")
    assert list(table.columns) == ["step", "pass@1", "pass@4", "n_problems", "n"]
    assert table["pass@4"].tolist() == pytest.approx([float((exact(8, 0, 4) + exact(8, 2, 4)) / 2),
                                                      float((exact(8, 5, 4) + exact(8, 8, 4)) / 2)])
    # the same counts given as one row per sample
    samples = pd.DataFrame([{"step": r.step, "problem": r.problem, "correct": i < r.c}
                            for r in counts.itertuples() for i in range(r.n)])
    path = tmp_path / "samples.csv"
    samples.to_csv(path, index=False)
    again = pass_at_k_table(path, [1, 4], by="step")
    pd.testing.assert_frame_equal(again, table)


def test_table_errors(tmp_path):
    from fastspec.analyses.passk import pass_at_k_table

    with pytest.raises(FileNotFoundError, match="nope.csv"):
        pass_at_k_table(tmp_path / "nope.csv", [1])
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"problem": [1], "score": [3]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad.csv needs columns 'n' and 'c'"):
        pass_at_k_table(bad, [1])
    with pytest.raises(ValueError, match="k must be at most n"):
        pass_at_k_table(pd.DataFrame({"n": [4], "c": [1]}), [8])
    with pytest.raises(ValueError, match="no column 'step'"):
        pass_at_k_table(pd.DataFrame({"n": [4], "c": [1]}), [1], by="step")
