"""Multi-node torchrun: two torchrun agents on loopback (c10d rendezvous, one process each, gloo
on the CPU) stand in for two nodes. They share no Hugging Face cache and no results directory
(each is given its own, as nodes with local disks would be), so with --node-local-downloads
each node's local rank 0 downloads from the loopback Hub (tests/hubserver.py) into its own
cache and evicts it there, global rank 0 alone writes results, and the numbers are one
process's. Each node also loads its model through a device map that offloads part of it to
disk (--device-map), as a model larger than a node's GPUs would be."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from hubserver import HubServer
from tinylm import CORPUS, checkpoints

import fastspec

STEPS = (0, 2)
#: The tiny GPT-NeoX's modules (AutoModel): the embedding and the second block on disk.
DEVICE_MAP = {"embed_in": "disk", "emb_dropout": "cpu", "rotary_emb": "cpu", "layers.0": "cpu", "layers.1": "disk",
              "final_layer_norm": "cpu"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hub_env(server: HubServer, home) -> dict[str, str]:
    env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1", OMP_NUM_THREADS="1",
               GLOO_SOCKET_IFNAME="lo")  # the loopback "network" between the two nodes
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    return env


def test_two_nodes_without_a_shared_filesystem_trace_what_one_process_does(tmp_path):
    dirs = checkpoints(tmp_path / "ckpts", steps=STEPS)
    data = tmp_path / "data.txt"
    data.write_text("\n".join(CORPUS[:32]) + "\n")
    port = _free_port()
    with HubServer({"org/tiny": {f"step{s}": d for s, d in zip(STEPS, dirs)}}) as server:
        agents = []
        for node in (0, 1):
            # torchrun's multi-node line, as on two machines: --nnodes 2, c10d rendezvous at node 0
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                   "--rdzv-id", "fastspec-test", "-m", "fastspec", "trace", "org/tiny", "--revisions", "all",
                   "--data", str(data), "--out", str(tmp_path / f"node{node}" / "out"), "--layers", "0,2",
                   "--max-length", "32", "--node-local-downloads", "--evict", "--device-map", json.dumps(DEVICE_MAP),
                   "--quiet"]
            agents.append(subprocess.Popen(cmd, env=_hub_env(server, tmp_path / f"node{node}" / "hf"),
                                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        try:
            outs = [a.communicate(timeout=300) for a in agents]
        finally:
            for a in agents:
                if a.poll() is None:
                    a.kill()
        for a, (_, err) in zip(agents, outs):
            assert a.returncode == 0, err[-6000:]
        bodies = server.downloads()
    # Every file body twice: once into each node's own cache (their ranks share none).
    assert bodies and all(bodies.count(b) == 2 for b in bodies)
    # c10d rendezvous, not --node-rank, decides which agent's worker is global rank 0.
    written = [n for n in (0, 1) if (tmp_path / f"node{n}" / "out" / "checkpoints").is_dir()
               and list((tmp_path / f"node{n}" / "out" / "checkpoints").glob("*.json"))]
    assert len(written) == 1, "global rank 0 alone writes results"
    two = fastspec.load_trace(tmp_path / f"node{written[0]}" / "out", eigenvalues=True)
    fastspec.trace(dirs, data, tmp_path / "one", layers=[0, 2], max_length=32, progress=False)
    one = fastspec.load_trace(tmp_path / "one", eigenvalues=True)
    assert two["step"].tolist() == one["step"].tolist() and two["n_samples"].eq(32).all()
    # Each rank ran every other batch: float32 rows identical, their sums in another order.
    for x, y in zip(one["eigenvalues"], two["eigenvalues"]):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-6 * x[0])
    np.testing.assert_allclose(two["rankme"], one["rankme"], rtol=3e-5)
    for n in (0, 1):  # each node evicted what it downloaded, and its record of that is beside its cache
        snapshots = tmp_path / f"node{n}" / "hf" / "hub" / "models--org--tiny" / "snapshots"
        assert not snapshots.exists() or not os.listdir(snapshots)
        (ledger,) = (tmp_path / f"node{n}" / "hf" / "fastspec").glob("downloads-*.json")
        assert json.loads(ledger.read_text())["downloads"] == {}
        assert not (tmp_path / f"node{n}" / "out" / "downloads.json").exists()


def _scripted_gather(monkeypatch, rank, *rounds):
    """torch.distributed.all_gather_object as a world of len(round) ranks would answer it: this
    process's object at ``rank``, the others' as scripted, round after round."""
    import torch.distributed as dist

    left = list(rounds)

    def gather(out, obj, group=None):
        out[:] = [obj if r == rank else theirs for r, theirs in enumerate(left.pop(0))]

    monkeypatch.setattr(dist, "all_gather_object", gather)


def test_each_rank_takes_its_nodes_files_and_all_stop_together_when_one_cannot_see_them(tmp_path, monkeypatch):
    """Sweep's exchange of a hub checkpoint's files, the collectives scripted: a rank reads its
    own node's download; a rank that sees nothing, or nodes that fetched different commits,
    stop every rank with the reason (the rank, the path, the flag to use)."""
    from fastspec.models.checkpoints import Checkpoint, CheckpointError
    from fastspec.models.runs import ResultsDir, Sweep

    ckpt = Checkpoint("org/tiny", "step2")
    mine, theirs = (str(tmp_path), "c0ffee"), (str(tmp_path / "elsewhere"), "c0ffee")
    results = ResultsDir(tmp_path / "out", {}, ())
    # Rank 3 of 4: local rank 1 of node 1, which reads what node 1's local rank 0 (rank 2) fetched.
    monkeypatch.setenv("GROUP_RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    sweep = Sweep(results, rank=3, world=4, node_local=True)
    assert sweep.downloads is None  # not its node's local rank 0
    _scripted_gather(monkeypatch, 3, [("node 0", 0, theirs), ("node 0", 1, None), ("node 1", 0, mine), None],
                     [(True, theirs[0]), (True, theirs[0]), (True, mine[0]), None])
    assert sweep._share(ckpt, None) == mine
    # node 1 fetched another commit (the branch moved between the nodes' downloads)
    _scripted_gather(monkeypatch, 3, [("node 0", 0, (theirs[0], "beef")), ("node 0", 1, None), ("node 1", 0, mine),
                                      None], [(True, theirs[0])] * 4)
    with pytest.raises(ValueError, match="nodes downloaded different commits of it"):
        sweep._share(ckpt, None)
    # Shared-filesystem mode (the default): rank 0's download, which rank 1 does not see.
    monkeypatch.setenv("GROUP_RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    sweep = Sweep(results, rank=0, world=2)
    _scripted_gather(monkeypatch, 0, [None, ("node 1", 0, None)], [None, (False, mine[0])])
    with pytest.raises(CheckpointError, match=r"rank 1 \(.*\) cannot see the files downloaded by rank 0.*"
                                              r"--node-local-downloads"):
        sweep._share(ckpt, mine)
    sweep.close()
