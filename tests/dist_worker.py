"""Workers for the multi-process tests (test_distributed.py, integrations/test_torchmetrics.py),
in a module of their own so that spawned processes can import them."""

import numpy as np
import torch
import torch.distributed as dist
from reference import make_activations

import fastspec

D = 40
LAM = np.arange(1, D + 1, dtype=np.float64) ** -1.0
MEAN = np.r_[np.full(2, 1e3), np.zeros(D - 2)]


def data() -> torch.Tensor:
    return make_activations(3001, LAM, mean=MEAN, seed=30, dtype=torch.float64)


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x = data()
        # Uneven shards, one of them buffered (< 1024 rows), to exercise every path.
        shard = x[:100] if rank == 0 else x[100:]
        acc = fastspec.CovarianceAccumulator(D).update(shard)
        acc.all_reduce()
        torch.save(acc.state_dict(), f"{out_dir}/rank{rank}.pt")
        folded = fastspec.CovarianceAccumulator(D, folds=3).update(shard)
        folded.all_reduce()  # fold f of every rank: fold f of the whole
        torch.save(folded.state_dict(), f"{out_dir}/folds{rank}.pt")
    finally:
        dist.destroy_process_group()


METRIC_D = 48


def metric_data() -> torch.Tensor:
    """Rows for the torchmetrics tests: large-mean columns, which a float32 Σx² would lose."""
    lam = np.arange(1, METRIC_D + 1, dtype=np.float64) ** -1.0
    return make_activations(2401, lam, mean=np.r_[np.full(3, 1e3), np.zeros(METRIC_D - 3)], seed=70, dtype=torch.float32)


def metric_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Each rank streams its uneven shard into a SpectralMetrics; compute() syncs them."""
    from fastspec.integrations.torchmetrics import SpectralMetrics

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x = metric_data()
        metric = SpectralMetrics(METRIC_D, fit_range=(2, 30))
        for batch in (x[:700] if rank == 0 else x[700:]).split(256):
            metric.update(batch)
        torch.save(metric.compute(), f"{out_dir}/metric{rank}.pt")
    finally:
        dist.destroy_process_group()
