import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import make_activations, ref_eigenvalues, ref_rankme, rel

import fastspec
from fastspec import CovarianceAccumulator

D = 24
LAM = np.arange(1, D + 1, dtype=np.float64) ** -1.0
MEAN = np.r_[np.full(3, 1e3), np.zeros(D - 3)]
X = make_activations(2500, LAM, mean=MEAN, seed=20, dtype=torch.float64)
ONE_SHOT = fastspec.spectrum(X)
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cov_close(a: CovarianceAccumulator, b_cov: np.ndarray, tol=1e-10):
    np.testing.assert_allclose(a.covariance().numpy(), b_cov, rtol=0, atol=tol * np.abs(b_cov).max())


def _ref_cov(x):
    x = x.numpy().astype(np.float64)
    return np.cov(x, rowvar=False, ddof=1)


@HYP
@given(cuts=st.lists(st.integers(0, 2500), max_size=12))
def test_any_split_into_batches_equals_one_shot(cuts):
    edges = sorted({0, 2500, *cuts})
    acc = CovarianceAccumulator(D)
    for a, b in zip(edges[:-1], edges[1:]):
        acc.update(X[a:b])
    assert acc.n_samples == 2500
    _cov_close(acc, _ref_cov(X))
    np.testing.assert_allclose(acc.spectrum().eigenvalues, ONE_SHOT.eigenvalues, rtol=0, atol=1e-10 * ONE_SHOT.eigenvalues[0])


@st.composite
def merge_trees(draw, lo, hi, depth=0):
    """A random binary merge tree over the rows [lo, hi)."""
    if hi - lo < 2 or depth > 4 or draw(st.booleans()):
        return (lo, hi)
    mid = draw(st.integers(lo + 1, hi - 1))
    return (draw(merge_trees(lo, mid, depth + 1)), draw(merge_trees(mid, hi, depth + 1)))


def _build(tree):
    if isinstance(tree[0], int):
        return CovarianceAccumulator(D).update(X[tree[0] : tree[1]])
    left, right = _build(tree[0]), _build(tree[1])
    return left.merge(right)


@HYP
@given(tree=merge_trees(0, 2500))
def test_any_merge_tree_equals_one_shot(tree):
    acc = _build(tree)
    assert acc.n_samples == 2500
    _cov_close(acc, _ref_cov(X))


@HYP
@given(perm_seed=st.integers(0, 2**32 - 1))
def test_row_permutation_changes_nothing(perm_seed):
    perm = np.random.default_rng(perm_seed).permutation(2500)
    s = fastspec.spectrum(X[perm])
    np.testing.assert_allclose(s.eigenvalues, ONE_SHOT.eigenvalues, rtol=0, atol=1e-11 * ONE_SHOT.eigenvalues[0])


@HYP
@given(scale=st.floats(1e-6, 1e6), seed=st.integers(0, 100))
def test_rankme_is_invariant_to_scaling(scale, seed):
    x = make_activations(300, LAM, seed=seed, dtype=torch.float64)
    assert rel(fastspec.spectrum(x * scale).rankme, fastspec.spectrum(x).rankme) < 1e-9


def test_many_small_batches_in_float32_keep_accuracy():
    """Batches of 16 (as extraction feeds them) are buffered; the result stays exact."""
    x = make_activations(3000, LAM, mean=MEAN, seed=21, dtype=torch.float32)
    acc = CovarianceAccumulator(D)
    for i in range(0, 3000, 16):
        acc.update(x[i : i + 16])
    assert acc.n_samples == 3000
    want = ref_eigenvalues(x)
    assert rel(acc.spectrum().rankme, ref_rankme(want)) < 1e-6


def test_wide_features_stream_and_merge_through_the_block_path(monkeypatch):
    """d > 1024: one-triangle products, upper-block adds, merges, and (with a small chunk
    size) several chunks per batch, against the float64 reference."""
    import fastspec.spectral.moments as moments

    monkeypatch.setattr(moments, "_CHUNK_BYTES", 1100 * 4 * 1100)  # 1100-row chunks
    d = 1100
    lam = np.arange(1, d + 1, dtype=np.float64) ** -1.1
    x = make_activations(4000, lam, mean=np.r_[np.full(2, 1e3), np.zeros(d - 2)], seed=22, dtype=torch.float32)
    acc = CovarianceAccumulator(d)
    acc.update(x[:1500]).update(x[1500:1510])  # streamed, then buffered
    other = CovarianceAccumulator(d).update(x[1510:])  # 2490 rows: three chunks
    acc.merge(other)
    want = ref_eigenvalues(x)
    s = acc.spectrum()
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-6 * want[0]
    assert rel(s.rankme, ref_rankme(want)) < 1e-6
    m2 = acc.state_dict()["m2"]
    assert torch.equal(m2, m2.T)


