"""Correlation tables against scipy.stats and a hand-made Table C.2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import fastspec
from fastspec.analyses.correlation import correlation_table
from fastspec.report import write_correlations


def _geometry(steps, layers=(0, 2), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for layer in layers:
        for s in steps:
            rows.append({"step": s, "layer": layer, "rankme": 10 + layer + rng.normal(), "alpha": 1 + 0.1 * rng.normal()})
    return pd.DataFrame(rows)


def test_matches_scipy_on_the_last_layer():
    steps = [0, 10, 20, 40, 80, 160]
    geo = _geometry(steps)
    rng = np.random.default_rng(1)
    scores = pd.DataFrame({"step": steps[::-1], "acc": rng.random(6), "loss": rng.random(6), "name": list("abcdef"),
                           "acc_se": rng.random(6)})
    out = fastspec.correlate(geo, scores)
    assert out.attrs["layer"] == 2
    assert set(out["score"]) == {"acc", "loss"}  # neither the text column nor a standard error is a score
    last = geo[geo["layer"] == 2].set_index("step")
    sc = scores.set_index("step").loc[last.index]
    for row in out.itertuples():
        x, y = last[row.metric].to_numpy(), sc[row.score].to_numpy()
        r, rho = stats.pearsonr(x, y), stats.spearmanr(x, y)
        assert row.n == 6
        assert row.pearson_r == pytest.approx(r.statistic, rel=1e-12)
        assert row.pearson_p == pytest.approx(r.pvalue, rel=1e-12)
        assert row.spearman_rho == pytest.approx(rho.statistic, rel=1e-12)
        assert row.spearman_p == pytest.approx(rho.pvalue, rel=1e-12)


def test_perfect_relations_and_nan_handling():
    steps = list(range(8))
    geo = pd.DataFrame({"step": steps, "rankme": np.arange(8.0), "alpha": [np.nan] + list(np.arange(7.0) ** 2)})
    scores = pd.DataFrame({"step": steps, "up": np.arange(8.0) * 3 + 1, "const": np.ones(8)})
    out = fastspec.correlate(geo, scores, layer=None).set_index(["metric", "score"])
    assert out.loc[("rankme", "up"), "pearson_r"] == pytest.approx(1.0)
    assert out.loc[("rankme", "up"), "spearman_rho"] == pytest.approx(1.0)
    assert out.loc[("alpha", "up"), "n"] == 7  # the NaN α is left out of that pair only
    assert out.loc[("alpha", "up"), "spearman_rho"] == pytest.approx(1.0)
    assert out.loc[("alpha", "up"), "pearson_r"] < 1.0  # quadratic: monotone, not linear
    assert np.isnan(out.loc[("rankme", "const"), "pearson_r"])  # a constant score has no correlation


def test_written_files(tmp_path):
    steps = [1, 2, 3, 4, 5]
    geo = pd.DataFrame({"step": steps, "rankme": [5.0, 4, 3, 2, 1], "alpha": [1.0, 2, 3, 4, 6]})
    scores = tmp_path / "scores.csv"
    pd.DataFrame({"step": steps, "acc": [0.1, 0.2, 0.3, 0.5, 0.4]}).to_csv(scores, index=False)
    out = fastspec.correlate(geo, scores, layer=None)
    csv, md = write_correlations(out, tmp_path / "out")
    back = pd.read_csv(csv)
    np.testing.assert_allclose(back["pearson_r"], out["pearson_r"], rtol=1e-12)
    with open(md) as fh:
        text = fh.read()
    wide = correlation_table(out)
    assert list(wide.columns) == ["score", "n", "rankme Pearson r (p)", "rankme Spearman ρ (p)",
                                  "alpha Pearson r (p)", "alpha Spearman ρ (p)"]
    rho = stats.spearmanr([5.0, 4, 3, 2, 1], [0.1, 0.2, 0.3, 0.5, 0.4])
    assert f"{rho.statistic:.3f} ({rho.pvalue:.2e})" in text


def test_errors(tmp_path):
    geo = _geometry([0, 1, 2, 3])
    with pytest.raises(ValueError, match="only 2 checkpoints appear in both"):
        fastspec.correlate(geo, pd.DataFrame({"step": [0, 1, 99], "acc": [1.0, 2, 3]}))
    with pytest.raises(ValueError, match="has no 'step' column"):
        fastspec.correlate(geo, pd.DataFrame({"checkpoint": [0, 1, 2], "acc": [1.0, 2, 3]}))
    with pytest.raises(ValueError, match=r"layer 5 is not in the geometry table \(layers: \[0, 2\]"):
        fastspec.correlate(geo, pd.DataFrame({"step": [0, 1, 2], "acc": [1.0, 2, 3]}), layer=5)
    with pytest.raises(ValueError, match="step=1 twice"):
        fastspec.correlate(geo, pd.DataFrame({"step": [0, 1, 1, 2], "acc": [1.0, 2, 3, 4]}))
    with pytest.raises(ValueError, match="no numeric score column"):
        fastspec.correlate(geo, pd.DataFrame({"step": [0, 1, 2], "name": list("abc")}))
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        fastspec.correlate(geo, tmp_path / "missing.csv")
