"""MetricsRecord: the one record of a set of rows' metrics. Its dict is, key for key and in
order, what metrics_of and Spectrum.to_dict wrote before the record existed (a copy of that
code is the reference below), its numbers agree with the float64 references, and the
jackknife's standard errors appear only with folds."""

import numpy as np
import pytest
import torch
from reference import make_activations, ref_alpha, ref_eigenvalues, ref_rankme, rel

import fastspec
from fastspec.spectral import CovarianceAccumulator, MetricsRecord
from fastspec.spectral.eigen import metrics_of
from fastspec.spectral.metrics import SpectrumTooShort, alpha_req, rankme


def _old_to_dict(s, fit_range=(11, 100), eigenvalues=True):
    """Spectrum.to_dict as it was written before MetricsRecord (fastspec f480154)."""
    out = {"n_samples": s.n_samples, "dim": s.dim, "centered": s.centered, "n_dropped": s.n_dropped,
           "rankme": rankme(s), "rank_bound": s.rank_bound, "rank_limited": s.rank_limited}
    try:
        out.update({f"alpha_{k}" if k != "alpha" else k: v for k, v in alpha_req(s, fit_range=fit_range).to_dict().items()})
    except SpectrumTooShort as err:
        out.update(alpha=None, alpha_intercept=None, alpha_r2=None, alpha_fit_range=list(fit_range),
                   alpha_weighted=True, alpha_error=str(err))
    if eigenvalues:
        out["eigenvalues"] = s.eigenvalues.tolist()
    return out


def _old_metrics_of(centred, raw, fit_range=(11, 100), eigenvalues=True):
    out = _old_to_dict(centred, fit_range, eigenvalues)
    out["rankme_sv"] = rankme(raw, convention="sv")
    return out


CASES = {  # (rows, dim, fit_range): α fitted; too short for the range; N < d (the Gram path); another range
    "fitted": (3000, 150, (11, 100)),
    "too short": (3000, 50, (11, 100)),
    "rank-limited": (40, 200, (2, 20)),
    "own range": (800, 64, (2, 20)),
}


def _data(n, d, seed=0):
    lam = np.arange(1, d + 1, dtype=np.float64) ** -1.2
    return make_activations(n, lam, mean=np.full(d, 5.0), seed=seed, dtype=torch.float64)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("eigenvalues", [False, True])
def test_the_record_s_dict_is_metrics_of_s_as_it_was(case, eigenvalues):
    n, d, fit_range = CASES[case]
    x = _data(n, d)
    centred, raw = fastspec.spectrum(x), fastspec.spectrum(x, center=False)
    want = _old_metrics_of(centred, raw, fit_range, eigenvalues)
    got = MetricsRecord.of(centred, raw, fit_range=fit_range).to_dict(eigenvalues=eigenvalues)
    assert list(got) == list(want) and got == want  # the same keys in the same order, the same values
    assert metrics_of(centred, raw, fit_range=fit_range, eigenvalues=eigenvalues) == want
    old = _old_to_dict(centred, fit_range, eigenvalues)
    assert list(centred.to_dict(fit_range=fit_range, eigenvalues=eigenvalues)) == list(old)
    assert centred.to_dict(fit_range=fit_range, eigenvalues=eigenvalues) == old
    assert ("alpha_error" in got) == (case == "too short")


@pytest.mark.parametrize("case", list(CASES))
def test_the_record_s_numbers_match_the_float64_references(case):
    n, d, fit_range = CASES[case]
    x = _data(n, d, seed=1)
    record = MetricsRecord.of(fastspec.spectrum(x), fastspec.spectrum(x, center=False), fit_range=fit_range)
    want = ref_eigenvalues(x)
    # float64 input: float64 products, so agreement to ~1e-12 (1e-9 leaves room for the solvers).
    assert rel(record.rankme, ref_rankme(want)) < 1e-9
    assert rel(record.rankme_sv, ref_rankme(ref_eigenvalues(x, center=False), sv=True)) < 1e-9
    assert (record.n_samples, record.dim, record.rank_bound) == (n, d, min(n - 1, d))
    if case == "too short":
        assert record.alpha is None and "needs at least 100 eigenvalues" in record.alpha_error
        assert np.isnan(record.alpha_or_nan)
    else:
        alpha, intercept = ref_alpha(want, *fit_range)
        assert rel(record.alpha, alpha) < 1e-9 and rel(record.alpha_intercept, intercept) < 1e-9
        assert record.alpha_error is None and record.alpha_fit_range == fit_range


