import numpy as np
import pytest
from reference import ref_alpha, ref_rankme, rel

import fastspec

POWER_LAW = np.arange(1, 1025, dtype=np.float64) ** -1.0


def test_pure_power_law_has_alpha_exactly_one():
    fit = fastspec.alpha_req(POWER_LAW)
    assert fit.alpha == pytest.approx(1.0, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.intercept == pytest.approx(0.0, abs=1e-12)
    assert fit.fit_range == (11, 100)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.3])
@pytest.mark.parametrize("fit_range", [(11, 100), (10, 100), (0, 50), (100, 900)])
def test_alpha_matches_reference_on_noisy_spectra(alpha, fit_range):
    rng = np.random.default_rng(0)
    lam = np.arange(1, 1025) ** -alpha * np.exp(rng.normal(0, 0.1, 1024))
    fit = fastspec.alpha_req(lam, fit_range=fit_range)
    want, intercept = ref_alpha(lam, *fit_range)
    assert rel(fit.alpha, want) < 1e-10
    assert fit.intercept == pytest.approx(intercept, abs=1e-10)
    assert 0 < fit.r2 <= 1


def test_broken_power_law_alpha_follows_the_fitted_segment():
    r = np.arange(1, 2049, dtype=np.float64)
    lam = np.where(r <= 200, r**-0.8, 200**-0.8 * (r / 200) ** -2.0)
    assert fastspec.alpha_req(lam, fit_range=(11, 100)).alpha == pytest.approx(0.8, abs=1e-12)
    assert fastspec.alpha_req(lam, fit_range=(300, 2000)).alpha == pytest.approx(2.0, abs=1e-12)
    mixed = fastspec.alpha_req(lam, fit_range=(11, 1000))
    assert rel(mixed.alpha, ref_alpha(lam, 11, 1000)[0]) < 1e-10
    assert mixed.r2 < 0.99


def test_unweighted_fit_is_ordinary_least_squares():
    rng = np.random.default_rng(1)
    lam = np.sort(np.arange(1, 300) ** -1.5 * np.exp(rng.normal(0, 0.2, 299)))[::-1]
    r = np.arange(11, 100) + 1.0
    slope, _ = np.polyfit(np.log(r), np.log(lam[11:100]), 1)
    assert rel(fastspec.alpha_req(lam, weighted=False).alpha, -slope) < 1e-10


def test_alpha_sorts_its_input():
    shuffled = np.random.default_rng(2).permutation(POWER_LAW)
    assert fastspec.alpha_req(shuffled).alpha == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("lam", [POWER_LAW, np.ones(500), np.arange(1, 300) ** -3.0])
def test_rankme_matches_reference(lam):
    assert rel(fastspec.rankme(lam), ref_rankme(lam)) < 1e-12
    assert rel(fastspec.rankme(lam, convention="sv"), ref_rankme(lam, sv=True)) < 1e-12
    assert rel(fastspec.rankme(lam, eps=0.0), ref_rankme(lam, eps=0.0)) < 1e-12
    assert rel(fastspec.rankme(lam, max_eigenvalues=100), ref_rankme(lam, top=100)) < 1e-12


def test_rankme_of_isotropic_spectrum_is_its_size():
    assert fastspec.rankme(np.ones(300), eps=0.0) == pytest.approx(300.0, rel=1e-12)


