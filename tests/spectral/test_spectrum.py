import numpy as np
import pytest
import torch
from reference import make_activations, ref_alpha, ref_eigenvalues, ref_rankme, rel

import fastspec

D = 256
POWER = np.arange(1, D + 1, dtype=np.float64) ** -1.0
R = np.arange(1, D + 1, dtype=np.float64)
BROKEN = np.where(R <= 40, R**-0.7, 40**-0.7 * (R / 40) ** -1.8)
SPECTRA = {"power_law": POWER, "isotropic": np.ones(D), "broken_power_law": BROKEN}


def _check_against_reference(s, x, center=True, rtol=1e-9):
    want = ref_eigenvalues(x, center)
    got = s.eigenvalues
    assert got.dtype == np.float64 and got.shape == want.shape
    # Eigenvalues: relative on the leading ones, absolute (relative to λ₁) on the tail.
    assert np.max(np.abs(got - want)) <= rtol * want[0]
    assert rel(s.rankme, ref_rankme(want)) < rtol
    if want.size >= 100:
        assert rel(s.alpha, ref_alpha(want)[0]) < 1e3 * rtol


@pytest.mark.parametrize("kind", SPECTRA)
@pytest.mark.parametrize("n", [3000, 120])  # N > d (covariance) and N < d (Gram)
def test_float64_input_matches_reference(kind, n):
    x = make_activations(n, SPECTRA[kind], seed=3, dtype=torch.float64)
    s = fastspec.spectrum(x)
    assert (s.n_samples, s.dim, s.centered) == (n, D, True)
    _check_against_reference(s, x, rtol=1e-11)


def test_wide_features_use_the_one_triangle_product():
    """d > 1024 takes the block-triangular product path; d = 1100 is not a block multiple."""
    lam = np.arange(1, 1101, dtype=np.float64) ** -1.2
    x = make_activations(1500, lam, mean=np.full(1100, 5.0), seed=11, dtype=torch.float32)
    s = fastspec.spectrum(x)
    want = ref_eigenvalues(x)
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-6 * want[0]
    assert rel(s.rankme, ref_rankme(want)) < 1e-6


@pytest.mark.parametrize("n", [3000, 120])
def test_uncentred_spectrum_matches_reference(n):
    mean = np.linspace(-3, 3, D)
    x = make_activations(n, POWER, mean=mean, seed=4, dtype=torch.float64)
    s = fastspec.spectrum(x, center=False)
    assert not s.centered
    _check_against_reference(s, x, center=False, rtol=1e-11)
    want_sv = ref_rankme(ref_eigenvalues(x, center=False), sv=True)
    assert rel(fastspec.rankme(s, convention="sv"), want_sv) < 1e-11


def test_garrido_rankme_equals_singular_values_of_raw_matrix():
    x = make_activations(500, POWER, mean=np.full(D, 0.5), seed=5, dtype=torch.float64)
    sigma = np.linalg.svd(x.numpy(), compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    garrido = np.exp(-(p * np.log(p)).sum())
    assert rel(fastspec.rankme(fastspec.spectrum(x, center=False), convention="sv"), garrido) < 1e-10


@pytest.mark.parametrize("n", [4000, 100])  # N > d (streamed covariance) and N < d (Gram)
def test_fp32_with_large_mean_columns_matches_float64_to_1e6(n):
    """A few columns of mean 1e3 and unit variance: the one-pass formula fails here."""
    d = 128
    mean = np.zeros(d)
    mean[[3, 50, 97]] = 1e3
    lam = np.arange(1, d + 1, dtype=np.float64) ** -0.5
    x = make_activations(n, lam, mean=mean, seed=6, dtype=torch.float32)
    s = fastspec.spectrum(x)
    want = ref_eigenvalues(x)
    assert rel(s.rankme, ref_rankme(want)) < 1e-6
    assert rel(fastspec.rankme(fastspec.spectrum(x, center=False), convention="sv"),
               ref_rankme(ref_eigenvalues(x, center=False), sv=True)) < 1e-6
    if n > d:
        assert rel(s.alpha, ref_alpha(want)[0]) < 1e-5
        # The test can fail: the one-pass float32 formula misses by far more than 1e-6.
        naive = (x.T @ x - n * torch.outer(x.mean(0), x.mean(0))) / (n - 1)
        assert rel(ref_rankme(np.linalg.eigvalsh(naive.double().numpy())), ref_rankme(want)) > 1e-3


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-6), (torch.float16, 1e-6)])
def test_low_precision_inputs_are_upcast_exactly(dtype, rtol):
    """The reference sees the same (rounded) values, upcast to float64."""
    x = make_activations(2000, POWER, mean=np.full(D, 2.0), seed=7, dtype=dtype)
    s = fastspec.spectrum(x)
    want = ref_eigenvalues(x.double())
    assert rel(s.rankme, ref_rankme(want)) < rtol
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-5 * want[0]


