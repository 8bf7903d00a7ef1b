"""benchmarks/gpu.sh, the one command a lent GPU runs, cannot land broken: its dry mode runs
every step here on the CPU at tiny sizes (no build, the torch paths only), and each step must
have written its lines; and the summary it ends with is checked on made-up GPU results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import report  # benchmarks/report.py (benchmarks/ is on the test path)

ROOT = Path(__file__).resolve().parent.parent
BENCH_STEPS = {"bench-4096-fp32", "bench-4096-bf16", "bench-stream-8192-bf16", "bench-8192-bf16", "bench-2048",
               "bench-svdvals"}
FLOORS = {"gemm_fp32", "gemm_tf32", "gemm_bf16", "ssyrk_fp32", "ssyrk_fp32_pedantic", "eigvalsh_fp32", "eigvalsh_fp64"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_dry_run_writes_every_steps_results(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "GPU_SH_DRY": "1", "PYTHON": sys.executable, "GPU_SH_SANITIZE": "1"}
    for var in ("OUT", "FASTSPEC_BENCH_CASES", "FASTSPEC_BENCH_METHODS", "FASTSPEC_BENCH_ROUNDS", "FASTSPEC_BENCH_DIMS",
                "FASTSPEC_BENCH_JSONL", "FASTSPEC_BENCH_FULL", "GPU_SH_BUDGET"):
        env.pop(var, None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files  # the device tool brings back at most 8
    assert {"log.txt", "versions.json", "floors.jsonl", "steps.jsonl", "tests.xml", "bench.jsonl", "bench.md"} <= set(files)

    versions = json.loads((out / "versions.json").read_text())
    assert versions["torch"] and versions["python"] and "backends" in versions["fastspec"]

    steps = {s["step"]: s for s in _lines(out / "steps.jsonl")}
    assert steps["build"]["status"] == "skipped"  # dry: nothing is built
    for name in ("versions", "floors", *BENCH_STEPS):
        assert steps[name]["status"] == "ok", steps[name]
    # The tests ran; whether they pass is their own business (the suite runs them too).
    assert steps["tests"]["status"] == "ok" or steps["tests"]["reason"] == "exit 1", steps["tests"]
    # ... verbosely: each test's outcome reaches log.txt as it ends, so a step cut off by its
    # timeout (before pytest writes tests.xml) still shows which tests ran.
    log = (out / "log.txt").read_text()
    assert "tests/spectral/test_cuda.py::test_build_report_is_consistent_with_the_backends_report PASSED" in log
    # The sanitizer's selection (dry: listed, not run): the kernels' GPU tests, by their marker,
    # and nothing else: not the NCCL test that `-k kernels` caught, nor the CPU or torch-path tests.
    assert steps["sanitize"]["status"] == "ok", steps["sanitize"]
    section = log.split("] sanitize (timeout", 1)[1].split("\n== [", 1)[0]
    selected = {line.split("::")[1].split("[")[0] for line in section.splitlines()
                if line.startswith("tests/spectral/test_cuda.py::")}
    assert "test_all_reduce_over_nccl_keeps_kernels_and_state_on_the_gpu" not in selected
    assert {"test_kernels_match_cpu_float64_reference_and_the_torch_path", "test_kernels_pass_their_canary_on_this_device",
            "test_float32_eigensolver_and_workspace_reuse", "test_backend_cuda_moves_cpu_input_and_agrees",
            "test_kernel_errors_are_python_exceptions"} <= selected, selected
    assert not {t for t in selected if t.startswith(("test_wiring", "test_torch_path", "test_centre_and_gram"))}

    floors = _lines(out / "floors.jsonl")
    assert {f["name"] for f in floors} == FLOORS
    timed = {f["name"] for f in floors if f.get("median_s", 0) > 0}
    assert timed == FLOORS - {"gemm_tf32", "ssyrk_fp32", "ssyrk_fp32_pedantic"}  # those need CUDA, and say so
    assert all(f.get("skipped") for f in floors if f["name"] not in timed)

    bench = _lines(out / "bench.jsonl")
    assert {b["step"] for b in bench} == BENCH_STEPS
    for name in BENCH_STEPS:  # each step timed something, and its answers passed their checks
        mine = [b for b in bench if b["step"] == name]
        assert any(b.get("median", 0) > 0 and b["outcome"] == "passed" for b in mine), (name, mine)
        assert not [b for b in mine if b["outcome"] not in ("passed", "skipped")], mine
    svd = [b for b in bench if b.get("method") == "gpu_torch_svdvals" and b.get("median")]
    assert [b["step"] for b in svd] == ["bench-svdvals"]  # svdvals once, last
    assert (out / "tests.xml").read_text().lstrip().startswith("<?xml")
    md = (out / "bench.md").read_text()
    assert md.startswith("## GPU: ") and "### Floors" in md and "### Summary" in md


def _bench(method: str, median: float, kind: str = "spectrum", d: int = 4096, dtype: str = "fp32", **extra) -> dict:
    n = 15000 if kind == "spectrum" else 1_000_000
    return {"step": "s", "name": f"test[{method}]", "group": f"gpu {kind} N={n} d={d} {dtype}", "method": method,
            "outcome": "passed", "median": median, "rounds": 2,
            "extra_info": {"method": method, "kind": kind, "n": n, "d": d, "dtype": dtype, "device": "H200", **extra}}


def test_report_of_a_gpu_run_gives_ratios_to_baselines_and_floors(tmp_path):
    (tmp_path / "versions.json").write_text(json.dumps({
        "date": "2026-12-01T00:00:00Z", "python": "3.12.3", "torch": "2.11.0", "torch_cuda": "13.0",
        "gpu": {"name": "NVIDIA H200", "memory_gib": 139.8, "capability": "9.0"}, "nvcc": "release 13.0",
        "fastspec": {"version": "0.1.0", "backends": {"cuda_kernels": {"available": True, "detail": "sm_90"}}}}))
    (tmp_path / "steps.jsonl").write_text(
        json.dumps({"step": "floors", "status": "ok", "seconds": 20}) + "\n"
        + json.dumps({"step": "bench-2048", "status": "skipped", "seconds": 0, "reason": "budget"}) + "\n")
    floors = [{"name": "ssyrk_fp32", "n": 15000, "d": 4096, "dtype": "fp32", "median_s": 0.005, "rounds": 10,
               "tflops": 50.0, "device": "NVIDIA H200"},
              {"name": "ssyrk_fp32_pedantic", "n": 15000, "d": 4096, "dtype": "fp32", "median_s": 0.01, "rounds": 10,
               "tflops": 25.0, "device": "NVIDIA H200"},
              {"name": "eigvalsh_fp64", "n": 15000, "d": 4096, "dtype": "fp64", "median_s": 0.5, "rounds": 2,
               "device": "NVIDIA H200"},
              {"name": "gemm_tf32", "n": 15000, "d": 4096, "dtype": "fp32", "skipped": "why not"}]
    (tmp_path / "floors.jsonl").write_text("".join(json.dumps(f) + "\n" for f in floors) + '{"cut off')
    bench = [_bench("gpu_fastspec", 0.55), _bench("gpu_fastspec_torch", 1.1), _bench("gpu_torch_svdvals", 11.0),
             _bench("gpu_fastspec_tf32x3", 0.5), _bench("gpu_fastspec_accumulate", 0.01, tflops=25.0),
             _bench("gpu_floor_gemm_tf32", 0.002, tflops=250.0), _bench("gpu_fastspec_eig", 0.52),
             _bench("gpu_floor_xsyevd", 0.5),
             _bench("gpu_fastspec_stream", 4.0, "stream", 8192, "bf16", rows_per_s=250000.0),
             _bench("gpu_fastspec_torch_stream", 8.0, "stream", 8192, "bf16", rows_per_s=125000.0),
             {"step": "s", "name": "test[x]", "group": "gpu spectrum N=15000 d=4096 fp32",
              "method": "gpu_fastspec_accumulate_tf32x3", "outcome": "skipped", "reason": "products= not accepted"}]
    (tmp_path / "bench.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bench))
    md = report.gpu_run(tmp_path)
    assert md.startswith("## GPU: NVIDIA H200, 2026-12-01")
    assert "bench-2048 skipped (0 s): budget" in md or "bench-2048 skipped: budget" in md
    summary = next(line for line in md.splitlines() if line.startswith("| spectrum N=15000 d=4096 fp32"))
    cells = [c.strip() for c in summary.strip("|").split("|")]
    # fastspec 0.55 s: torch path 2×, svdvals 20×, 3×TF32 0.909×; floor: the pedantic SSYRK (the
    # kernels' math mode) 0.01 + 0.5 s -> 1.08×; accumulation over that SSYRK 1×; eigen step over
    # fp64 eigvalsh 1.04×
    assert cells[1:] == ["550 ms", "2×", "—", "20×", "—", "0.909×", "1.08×", "1×", "1.04×"]
    assert "pedantic math (as the kernels)" in md and "default math" in md
    assert "end to end ≥ 20× faster than svdvals RankMe | 20.0× | yes" in md
    assert "accumulation ≥ 60% of the card's BF16/TF32 GEMM rate | 25.0 vs 250.0 TFLOP/s = 10% | **no**" in md
    assert "streamed end to end ≥ 4× faster than the torch path | 2.00× | **no**" in md
    assert "products= not accepted" in md and "why not" in md

    # A run from before the pedantic floor was timed: the default-mode SSYRK stands in.
    (tmp_path / "floors.jsonl").write_text("".join(json.dumps(f) + "\n" for f in floors if "pedantic" not in f["name"]))
    summary = next(line for line in report.gpu_run(tmp_path).splitlines()
                   if line.startswith("| spectrum N=15000 d=4096 fp32"))
    assert [c.strip() for c in summary.strip("|").split("|")][7:9] == ["1.09×", "2×"]


def test_floors_time_ssyrk_in_both_cublas_math_modes(tmp_path):
    """The kernels' SSYRK runs in CUBLAS_PEDANTIC_MATH, the floor's in CUBLAS_DEFAULT_MATH: the
    floors time both, each line naming its mode, with that mode in effect while it is timed
    (a stand-in for the ctypes cuBLAS records the mode of every call; the product is checked)."""
    import gpu_floors  # benchmarks/gpu_floors.py

    class Blas:
        path, version = "stand-in", 0

        def __init__(self):
            self.mode, self.calls = "default", []

        def set_math_mode(self, mode):
            assert mode in gpu_floors.CUBLAS_MATH_MODES
            self.mode = mode

        def ssyrk(self, x, c):
            self.calls.append(self.mode)
            c.copy_(x.T @ x)
            return c

    blas = Blas()
    sink = gpu_floors.Sink(tmp_path / "floors.jsonl", {"device": "cpu"})
    gpu_floors.products(sink, 64, 16, "cpu", blas, "")
    lines = {f["name"]: f for f in _lines(tmp_path / "floors.jsonl")}
    assert lines["ssyrk_fp32"]["math_mode"] == "default" and lines["ssyrk_fp32_pedantic"]["math_mode"] == "pedantic"
    assert all(lines[n]["check"] == "ok" and lines[n]["median_s"] > 0 for n in ("ssyrk_fp32", "ssyrk_fp32_pedantic"))
    assert "default" in blas.calls and "pedantic" in blas.calls and blas.mode == "default"  # restored after
    # every call timed under a line's name ran in that line's mode: the default ones first, then the pedantic
    first = blas.calls.index("pedantic")
    assert set(blas.calls[:first]) == {"default"} and set(blas.calls[first:]) == {"pedantic"}


_CUT_OFF_HUB_BENCH = r"""
import json, os, runpy, sys

