"""fastspec's documented Reptrix settings reproduce Reptrix's own functions."""

import numpy as np
import pytest
import torch
from reference import make_activations

import fastspec

reptrix_rankme = pytest.importorskip("reptrix.rankme", reason="reptrix is not installed (pip install --no-deps reptrix)")
reptrix_alpha = pytest.importorskip("reptrix.alpha", reason="reptrix is not installed (pip install --no-deps reptrix)")


@pytest.mark.parametrize("n, d, seed", [(1500, 300, 0), (400, 700, 1), (3000, 200, 2)])
@pytest.mark.parametrize("decay", [0.6, 1.4])
def test_reptrix_settings_agree(n, d, seed, decay):
    lam = np.arange(1, d + 1, dtype=np.float64) ** -decay
    x = make_activations(n, lam, mean=np.linspace(0, 5, d), seed=seed, dtype=torch.float64)
    s = fastspec.spectrum(x)
    want_rankme = reptrix_rankme.get_rankme(x, max_eigenvals=2048)
    assert fastspec.rankme(s, max_eigenvalues=2048) == pytest.approx(want_rankme, rel=1e-9)
    alpha, _, _, r2_100 = reptrix_alpha.get_alpha(x, fit_range=np.arange(10, 100))
    fit = fastspec.alpha_req(s, fit_range=(10, 100))
    # Reptrix casts its weights to float32; the fits agree to that precision.
    assert fit.alpha == pytest.approx(alpha, rel=1e-6)
    # Reptrix increments its range array in place before scoring, so its r2_100 covers
    # indices 11..99 of a fit made over 10..99: score fastspec's line the same way.
    y = np.log(s.eigenvalues[11:100])
    yhat = np.log(fit.predict(np.arange(12, 101)))
    assert 1 - np.sum((y - yhat) ** 2) / np.sum((y - y.mean()) ** 2) == pytest.approx(r2_100, rel=1e-6)


def test_reptrix_cap_of_2048_eigenvalues_is_reproduced():
    d = 2200
    lam = np.arange(1, d + 1, dtype=np.float64) ** -0.3
    x = make_activations(2400, lam, seed=3, dtype=torch.float32)
    s = fastspec.spectrum(x)
    want = reptrix_rankme.get_rankme(x, max_eigenvals=2048)
    # Reptrix runs PCA in float32 on float32 input; fastspec's eigenvalues are float64.
    assert fastspec.rankme(s, max_eigenvalues=2048) == pytest.approx(want, rel=1e-4)
    assert fastspec.rankme(s) > fastspec.rankme(s, max_eigenvalues=2048)