def test_without_a_raw_spectrum_there_is_no_rankme_sv():
    s = fastspec.spectrum(_data(500, 32))
    record = MetricsRecord.of(s, fit_range=(2, 20))
    assert record.rankme_sv is None and "rankme_sv" not in record.to_dict()
    assert record.spectra == (s, None)


def test_a_plain_accumulator_s_metrics_have_no_standard_errors():
    x = _data(1200, 40, seed=2)
    acc = CovarianceAccumulator(40).update(x[:700]).update(x[700:])
    record = acc.metrics(fit_range=(2, 20))
    assert record.folds == 1 and record.rankme_se is None
    centred, raw = record.spectra
    np.testing.assert_allclose(centred.eigenvalues, ref_eigenvalues(x), rtol=1e-10)
    np.testing.assert_allclose(raw.eigenvalues, ref_eigenvalues(x, center=False), rtol=1e-10)
    got = record.to_dict()
    assert got == metrics_of(acc.spectrum(), acc.spectrum(center=False), fit_range=(2, 20), eigenvalues=False)
    assert not {"rankme_se", "rankme_sv_se", "alpha_se", "eigenvalues"} & set(got)


@pytest.mark.parametrize("fit_range, alpha_se", [((2, 20), "a number"), ((11, 100), None)])
def test_a_folded_accumulator_s_metrics_add_its_jackknife_errors_at_the_end(fit_range, alpha_se):
    x = _data(1000, 40, seed=3)
    acc = CovarianceAccumulator(40, folds=5).update(x)
    record = acc.metrics(fit_range=fit_range)
    jk = acc.jackknife(fit_range=fit_range)
    assert (record.folds, record.rankme_se, record.rankme_sv_se, record.alpha_se) == \
           (5, jk.rankme_se, jk.rankme_sv_se, jk.alpha_se)
    assert record.rankme_se > 0 and (record.alpha_se is None) == (alpha_se is None)
    got = record.to_dict()
    plain = metrics_of(acc.spectrum(), acc.spectrum(center=False), fit_range=fit_range, eigenvalues=False)
    assert list(got) == [*plain, "rankme_se", "rankme_sv_se", "alpha_se"]
    assert got == {**plain, "rankme_se": jk.rankme_se, "rankme_sv_se": jk.rankme_sv_se, "alpha_se": jk.alpha_se}
    assert rel(record.rankme, ref_rankme(ref_eigenvalues(x))) < 1e-9
    # summarize (what `fastspec spectrum` and the demo print) stays the pooled rows' metrics, without SEs
    assert fastspec.spectral.summarize(acc, fit_range=fit_range) == \
           metrics_of(acc.spectrum(), acc.spectrum(center=False), fit_range=fit_range)


def test_a_jackknife_of_other_rows_or_another_range_is_refused():
    x = _data(600, 24, seed=4)
    acc = CovarianceAccumulator(24, folds=3).update(x)
    jk = acc.jackknife(fit_range=(2, 20))
    with pytest.raises(ValueError, match=r"over fit_range \(2, 20\), the spectrum of 600 rows over \(3, 20\)"):
        MetricsRecord.of(acc.spectrum(), fit_range=(3, 20), jackknife=jk)
    with pytest.raises(ValueError, match="jackknife is of 600 rows"):
        MetricsRecord.of(fastspec.spectrum(x[:500]), fit_range=(2, 20), jackknife=jk)


def test_a_malformed_fit_range_is_an_error_not_a_result():
    s = fastspec.spectrum(_data(300, 16))
    with pytest.raises(ValueError, match="fit_range must be two integers"):
        MetricsRecord.of(s, fit_range=(2.5, 10))