def test_numpy_and_dlpack_inputs_give_the_same_spectrum(power_law_acts):
    a = fastspec.spectrum(power_law_acts).eigenvalues
    b = fastspec.spectrum(power_law_acts.numpy()).eigenvalues

    class DLPackOnly:  # anything that speaks DLPack
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, **kw):
            return self.t.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    c = fastspec.spectrum(DLPackOnly(power_law_acts)).eigenvalues
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_non_contiguous_and_read_only_inputs(power_law_acts):
    want = fastspec.spectrum(power_law_acts).eigenvalues
    strided = torch.empty(power_law_acts.shape[0], 2 * D)[:, ::2]
    strided.copy_(power_law_acts)
    np.testing.assert_allclose(fastspec.spectrum(strided).eigenvalues, want, rtol=0, atol=1e-12)
    ro = power_law_acts.numpy().copy()
    ro.flags.writeable = False
    np.testing.assert_allclose(fastspec.spectrum(ro).eigenvalues, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [3000, 100])
def test_top_k_eigenvectors_are_the_leading_ones(n):
    x = make_activations(n, POWER, seed=8, dtype=torch.float64)
    s = fastspec.spectrum(x, top_k_eigenvectors=5)
    xc = x.numpy() - x.numpy().mean(0)
    cov = xc.T @ xc / (n - 1)
    v = s.eigenvectors
    assert v.shape == (D, 5)
    np.testing.assert_allclose(v.T @ v, np.eye(5), atol=1e-10)
    np.testing.assert_allclose(cov @ v, v * s.eigenvalues[:5], atol=1e-10 * s.eigenvalues[0])
    assert fastspec.spectrum(x).eigenvectors is None


def test_to_dict_reports_short_spectra_honestly():
    x = make_activations(500, np.ones(32), seed=9)
    d = fastspec.spectrum(x).to_dict()
    assert d["alpha"] is None and "needs at least 100 eigenvalues" in d["alpha_error"]
    assert d["rankme"] == pytest.approx(fastspec.rankme(fastspec.spectrum(x)))
    assert len(d["eigenvalues"]) == 32


def test_nan_raises_with_count_and_first_position(power_law_acts):
    x = power_law_acts.clone()
    x[1234, 17] = float("nan")
    x[2000, 3] = float("inf")
    x[2000, 4] = float("nan")
    with pytest.raises(ValueError, match=r"3 non-finite value\(s\) \(NaN or Inf\) in 2 row\(s\); the first is nan at row 1234, column 17"):
        fastspec.spectrum(x)


@pytest.mark.parametrize("n", [3000, 100])
def test_nan_policy_omit_drops_rows_and_says_how_many(n):
    x = make_activations(n, POWER, seed=10, dtype=torch.float64)
    bad = x.clone()
    bad[[5, 50, 77]] = float("nan")
    bad[60, 0] = float("-inf")
    with pytest.warns(UserWarning, match=r"dropped 4 row\(s\) with non-finite values"):
        s = fastspec.spectrum(bad, nan_policy="omit")
    keep = np.setdiff1d(np.arange(n), [5, 50, 60, 77])
    assert s.n_dropped == 4 and s.n_samples == n - 4
    np.testing.assert_allclose(s.eigenvalues, ref_eigenvalues(x[keep]), rtol=0, atol=1e-11 * s.eigenvalues[0])


@pytest.mark.parametrize("n", [2000, 3])
def test_float32_products_that_overflow_are_redone_in_float64(n):
    """|x| ~ 1e20 is a valid float32, but its square is not: no Inf, no error, right answer."""
    gen = torch.Generator().manual_seed(12)
    x = (torch.randn(n, 4, generator=gen, dtype=torch.float64) * 1e20).float()
    s = fastspec.spectrum(x)
    want = ref_eigenvalues(x.double())
    np.testing.assert_allclose(s.eigenvalues, want, rtol=1e-9, atol=1e-12 * want[0])


