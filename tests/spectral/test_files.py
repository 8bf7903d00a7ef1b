"""file_metrics: the metrics record of an activation file, streamed (N ≥ d) or through the
Gram path (N < d), equal to the record of the same rows in memory, and errors that name the file."""

import numpy as np
import pytest
import torch
from reference import make_activations, ref_eigenvalues, ref_rankme, rel

import fastspec
from fastspec.spectral import file_metrics
from fastspec.spectral.eigen import metrics_of


@pytest.mark.parametrize("n, d", [(2500, 64), (30, 64)])
def test_file_metrics_are_the_rows_metrics(tmp_path, n, d):
    x = make_activations(n, np.arange(1, d + 1, dtype=np.float64) ** -1.0, mean=np.full(d, 3.0), seed=5,
                         dtype=torch.float64).numpy()
    path = tmp_path / "acts.npy"
    np.save(path, x)
    got = file_metrics(str(path), fit_range=(2, 20), progress=False)
    want = metrics_of(fastspec.spectrum(x), fastspec.spectrum(x, center=False), fit_range=(2, 20))
    assert list(got) == ["file", "key", *want]
    assert got["file"] == str(path) and got["key"] is None
    for key, value in want.items():  # streamed blocks and one batch agree to float64 rounding
        if isinstance(value, float) or key == "eigenvalues":
            np.testing.assert_allclose(got[key], value, rtol=1e-10, err_msg=key)
        else:
            assert got[key] == value, key
    assert rel(got["rankme"], ref_rankme(ref_eigenvalues(x))) < 1e-9


def test_a_fault_in_the_file_is_named_with_the_file(tmp_path):
    x = np.ones((100, 8))
    x[7, 3] = np.nan
    path = tmp_path / "bad.npy"
    np.save(path, x)
    with pytest.raises(ValueError, match=r"bad\.npy: batch: 1 non-finite value"):
        file_metrics(str(path), progress=False)
