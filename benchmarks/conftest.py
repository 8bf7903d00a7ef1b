"""Record what the benchmark numbers depend on in pytest-benchmark's JSON (machine_info), and,
where FASTSPEC_BENCH_JSONL asks, each benchmark's result as a JSON line as soon as it is done."""

from __future__ import annotations

import json
import os

import pytest


@pytest.hookimpl(optionalhook=True)  # the hook exists only where pytest-benchmark is installed
def pytest_benchmark_update_machine_info(config, machine_info):
    import numpy
    import torch

    import fastspec

    try:
        import reptrix  # noqa: F401
        from importlib.metadata import version

        reptrix_version = version("reptrix")
    except Exception:  # not installed, or installed without metadata
        reptrix_version = None
    try:
        from importlib.metadata import version

        sklearn_version = version("scikit-learn")
    except Exception:
        sklearn_version = None
    machine_info["fastspec_bench"] = {
        "full": os.environ.get("FASTSPEC_BENCH_FULL", "") == "1",
        "fastspec": fastspec.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "scikit-learn": sklearn_version,
        "reptrix": reptrix_version,
        "cpu_count": os.cpu_count(),
    }


def _jsonable(value):
    return value.item() if hasattr(value, "item") else str(value)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With FASTSPEC_BENCH_JSONL set (benchmarks/gpu.sh sets it), append one JSON line per
    benchmark to that file as soon as it is done, passed, failed or skipped: pytest-benchmark
    writes its JSON only at the end of the session, which a run cut off by its time limit never
    reaches. Fields: step (FASTSPEC_BENCH_STEP), name, group, method, outcome, median, min,
    mean, rounds (seconds), extra_info; reason (a skip) or error (a failure)."""
    report = yield
    path = os.environ.get("FASTSPEC_BENCH_JSONL")
    if not path or "benchmark" not in getattr(item, "fixturenames", ()):
        return report
    if report.when != "call" and report.passed:  # setup and teardown: only what went wrong there
        return report
    try:
        line = _bench_line(item, call, report)
    except Exception as err:  # noqa: BLE001  (a record that cannot be made must not stop the run)
        line = {"step": os.environ.get("FASTSPEC_BENCH_STEP", ""), "name": item.name, "outcome": report.outcome,
                "error": f"could not record this benchmark: {type(err).__name__}: {err}"}
    if line is not None:
        with open(path, "a") as f:
            f.write(json.dumps(line, default=_jsonable) + "\n")
    return report


def _bench_line(item, call, report):
    reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else None
    if reason and reason.startswith("Skipped: "):
        reason = reason[len("Skipped: "):]
    callspec = getattr(item, "callspec", None)
    # An empty parameter set (a kind of shape that FASTSPEC_BENCH_CASES left out) is no benchmark.
    if (reason or "").startswith("got empty parameter set") or (
            callspec is not None and any(type(v).__name__ == "NotSetType" for v in callspec.params.values())):
        return None
    bench = item.funcargs.get("benchmark") if hasattr(item, "funcargs") else None
    marker = item.get_closest_marker("benchmark")
    extra = dict(getattr(bench, "extra_info", None) or {})
    line = {
        "step": os.environ.get("FASTSPEC_BENCH_STEP", ""),
        "name": item.name,
        "group": getattr(bench, "group", None) or (marker.kwargs.get("group") if marker else None),
        "method": extra.get("method") or (callspec.params.get("method") if callspec else None),
        "outcome": report.outcome if report.when == "call" else f"{report.outcome} in {report.when}",
    }
    stats = getattr(getattr(bench, "stats", None), "stats", None)
    if stats is not None and getattr(stats, "data", None):  # timed (a skip before the timing leaves it empty)
        line.update(median=stats.median, min=stats.min, mean=stats.mean, rounds=stats.rounds)
    if extra:
        line["extra_info"] = extra
    if reason:
        line["reason"] = reason
    elif report.failed:
        excinfo = call.excinfo
        line["error"] = (f"{excinfo.typename}: {excinfo.value}" if excinfo else str(report.longrepr))[:1000]
    return line
