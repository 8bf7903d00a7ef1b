"""CovarianceAccumulator(dim, folds=K): K disjoint, deterministic folds of the rows (row i of
the stream in fold i mod K, whatever the batching), pooled statistics equal to one
accumulator's, and the jackknife's standard errors against the spread over independent
samples."""

import numpy as np
import pytest
import torch
from reference import ref_alpha, ref_eigenvalues, ref_rankme, rel

from fastspec.spectral import CovarianceAccumulator

D = 24
LAM = np.arange(1, D + 1, dtype=np.float64) ** -1.0
Q, _ = np.linalg.qr(np.random.default_rng(90).standard_normal((D, D)))


def _rows(n, seed, mean=3.0):
    return (np.random.default_rng(seed).standard_normal((n, D)) * np.sqrt(LAM)) @ Q.T + mean


def _feed(acc, x, cuts):
    for a, b in zip([0, *cuts], [*cuts, len(x)]):
        acc.update(x[a:b])
    return acc


@pytest.mark.parametrize("cuts", [[], [5, 17, 1500], [1100, 1101, 2900]])  # buffered and streamed batches
def test_pooled_statistics_are_one_accumulator_s_and_folds_are_i_mod_k(cuts):
    x = _rows(3000, 91)
    folded = _feed(CovarianceAccumulator(D, folds=7), x, cuts)
    single = CovarianceAccumulator(D).update(x)
    assert folded.n_samples == 3000 and "folds=7" in repr(folded)
    np.testing.assert_allclose(folded.spectrum().eigenvalues, single.spectrum().eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(folded.mean.numpy(), x.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(folded.covariance().numpy(), np.cov(x, rowvar=False), rtol=0, atol=1e-12)
    for f, acc in enumerate(folded._fold_accs):
        np.testing.assert_allclose(acc.covariance().numpy(), np.cov(x[f::7], rowvar=False), rtol=0, atol=1e-12)


def test_dropped_rows_do_not_count_as_positions():
    x = _rows(200, 92)
    bad = x.copy()
    bad[[3, 50]] = np.nan
    acc = CovarianceAccumulator(D, folds=4, nan_policy="omit").update(bad[:30]).update(bad[30:])
    kept = np.delete(x, [3, 50], axis=0)
    assert (acc.n_samples, acc.n_dropped) == (198, 2)
    for f, fold in enumerate(acc._fold_accs):
        np.testing.assert_allclose(fold.mean.numpy(), kept[f::4].mean(0), rtol=0, atol=1e-12)


def test_a_faulty_batch_changes_no_fold():
    x = _rows(300, 93)
    acc = CovarianceAccumulator(D, folds=3).update(x[:100])
    before = acc.state_dict()
    bad = x[100:].copy()
    bad[150, 2] = np.inf
    with pytest.raises(ValueError, match=r"row 150, column 2 \(row 250 of the rows streamed so far\)"):
        acc.update(bad)
    after = acc.state_dict()
    for b, a in zip(before["fold_states"], after["fold_states"]):
        assert b["n_samples"] == a["n_samples"] and torch.equal(b["m2"], a["m2"])


def test_state_dict_merge_and_errors(tmp_path):
    x, y = _rows(500, 94), _rows(300, 95)
    a = CovarianceAccumulator(D, folds=5).update(x)
    path = tmp_path / "folds.pt"
    torch.save(a.state_dict(), path)
    b = CovarianceAccumulator(D, folds=5)
    b.load_state_dict(torch.load(path, weights_only=True))
    np.testing.assert_allclose(b.jackknife(fit_range=(2, 20)).rankme_se, a.jackknife(fit_range=(2, 20)).rankme_se,
                               rtol=1e-12)
    pooled_only = CovarianceAccumulator(D)
    pooled_only.load_state_dict(a.state_dict())  # an accumulator without folds takes the pooled statistics
    assert pooled_only.n_samples == 500
    merged = b.merge(CovarianceAccumulator(D, folds=5).update(y))
    both = np.concatenate([x, y])
    np.testing.assert_allclose(merged.covariance().numpy(), np.cov(both, rowvar=False), rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged._fold_accs[1].mean.numpy(), np.concatenate([x[1::5], y[1::5]]).mean(0),
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="folds=3 into one of folds=5"):
        merged.merge(CovarianceAccumulator(D, folds=3).update(y))
    with pytest.raises(ValueError, match="holds folds=1, this accumulator has folds=5"):
        CovarianceAccumulator(D, folds=5).load_state_dict(pooled_only.state_dict())
    with pytest.raises(ValueError, match="jackknife needs folds"):
        pooled_only.jackknife()
    with pytest.raises(ValueError, match=r"every one of the 5 folds to hold rows.*\[1, 1, 1, 0, 0\]"):
        CovarianceAccumulator(D, folds=5).update(x[:3]).jackknife()
    with pytest.raises(ValueError, match="folds must be a positive integer"):
        CovarianceAccumulator(D, folds=0)


def test_jackknife_estimates_are_the_full_data_ones():
    x = _rows(400, 96)
    jk = CovarianceAccumulator(D, folds=10).update(x).jackknife(fit_range=(2, 20))
    assert rel(jk.rankme, ref_rankme(ref_eigenvalues(torch.from_numpy(x)))) < 1e-9
    assert rel(jk.rankme_sv, ref_rankme(ref_eigenvalues(torch.from_numpy(x), center=False), sv=True)) < 1e-9
    assert jk.alpha is not None and jk.alpha_se > 0 and jk.to_dict()["fit_range"] == [2, 20]
    assert CovarianceAccumulator(D, folds=4).update(x).jackknife().alpha is None  # 24 < the default range's 100
    acc = CovarianceAccumulator(D, folds=10).update(x)  # the full spectra, when the caller has them: the same
    assert acc.jackknife(fit_range=(2, 20), spectra=(acc.spectrum(), acc.spectrum(center=False))) == jk


@pytest.mark.parametrize("mean", [3.0, 1e3])  # a large mean: the fold is removed from pooled moments by subtraction
@pytest.mark.parametrize("n", [420, 425])  # equal folds, and folds of 61 and 60 rows
def test_jackknife_is_a_brute_force_leave_one_fold_out(mean, n):
    x = _rows(n, 98, mean=mean)
    k = 7
    jk = CovarianceAccumulator(D, folds=k).update(x[:100]).update(x[100:]).jackknife(fit_range=(2, 20))
    full = ref_eigenvalues(torch.from_numpy(x))
    theta = np.array([ref_rankme(full), ref_rankme(ref_eigenvalues(torch.from_numpy(x), center=False), sv=True),
                      ref_alpha(full, 2, 20)[0]])
    loo, m = [], []
    for f in range(k):
        rest = torch.from_numpy(np.delete(x, np.arange(f, len(x), k), axis=0))
        centred, raw = ref_eigenvalues(rest), ref_eigenvalues(rest, center=False)
        loo.append([ref_rankme(centred), ref_rankme(raw, sv=True), ref_alpha(centred, 2, 20)[0]])
        m.append(len(range(f, len(x), k)))
    loo, m = np.array(loo), np.array(m, dtype=np.float64)[:, None]
    if n % k == 0:  # equal folds: Quenouille and Tukey's formula
        want = np.sqrt((k - 1) / k * ((loo - loo.mean(0)) ** 2).sum(0))
    else:  # Busing, Meijer and van der Leeden (1999), delete-m_j: pseudo-values weighted by h_j = n / m_j
        h = n / m
        pseudo = h * theta - (h - 1) * loo
        centre = k * theta - ((1 - m / n) * loo).sum(0)
        want = np.sqrt(np.mean((pseudo - centre) ** 2 / (h - 1), axis=0))
    np.testing.assert_allclose([jk.rankme_se, jk.rankme_sv_se, jk.alpha_se], want, rtol=1e-6)


@pytest.mark.parametrize("ratio, fit_range", [(0.5, (1, 10)), (1, (2, 20)), (2, (2, 20)), (10, (2, 20))])
def test_jackknife_standard_errors_match_the_spread_over_independent_samples(ratio, fit_range):
    """50 independent samples of N = ratio·d Gaussian rows with a power-law covariance: the
    mean jackknife SE (K = 10) is within a factor 1.5 of the estimates' standard deviation,
    for RankMe, RankMe_sv and α at every N/d. At N = d/2 the folds are 1 and 2 rows, and
    RankMe_sv moves with N: the plain formula, blind to fold size, overestimated its spread
    2.3-fold; weighted by fold size (Busing et al.) it is 1.0."""
    n = int(ratio * 32)
    lam = np.arange(1, 33, dtype=np.float64) ** -1.0
    q, _ = np.linalg.qr(np.random.default_rng(97).standard_normal((32, 32)))
    rng = np.random.default_rng(int(ratio * 10))
    est, se = [], []
    for _ in range(50):
        x = (rng.standard_normal((n, 32)) * np.sqrt(lam)) @ q.T + 3.0
        jk = CovarianceAccumulator(32, folds=10).update(x).jackknife(fit_range=fit_range)
        est.append([jk.rankme, jk.rankme_sv, jk.alpha])
        se.append([jk.rankme_se, jk.rankme_sv_se, jk.alpha_se])
    ratio_of = np.mean(se, axis=0) / np.std(est, axis=0, ddof=1)
    assert np.all((ratio_of > 1 / 1.5) & (ratio_of < 1.5)), ratio_of


def test_folds_make_a_folded_accumulator_that_is_still_a_covariance_accumulator():
    import copy

    from fastspec.spectral import FoldedAccumulator

    folded, plain = CovarianceAccumulator(D, folds=3), CovarianceAccumulator(D, folds=1)
    assert type(folded) is FoldedAccumulator and isinstance(folded, CovarianceAccumulator)
    assert type(plain) is CovarianceAccumulator and plain.folds == 1 and folded.folds == 3
    x = _rows(90, 95)
    twin = copy.deepcopy(folded.update(x))  # __new__ dispatch leaves copying alone
    assert type(twin) is FoldedAccumulator and twin.n_samples == 90
    np.testing.assert_allclose(twin.covariance().numpy(), np.cov(x, rowvar=False), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="a FoldedAccumulator needs folds >= 2, got 1"):
        FoldedAccumulator(D, folds=1)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="folds must be a positive integer"):
            CovarianceAccumulator(D, folds=bad)


@pytest.mark.parametrize("fit_range", [(2, 20), (11, 100)])
def test_a_jackknife_over_degenerate_data_reports_nan_and_why(fit_range):
    """Issue 24, item 9: rows that vary in one fold only. Without that fold the rows are
    constant, but their M2, computed by subtraction from the pooled one, is rounding noise
    (~1e-16 of the pooled scale), whose RankMe and α are noise too (before: a number, or a
    'negative eigenvalue' error from α). The standard errors are NaN with the reason; the
    estimates are still all the rows' (the float64 reference)."""
    x = _rows(300, 96)
    x[np.arange(300) % 3 != 0] = x[1]  # folds 1 and 2: one constant row
    acc = CovarianceAccumulator(D, folds=3).update(x)
    jk = acc.jackknife(fit_range=fit_range)
    assert np.isnan(jk.rankme_se) and np.isnan(jk.rankme_sv_se)
    assert (jk.alpha_se is None) == (fit_range == (11, 100)) and (jk.alpha_se is None or np.isnan(jk.alpha_se))
    assert jk.error.startswith("without fold 0 the rows have no variance above rounding")
    assert rel(jk.rankme, ref_rankme(ref_eigenvalues(x))) < 1e-9
    record = acc.metrics(fit_range=fit_range).to_dict()
    assert np.isnan(record["rankme_se"]) and record["jackknife_error"] == jk.error
    assert list(record)[-4:] == ["rankme_se", "rankme_sv_se", "alpha_se", "jackknife_error"]
    # a small but real variance in those folds is data, not noise: numbers again
    x[np.arange(300) % 3 != 0] += 1e-5 * _rows(300, 97, mean=0.0)[np.arange(300) % 3 != 0]
    jk = CovarianceAccumulator(D, folds=3).update(x).jackknife(fit_range=fit_range)
    assert jk.error is None and np.isfinite(jk.rankme_se)
