"""A hub sweep with and without prefetch, on the loopback Hub of tests/hubserver.py.

Run as a script (``test_bench_hub.py`` does): ``python _hub_bench.py OUT.json [--full]``.
huggingface_hub reads HF_ENDPOINT and HF_HOME when it is imported, so the environment is set
before anything imports it, in this process of its own; the Hub (tests/hubserver.py) runs in
another, on a port fixed in advance.

Six checkpoints of a tiny GPT-NeoX are served as six branches. The download bandwidth is set
so that one checkpoint's download takes as long as the rest of its work (measured first, by
an unthrottled sweep, after a first one to warm up): the case the issue names. Then the same sweep (``fastspec.trace`` of the six
revisions, ``evict=True`` so that every sweep downloads everything again) runs with
``prefetch=0``, ``1`` and ``2``, in turn, and the wall times go to OUT.json.

OUT.json is written as the run goes (atomically: a temporary file renamed over it), after the
calibration and after every sweep, with ``"complete": false`` until the last: a run that
benchmarks/gpu.sh's step timeout cuts off keeps the sweeps it finished, and each ratio is
there as soon as both of its sweeps are.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _serve(port: int, branches: dict[str, str], bytes_per_second: float | None) -> subprocess.Popen:
    """The loopback Hub in a process of its own (as the Hub is: its serving does not compete
    with the trace for this interpreter's GIL), on ``port``."""
    cmd = [sys.executable, os.path.join(HERE, "..", "tests", "hubserver.py"), "--port", str(port), "org/bench",
           *(f"{b}={d}" for b, d in branches.items())]
    if bytes_per_second:
        cmd += ["--bytes-per-second", str(bytes_per_second)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # the URL: it is serving
    return proc


def _stop(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


def main(out_json: str, full: bool) -> None:
    work = tempfile.mkdtemp(prefix="fastspec-hub-bench-")
    with socket.socket() as sock:  # a free port, the same for both servers: HF_ENDPOINT is read once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(HF_HOME=os.path.join(work, "home"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                      HF_HUB_DISABLE_XET="1", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)

    import fastspec
    from fastspec._files import replacing
    from fastspec.models.data import stdlib_docstrings
    from fastspec.models.tiny import TinyLMConfig, train_checkpoints

    texts = stdlib_docstrings(max_paragraphs=3000 if full else 600)
    cfg = TinyLMConfig(vocab_size=1024, hidden=128 if full else 64, layers=4 if full else 2, heads=4, context=128,
                       seq_len=32, batch_size=8, steps=5, lr=1e-3, warmup=1, save_steps=(0, 1, 2, 3, 4, 5))
    dirs = train_checkpoints(texts[:200], os.path.join(work, "ckpts"), cfg, progress=False)
    probe = texts[200:200 + (600 if full else 150)]
    size = sum(os.path.getsize(os.path.join(dirs[0], f)) for f in os.listdir(dirs[0]))
    branches = {f"step{i}": d for i, d in enumerate(dirs)}
    kwargs = dict(layers="all", max_length=128, batch_size=16, progress=False)
    revisions = [("org/bench", b) for b in branches]
    # One checkpoint's work apart from its download: an unthrottled sweep without prefetch,
    # less the time it waited for each (loopback) download, per checkpoint, after a first
    # sweep to warm up.
    server = _serve(port, branches, None)
    try:
        for warm in range(2):
            start = time.perf_counter()
            calib = os.path.join(work, f"calibrate{warm}")
            fastspec.trace(revisions, probe, calib, prefetch=0, evict=True, **kwargs)
            total = time.perf_counter() - start
    finally:
        _stop(server)
    waited = 0.0
    for name in os.listdir(os.path.join(calib, "checkpoints")):
        if name.endswith(".json"):
            with open(os.path.join(calib, "checkpoints", name)) as fh:
                waited += json.load(fh)["seconds"]["download_wait"]
    trace_s = (total - waited) / len(revisions)
    runs: dict[str, list[float]] = {"prefetch0": [], "prefetch1": [], "prefetch2": []}
    result = {"checkpoints": len(dirs), "checkpoint_bytes": size, "trace_seconds": trace_s,
              "bytes_per_second": size / trace_s, "runs": runs, "complete": False}

    def write() -> None:
        for key, k in (("ratio", 1), ("ratio_prefetch2", 2)):
            if runs["prefetch0"] and runs[f"prefetch{k}"]:
                result[key] = min(runs[f"prefetch{k}"]) / min(runs["prefetch0"])
        with replacing(out_json) as tmp, open(tmp, "w") as fh:
            json.dump(result, fh, indent=1)

    write()
    server = _serve(port, branches, size / trace_s)  # one download takes one trace
    try:
        for r in range(2 if full else 1):
            for k in (0, 1, 2):
                start = time.perf_counter()
                fastspec.trace(revisions, probe, os.path.join(work, f"sweep-{k}-{r}"), prefetch=k, evict=True, **kwargs)
                runs[f"prefetch{k}"].append(time.perf_counter() - start)
                write()
    finally:
        _stop(server)
    result["complete"] = True
    write()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], "--full" in sys.argv[2:])