def test_nan_report_counts_the_whole_batch_across_chunks(monkeypatch):
    import fastspec.spectral.moments as moments

    monkeypatch.setattr(moments, "_CHUNK_BYTES", 1024 * 4 * D)  # 1024-row chunks
    bad = X.clone()
    bad[[10, 1500, 2400], [1, 2, 3]] = float("nan")
    acc = CovarianceAccumulator(D).update(X[:50])
    with pytest.raises(ValueError, match=r"batch: 3 non-finite value\(s\) \(NaN or Inf\) in 3 row\(s\); the first is nan at row 10, column 1 \(row 60 of the rows streamed so far\)"):
        acc.update(bad)
    assert acc.n_samples == 50
    acc2 = CovarianceAccumulator(D, nan_policy="omit").update(bad)
    assert (acc2.n_samples, acc2.n_dropped) == (2497, 3)
    keep = np.setdiff1d(np.arange(2500), [10, 1500, 2400])
    _cov_close(acc2, _ref_cov(X[keep]))


def test_huge_values_are_handled_without_breaking_the_accumulator():
    acc = CovarianceAccumulator(D).update(X[:1500])
    huge32 = (X[:600] * 1e18).float()  # valid float32, squares overflow float32
    acc.update(huge32)  # buffered; products redone in float64 at the flush
    acc.update(X[1500:2000])  # the flush happens here
    want = _ref_cov(torch.cat([X[:1500], huge32.double(), X[1500:2000]]))
    _cov_close(acc, want, tol=1e-9)
    before = acc.state_dict()
    for rows in (10, 1500):  # refused before anything is buffered or merged
        with pytest.raises(OverflowError, match=r"batch: .*overflow a float64 sum of squares"):
            acc.update(X[:rows] * 1e200)
    assert acc.state_dict()["n_samples"] == before["n_samples"] == 2600
    acc.update(X[:5])
    assert acc.n_samples == 2605


@pytest.mark.parametrize("change, match", [
    (lambda s: {**s, "m2": -s["m2"]}, r"negative diagonal entry"),
    (lambda s: {**s, "m2": s["m2"] + torch.triu(torch.ones(D, D), 1)}, r"not symmetric"),
    (lambda s: {**s, "m2": s["m2"] > 0}, r"'m2' must be a floating tensor, got torch.bool"),
    (lambda s: {**s, "n_dropped": -1}, r"'n_dropped' must be a non-negative int, got -1"),
    (lambda s: {**s, "n_dropped": "x"}, r"'n_dropped' must be a non-negative int, got 'x'"),
    (lambda s: {**s, "n_samples": True}, r"'n_samples' must be a non-negative int, got True"),
    (lambda s: {**s, "n_samples": 1}, r"non-zero for n_samples=1"),
    (lambda s: {**s, "rows_seen": 3}, r"'rows_seen' = 3 is fewer than n_samples \+ n_dropped = 100"),
])
def test_load_state_dict_refuses_impossible_statistics_and_changes_nothing(change, match):
    good = CovarianceAccumulator(D).update(X[:100]).state_dict()
    acc = CovarianceAccumulator(D).update(X[200:1500])
    before = acc.state_dict()
    with pytest.raises((ValueError, TypeError), match=match):
        acc.load_state_dict(change(good))
    after = acc.state_dict()
    assert after["n_samples"] == before["n_samples"] and torch.equal(after["m2"], before["m2"])
    assert after["n_dropped"] == before["n_dropped"] and after["rows_seen"] == before["rows_seen"]


def test_load_state_dict_fixes_the_device_and_accepts_numpy_counts():
    state = CovarianceAccumulator(D).update(X[:100]).state_dict()
    state["n_samples"] = np.int64(state["n_samples"])
    acc = CovarianceAccumulator(D)
    acc.load_state_dict(state)
    assert acc.device == torch.device("cpu") and acc.n_samples == 100
    _cov_close(acc.update(X[100:200]), _ref_cov(X[:200]))


def test_caller_may_reuse_its_batch_buffer():
    buf = torch.empty(10, D, dtype=torch.float64)
    acc = CovarianceAccumulator(D)
    for i in range(0, 200, 10):
        buf.copy_(X[i : i + 10])
        acc.update(buf)
    _cov_close(acc, _ref_cov(X[:200]))


def test_state_dict_round_trip(tmp_path):
    acc = CovarianceAccumulator(D).update(X[:1000]).update(X[1000:1007])
    path = tmp_path / "acc.pt"
    torch.save(acc.state_dict(), path)
    other = CovarianceAccumulator(D)
    other.load_state_dict(torch.load(path, weights_only=True))
    other.update(X[1007:])
    assert other.n_samples == 2500
    _cov_close(other, _ref_cov(X))
    np.testing.assert_allclose(other.mean.numpy(), X.numpy().mean(0), rtol=1e-12)