def test_rankme_is_scale_invariant_and_order_free():
    lam = POWER_LAW[:500]
    assert fastspec.rankme(lam * 1e6) == pytest.approx(fastspec.rankme(lam), rel=1e-12)
    assert fastspec.rankme(lam[::-1]) == pytest.approx(fastspec.rankme(lam), rel=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fastspec.alpha_req(np.ones(50)), r"needs at least 100 eigenvalues; this spectrum has 50"),
        (lambda: fastspec.alpha_req(POWER_LAW, fit_range=(5, 5)), r"0 <= start < stop - 1"),
        (lambda: fastspec.alpha_req(POWER_LAW, fit_range=(-1, 5)), r"0 <= start"),
        (lambda: fastspec.alpha_req(POWER_LAW, fit_range="ab"), r"two integers"),
        (lambda: fastspec.alpha_req(np.r_[POWER_LAW[:50], np.zeros(60)]), r"index 50 is zero"),
        (lambda: fastspec.rankme(np.zeros(4)), r"all eigenvalues are zero"),
        (lambda: fastspec.rankme([]), r"empty"),
        (lambda: fastspec.rankme([1.0, np.nan]), r"non-finite"),
        (lambda: fastspec.rankme(np.ones((2, 2))), r"1-D"),
        (lambda: fastspec.rankme(POWER_LAW, convention="svd"), r"convention must be one of"),
        (lambda: fastspec.rankme(POWER_LAW, max_eigenvalues=0), r"positive integer"),
        (lambda: fastspec.rankme(POWER_LAW, eps=-1.0), r"eps must be >= 0"),
        (lambda: fastspec.alpha_req(-POWER_LAW), r"negative or zero where a covariance spectrum is positive"),
        (lambda: fastspec.alpha_req(np.r_[POWER_LAW[:50], -POWER_LAW[50:]]), r"eigenvalue -0.000977 is negative or zero"),
    ],
)
def test_metric_errors_are_precise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_alpha_fit_predict_and_dict():
    fit = fastspec.alpha_req(POWER_LAW)
    assert np.allclose(fit.predict([1, 10, 100]), [1, 0.1, 0.01])
    assert fit.to_dict() == {"alpha": fit.alpha, "intercept": fit.intercept, "r2": fit.r2,
                             "fit_range": [11, 100], "weighted": True}


@pytest.mark.parametrize("value", [1e308, 1e-300, 5e-324])
def test_rankme_normalises_without_overflow_or_underflow(value):
    assert fastspec.rankme([value] * 3) == pytest.approx(ref_rankme(np.ones(3)), rel=1e-12)
    assert fastspec.rankme([value] * 3, convention="sv") == pytest.approx(ref_rankme(np.ones(3)), rel=1e-12)


def test_complex_eigenvalues_are_refused_not_cast():
    import torch

    with pytest.raises(TypeError, match="eigenvalues must be real"):
        fastspec.rankme(np.array([1.0 + 1j, 0.5]))
    with pytest.raises(TypeError, match="eigenvalues must be real"):
        fastspec.alpha_req(torch.ones(200, dtype=torch.complex64))


def _broken(r, at, first, second):
    """λ_r = r^-first up to rank ``at``, then continuing with slope -second: known break."""
    return np.where(r <= at, r ** -first, float(at) ** -first * (r / at) ** -second)


@pytest.mark.parametrize("at, first, second, want", [(60, 1.0, 2.0, 2.0), (400, 2.0, 1.0, 2.0), (150, 0.8, 1.6, 1.6)])
def test_auto_fit_range_fits_the_longest_straight_segment_not_across_the_break(at, first, second, want):
    r = np.arange(1, 2001, dtype=np.float64)
    fit = fastspec.alpha_req(_broken(r, at, first, second), fit_range="auto")
    start, stop = fit.fit_range
    assert start + 1 >= 0.9 * at if want == second else stop <= 1.1 * at  # on its segment, not across
    assert rel(fit.alpha, want) < 5e-3


def test_auto_fit_range_stops_at_the_noise_floor_and_the_rank():
    lam = np.r_[np.arange(1, 501, dtype=np.float64) ** -1.0, np.full(300, 1e-9)]  # a floor below 1e-6·λ₁
    fit = fastspec.alpha_req(lam, fit_range="auto")
    assert fit.fit_range[1] <= 500 and fit.alpha == pytest.approx(1.0, abs=1e-9)
    x = np.random.default_rng(7).standard_normal((60, 200)) * np.arange(1, 201) ** -0.5
    s = fastspec.spectrum(x)  # centred, N = 60: rank 59
    assert fastspec.spectral.metrics.auto_fit_range(s)[1] <= 59
    with pytest.raises(ValueError, match="too few for an automatic fit range"):
        fastspec.alpha_req(np.arange(1, 7, dtype=np.float64) ** -1.0, fit_range="auto")


def test_a_spectrum_of_fewer_samples_than_dimensions_says_it_is_rank_limited():
    x = np.random.default_rng(8).standard_normal((50, 80))
    s = fastspec.spectrum(x)
    assert (s.rank_bound, s.rank_limited) == (49, True)
    assert s.to_dict()["rank_limited"] and s.to_dict()["rank_bound"] == 49 and s.rankme <= 49
    wide = fastspec.spectrum(np.random.default_rng(9).standard_normal((500, 80)))
    assert (wide.rank_bound, wide.rank_limited) == (80, False)
    assert fastspec.spectrum(x, center=False).rank_bound == 50
