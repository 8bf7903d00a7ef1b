"""Worker for test_distributed.py, in its own module so spawned processes can import it."""

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
