"""all_reduce over torch.distributed (gloo, 2 CPU processes) equals one process."""

import numpy as np
import torch
import torch.multiprocessing as mp
from dist_worker import D, data, worker

import fastspec


def test_all_reduce_over_two_gloo_processes_equals_one_process(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    one = fastspec.CovarianceAccumulator(D).update(data())
    want = one.state_dict()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["n_samples"] == 3001
        torch.testing.assert_close(got["mean"], want["mean"], rtol=1e-13, atol=0)
        torch.testing.assert_close(got["m2"], want["m2"], rtol=0, atol=1e-10 * float(want["m2"].abs().max()))
    reloaded = fastspec.CovarianceAccumulator(D)
    reloaded.load_state_dict(got)
    np.testing.assert_allclose(reloaded.spectrum().eigenvalues, one.spectrum().eigenvalues, rtol=1e-10)
    # with folds: each rank's fold f (rows i ≡ f mod 3 of its shard) all-reduced into one
    x = data().numpy()
    for rank in range(2):
        got = torch.load(tmp_path / f"folds{rank}.pt", weights_only=True)
        assert got["n_samples"] == 3001 and got["folds"] == 3
        torch.testing.assert_close(got["mean"], want["mean"], rtol=1e-13, atol=0)
        for f, fold in enumerate(got["fold_states"]):
            rows = np.concatenate([x[:100][f::3], x[100:][f::3]])
            assert fold["n_samples"] == len(rows)
            np.testing.assert_allclose(fold["mean"].numpy(), rows.mean(0), rtol=1e-12, atol=1e-9)
