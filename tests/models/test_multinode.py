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
