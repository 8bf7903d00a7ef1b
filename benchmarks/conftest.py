"""Record what the benchmark numbers depend on in pytest-benchmark's JSON (machine_info)."""

from __future__ import annotations

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