import fastspec

calls = []


def trace(revisions, texts, out, **kwargs):  # instant: checkpoints that took no time to download
    calls.append(kwargs.get("prefetch"))
    if len(calls) == 4:  # two calibration sweeps, the sweep without prefetch, then cut off
        raise SystemExit(7)
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    for i in range(len(revisions)):
        with open(os.path.join(out, "checkpoints", f"{i}.json"), "w") as fh:
            json.dump({"seconds": {"download_wait": 0.0}}, fh)


fastspec.trace = trace
script, out = sys.argv[1:]
sys.argv = [script, out]
runpy.run_path(script, run_name="__main__")
"""


def test_hub_step_keeps_the_sweeps_it_finished_when_it_is_cut_off(tmp_path):
    """gpu.sh's hub step (benchmarks/_hub_bench.py) writes hub.json after every sweep, so a run
    its timeout cuts off keeps what it measured (fastspec.trace stands in, instant, and the run
    is cut off in its second timed sweep)."""
    out = tmp_path / "hub.json"
    proc = subprocess.run([sys.executable, "-c", _CUT_OFF_HUB_BENCH, str(ROOT / "benchmarks" / "_hub_bench.py"),
                           str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 7, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["complete"] is False and result["checkpoints"] == 6
    assert len(result["runs"]["prefetch0"]) == 1 and result["runs"]["prefetch1"] == [] == result["runs"]["prefetch2"]
    assert "ratio" not in result  # not until both of its sweeps are in
    assert not [p.name for p in tmp_path.iterdir() if ".fastspec-tmp-" in p.name]  # written by rename
