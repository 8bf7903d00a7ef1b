"""The torch path on a CUDA device agrees with the CPU float64 path (skips without a GPU)."""

import numpy as np
import pytest
import torch
from reference import make_activations, ref_eigenvalues, ref_rankme, rel

import fastspec

pytestmark = pytest.mark.cuda
D = 512
LAM = np.arange(1, D + 1, dtype=np.float64) ** -1.0
MEAN = np.r_[np.full(3, 1e3), np.zeros(D - 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_cuda_tensor_matches_cpu_reference(dtype):
    x = make_activations(6000, LAM, mean=MEAN, seed=50, dtype=dtype)
    s = fastspec.spectrum(x.cuda())
    want = ref_eigenvalues(x.double())
    # TF32 is off for torch matmul by default; the products are true float32.
    assert np.max(np.abs(s.eigenvalues[:10] - want[:10]) / want[:10]) < 1e-5
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-5 * want[0]
    assert rel(s.rankme, ref_rankme(want)) < 1e-6


def test_cuda_wide_features_use_the_block_path_and_upper_triangle():
    d = 1100
    lam = np.arange(1, d + 1, dtype=np.float64) ** -1.0
    x = make_activations(3000, lam, mean=np.full(d, 100.0), seed=52, dtype=torch.float32)
    s = fastspec.spectrum(x.cuda(), top_k_eigenvectors=3)
    want = ref_eigenvalues(x)
    assert np.max(np.abs(s.eigenvalues - want)) < 1e-5 * want[0]
    assert rel(s.rankme, ref_rankme(want)) < 1e-6
    assert s.eigenvectors.shape == (d, 3)


def test_cuda_accumulator_streams_and_keeps_state_on_the_device():
    x = make_activations(5000, LAM, mean=MEAN, seed=51, dtype=torch.float32)
    acc = fastspec.CovarianceAccumulator(D, device="cuda")
    for i in range(0, 5000, 16):
        acc.update(x[i : i + 16])  # CPU batches are moved to the accumulator's device
    assert acc.mean.device.type == "cuda"
    assert rel(acc.spectrum().rankme, ref_rankme(ref_eigenvalues(x))) < 1e-6