def test_empty_batch_is_a_no_op():
    acc = CovarianceAccumulator(D).update(X[:100])
    before = acc.covariance().clone()
    acc.update(torch.empty(0, D)).update(np.empty((0, D)))
    assert acc.n_samples == 100
    assert torch.equal(acc.covariance(), before)


def test_a_faulty_batch_changes_nothing():
    acc = CovarianceAccumulator(D).update(X[:1500])
    before = acc.state_dict()
    for rows in (5, 2000):  # a buffered batch and a streamed one
        bad = X[:rows].clone()
        bad[rows - 1, 2] = float("nan")
        # the row within the batch, and its position in the stream
        with pytest.raises(ValueError, match=rf"at row {rows - 1}, column 2 \(row {1500 + rows - 1} of the rows streamed"):
            acc.update(bad)
    after = acc.state_dict()
    assert after["n_samples"] == before["n_samples"]
    assert torch.equal(after["m2"], before["m2"])


def test_nan_policy_omit_counts_dropped_rows():
    acc = CovarianceAccumulator(D, nan_policy="omit")
    bad = X.clone()
    bad[[3, 1700]] = float("nan")
    acc.update(bad[:10]).update(bad[10:])
    assert (acc.n_samples, acc.n_dropped) == (2498, 2)
    keep = np.setdiff1d(np.arange(2500), [3, 1700])
    _cov_close(acc, _ref_cov(X[keep]))
    with pytest.warns(UserWarning, match=r"dropped 2 row"):
        assert acc.spectrum().n_dropped == 2


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda a: a.update(torch.zeros(5, D + 1)), ValueError, rf"batch has {D + 1} features \(shape \(5, {D + 1}\)\), but this accumulator was made for dim={D}"),
        (lambda a: a.update(torch.zeros(5, D, dtype=torch.int32)), TypeError, r"dtype torch.int32"),
        (lambda a: a.merge(CovarianceAccumulator(D + 1)), ValueError, rf"dim={D + 1} into one of dim={D}"),
        (lambda a: a.merge("x"), TypeError, r"expects a CovarianceAccumulator"),
        (lambda a: a.load_state_dict(CovarianceAccumulator(D + 1).update(torch.randn(3, D + 1)).state_dict()), ValueError, rf"state_dict is for dim={D + 1}"),
        (lambda a: a.load_state_dict({"format": "x"}), ValueError, r"not a CovarianceAccumulator state_dict"),
        (lambda a: a.load_state_dict({**a.state_dict(), "m2": torch.zeros(D, D - 1)}), ValueError, r"'m2' must be a tensor of shape"),
        (lambda a: a.load_state_dict({**a.state_dict(), "version": 99}), ValueError, r"version 99 is not supported"),
        (lambda a: a.covariance(), ValueError, r"at least 2 samples; this accumulator has 1"),
        (lambda a: a.all_reduce(), RuntimeError, r"torch.distributed to be initialised"),
    ],
)
def test_accumulator_errors(call, exc, match):
    acc = CovarianceAccumulator(D).update(X[:1])
    with pytest.raises(exc, match=match):
        call(acc)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        CovarianceAccumulator(0)
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        CovarianceAccumulator(3, nan_policy="zero")


def test_float64_products_lift_the_noise_floor_under_a_rank_deficient_spectrum():
    """10 distinct rows in d=64 (rank 9 after centring): the rest of the spectrum is zero.
    Float32 products leave ~1e-7·λ₁ of noise there, which the sv convention's square roots
    amplify; float64 products do not."""
    base = make_activations(10, np.ones(64), mean=np.full(64, 5.0), seed=3, dtype=torch.float32)
    x = base.repeat(200, 1)
    want = ref_eigenvalues(x, center=False)
    got32 = CovarianceAccumulator(64).update(x).spectrum(center=False).eigenvalues
    got64 = CovarianceAccumulator(64, precision="float64").update(x).spectrum(center=False).eigenvalues
    assert np.abs(got64 - want).max() < 1e-12 * want[0]
    assert np.abs(got32 - want).max() < 1e-6 * want[0]  # the float32 floor, as documented
    # Even in float64 the zero eigenvalues come out as ±1e-14·λ₁ (here and in the reference),
    # whose square roots are ~1e-7·σ₁, the size of RankMe's ε: that bounds the agreement.
    sv = ref_rankme(want, sv=True)
    assert rel(fastspec.rankme(got64, convention="sv"), sv) < 2e-5
    assert rel(fastspec.rankme(got32, convention="sv"), sv) > 10 * rel(fastspec.rankme(got64, convention="sv"), sv)
    with pytest.raises(ValueError, match="precision must be one of"):
        CovarianceAccumulator(64, precision="float16")
