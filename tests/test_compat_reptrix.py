"""fastspec.compat.reptrix against Reptrix itself: the same signatures, the same return values."""

import inspect

import numpy as np
import pytest
import torch
from reference import make_activations

from fastspec.compat import reptrix as compat

reptrix_rankme = pytest.importorskip("reptrix.rankme", reason="reptrix is not installed (pip install --no-deps reptrix)")
reptrix_alpha = pytest.importorskip("reptrix.alpha", reason="reptrix is not installed (pip install --no-deps reptrix)")


def test_the_signatures_are_reptrix_s():
    for ours, theirs in ((compat.get_rankme, reptrix_rankme.get_rankme), (compat.get_alpha, reptrix_alpha.get_alpha)):
        a, b = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
        assert list(a) == list(b) and [p.default for p in a.values()] == [p.default for p in b.values()]


@pytest.mark.parametrize("n, d, seed, dtype, rel", [(1500, 300, 0, torch.float64, 1e-6), (3000, 600, 1, torch.float64, 1e-6),
                                                   (700, 120, 2, torch.float32, 1e-4)])
def test_the_same_numbers_as_reptrix(n, d, seed, dtype, rel):
    lam = np.arange(1, d + 1, dtype=np.float64) ** -1.1
    x = make_activations(n, lam, mean=np.linspace(0, 5, d), seed=seed, dtype=dtype)
    assert compat.get_rankme(x) == pytest.approx(reptrix_rankme.get_rankme(x), rel=rel)
    assert compat.get_rankme(x, max_eigenvals=50) == pytest.approx(reptrix_rankme.get_rankme(x, max_eigenvals=50), rel=rel)
    for fit_range in (None, np.arange(5, 60)):
        theirs = reptrix_alpha.get_alpha(x, fit_range=None if fit_range is None else fit_range.copy())
        ours = compat.get_alpha(x, fit_range=fit_range)
        assert len(ours) == 4
        assert ours[0] == pytest.approx(theirs[0], rel=max(rel, 1e-6))  # Reptrix weighs in float32
        np.testing.assert_allclose(ours[1], theirs[1], rtol=max(rel, 1e-5))
        assert ours[2] == pytest.approx(theirs[2], rel=max(rel, 1e-5))
        assert ours[3] == pytest.approx(theirs[3], rel=max(rel, 1e-5))


def test_batches_of_any_shape_are_flattened_and_bad_ranges_are_errors():
    x = make_activations(400, np.arange(1, 121, dtype=np.float64) ** -1.0, seed=4, dtype=torch.float64)
    images = x.reshape(400, 3, 5, 8).requires_grad_()
    assert compat.get_rankme(images) == pytest.approx(reptrix_rankme.get_rankme(images), rel=1e-6)
    with pytest.raises(ValueError, match="consecutive indices"):
        compat.get_alpha(x, fit_range=np.array([10, 12, 14]))
    with pytest.raises(ValueError, match="reaches index 199, but the spectrum has 120 eigenvalues"):
        compat.get_alpha(x, fit_range=np.arange(10, 200))


@pytest.mark.parametrize("bad, error", [(-3, ValueError), (-1, ValueError), (0, ValueError), (2.5, TypeError),
                                        ("64", TypeError)])
def test_a_count_of_eigenvalues_that_reptrix_refuses_is_refused(bad, error):
    """Reptrix hands max_eigenvals to scikit-learn's PCA, which refuses a negative or fractional
    count; ours sliced from the end instead and returned a number for -3. 0 is refused too
    (Reptrix's RankMe of an empty spectrum is 1)."""
    x = make_activations(300, np.arange(1, 41, dtype=np.float64) ** -1.0, seed=5, dtype=torch.float64)
    if bad != 0:
        with pytest.raises((ValueError, TypeError)):
            reptrix_rankme.get_rankme(x, max_eigenvals=bad)
    for call in (compat.get_rankme, compat.get_alpha):
        with pytest.raises(error, match="max_eigenvals must be a positive integer"):
            call(x, max_eigenvals=bad)
    assert compat.get_rankme(x, max_eigenvals=np.int64(5)) == pytest.approx(reptrix_rankme.get_rankme(x, 5), rel=1e-6)