@pytest.mark.parametrize("n", [200, 8])  # the accumulator path and the N < d Gram path
@pytest.mark.parametrize("dtype, scale", [("float32", 1e-30), ("float32", 1e-25), ("float32", 1e-20),
                                          ("float32", 1e20), ("float32", 1e30), ("float64", 1e-150),
                                          ("float64", 1e-100), ("float64", 1e100), ("float64", 1e140)])
def test_any_scale_matches_float64_no_silent_underflow(n, dtype, scale):
    """Float32 squares underflow below ~1e-19 and overflow above ~1e19; the rows are rescaled
    by an exact power of two, so the spectrum is the float64 one at every scale."""
    x = (np.random.default_rng(13).standard_normal((n, 16)) * scale).astype(dtype)
    s = fastspec.spectrum(x)
    want = ref_eigenvalues(torch.from_numpy(x.astype(np.float64)))
    np.testing.assert_allclose(s.eigenvalues, want, rtol=1e-5, atol=1e-6 * want[0])
    assert rel(s.rankme, ref_rankme(want)) < 1e-6
    raw = fastspec.spectrum(x, center=False)
    assert rel(raw.eigenvalues[0], ref_eigenvalues(torch.from_numpy(x.astype(np.float64)), center=False)[0]) < 1e-5


def test_streamed_batches_of_very_different_scales_merge_exactly():
    rng = np.random.default_rng(14)
    parts = [rng.standard_normal((1500, 8)) * 1e-30, rng.standard_normal((300, 8)), rng.standard_normal((40, 8)) * 1e-25]
    acc = fastspec.CovarianceAccumulator(8)
    for p in parts:
        acc.update(p.astype("f4"))
    x = np.concatenate([p.astype("f4").astype(np.float64) for p in parts])
    want = ref_eigenvalues(torch.from_numpy(x))
    np.testing.assert_allclose(acc.spectrum().eigenvalues, want, rtol=1e-5, atol=1e-6 * want[0])


def test_float64_beyond_its_range_is_an_overflow_error():
    x = torch.randn(2000, 4, dtype=torch.float64) * 1e200
    with pytest.raises(OverflowError, match=r"acts: .*overflow a float64 sum of squares"):
        fastspec.spectrum(x)
    with pytest.raises(OverflowError, match=r"acts: .*overflow a float64 sum of squares"):
        fastspec.spectrum(x[:3])


def _bf16_matmul(matmul):
    """Context in which torch's CPU float32 matmuls may use bf16 (LLM code often sets this)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        saved = matmul.fp32_precision
        matmul.fp32_precision = "bf16"
        try:
            yield
        finally:
            matmul.fp32_precision = saved

    return ctx()


def test_the_callers_matmul_precision_is_kept_and_the_numbers_are_right(power_law_acts):
    """Whatever the CPU: fastspec under a caller's bf16 setting is exact and leaves it as set."""
    matmul = torch.backends.mkldnn.matmul
    x = power_law_acts + 50.0
    with _bf16_matmul(matmul):
        assert rel(fastspec.spectrum(x).rankme, ref_rankme(ref_eigenvalues(x))) < 1e-6
        assert rel(fastspec.spectrum(x[:200]).rankme, ref_rankme(ref_eigenvalues(x[:200]))) < 1e-6
        assert matmul.fp32_precision == "bf16"  # the caller's setting is restored


def test_products_stay_ieee_float32_whatever_the_caller_set(power_law_acts):
    """LLM code often allows TF32/bf16 matmuls; fastspec's float32 products must not use them.
    Only where the sloppy mode exists: oneDNN on a CPU without bf16 matrix instructions (many
    AMD EPYC machines of CI's kind) keeps float32 products exact whatever is set."""
    matmul = torch.backends.mkldnn.matmul
    x = power_law_acts + 50.0
    want = ref_rankme(ref_eigenvalues(x))
    with _bf16_matmul(matmul):
        sloppy = (x.T @ x).double()
        exact = x.double().T @ x.double()
        err = float((sloppy - exact).abs().max() / exact.abs().max())
        if err <= 1e-5:
            pytest.skip(f"this CPU keeps float32 products exact under fp32_precision='bf16' (relative error "
                        f"{err:.1e}): no bf16 matrix instructions, so there is no sloppy mode to guard against")
        assert rel(fastspec.spectrum(x).rankme, want) < 1e-6
        assert rel(fastspec.spectrum(x[:200]).rankme, ref_rankme(ref_eigenvalues(x[:200]))) < 1e-6


def test_reversed_numpy_views_simply_work(power_law_acts):
    x = power_law_acts.numpy()
    np.testing.assert_allclose(fastspec.spectrum(x[::-1]).eigenvalues, fastspec.spectrum(x).eigenvalues, rtol=1e-6)
    np.testing.assert_allclose(fastspec.spectrum(x[:, ::-1]).eigenvalues, fastspec.spectrum(x).eigenvalues, rtol=1e-6)
    acc = fastspec.CovarianceAccumulator(x.shape[1]).update(x[::-2])
    assert acc.n_samples == len(x[::-2])


def test_big_endian_numpy_input(power_law_acts):
    want = fastspec.spectrum(power_law_acts).eigenvalues
    big = power_law_acts.numpy().astype(">f4")
    np.testing.assert_allclose(fastspec.spectrum(big).eigenvalues, want, rtol=0, atol=1e-12)


def test_alpha_refuses_the_structural_zero_of_a_centred_short_spectrum():
    """Centred N ≤ d data has rank N − 1: its last eigenvalue is rounding noise."""
    x = make_activations(100, POWER, seed=13, dtype=torch.float64)
    s = fastspec.spectrum(x)
    assert s.eigenvalues.size == 100
    with pytest.raises(ValueError, match=r"centred spectrum of N=100 samples has rank at most N − 1 = 99"):
        s.alpha
    fit = fastspec.alpha_req(s, fit_range=(11, 99))
    assert rel(fit.alpha, ref_alpha(ref_eigenvalues(x), 11, 99)[0]) < 1e-9
    with pytest.raises(ValueError, match=r"index 99 is zero"):  # the bare array: caught by size
        fastspec.alpha_req(s.eigenvalues)
    assert s.to_dict()["alpha"] is None


@pytest.mark.parametrize(
    "acts, exc, match",
    [
        (torch.zeros(10), ValueError, r"expected a 2-D array \(samples × features\), got shape \(10,\)"),
        (torch.zeros(2, 3, 4), ValueError, r"got shape \(2, 3, 4\); pass x.reshape"),
        (torch.zeros(10, 3, dtype=torch.int64), TypeError, r"dtype torch.int64 is not supported"),
        (torch.eye(10, 3).to_sparse(), TypeError, r"a torch.sparse_coo tensor is not supported; pass a dense one"),
        (torch.empty(10, 3, device="meta"), ValueError, r"on the 'meta' device holds no values"),
        (torch.zeros(10, 3, dtype=torch.complex64), TypeError, r"dtype torch.complex64 is not supported"),
        (np.zeros((10, 3), dtype=np.int32), TypeError, r"dtype int32 is not supported"),
        ([[1.0, 2.0], [3.0, 4.0]], TypeError, r"got list"),
        (torch.zeros(1, 3), ValueError, r"at least 2 finite rows, got 1"),
        (torch.zeros(0, 3), ValueError, r"at least 2 finite rows, got 0"),
        (torch.zeros(10, 3, dtype=torch.bool), TypeError, r"dtype torch.bool is not supported"),
    ],
)
def test_bad_input_errors(acts, exc, match):
    with pytest.raises(exc, match=match):
        fastspec.spectrum(acts)


def test_bad_options():
    x = torch.randn(50, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        fastspec.spectrum(x, backend="jax")
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        fastspec.spectrum(x, nan_policy="ignore")
    with pytest.raises(ValueError, match=r"top_k_eigenvectors must be an integer in \[0, min\(N − 1, d\) = 4\]"):
        fastspec.spectrum(x, top_k_eigenvectors=5)
    with pytest.raises(ValueError, match=r"top_k_eigenvectors must be an integer .* got None"):
        fastspec.spectrum(x, top_k_eigenvectors=None)
    # Centred N < d data has rank N − 1: the N-th "eigenvector" would be arbitrary.
    with pytest.raises(ValueError, match=r"\[0, min\(N − 1, d\) = 9\], got 10"):
        fastspec.spectrum(torch.randn(10, 40), top_k_eigenvectors=10)
    assert fastspec.spectrum(torch.randn(10, 40), center=False, top_k_eigenvectors=10).eigenvectors.shape == (40, 10)
    with pytest.raises(ValueError, match="fit_range must be two integers"):
        fastspec.spectrum(torch.randn(300, 200)).to_dict(fit_range=(11.5, 100))


def test_constant_input_has_zero_spectrum_and_no_rankme():
    s = fastspec.spectrum(torch.ones(100, 8))
    assert np.all(s.eigenvalues == 0)
    with pytest.raises(ValueError, match="all eigenvalues are zero"):
        s.rankme
