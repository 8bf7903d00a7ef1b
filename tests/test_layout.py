"""The package layout: one subpackage per capability, layers that only import downwards, no
cycles (import-linter's contracts in pyproject.toml), and the public surface on top."""

import importlib
import os
import subprocess
import sys

import pytest

import fastspec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPABILITIES = ("spectral", "models", "ngram", "analyses", "report")


def _lint_imports(cwd: str, config: str) -> subprocess.CompletedProcess:
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    return subprocess.run([exe, "--config", config, "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_import_contracts_hold():
    proc = _lint_imports(ROOT, os.path.join(ROOT, "pyproject.toml"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " 0 broken" in proc.stdout and "BROKEN" not in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize("offender, line", [
    ("fastspec/spectral/metrics.py", "from ..models import trace as _upwards\n"),          # a layer upwards
    ("fastspec/models/phases.py", "from ..ngram import index as _sideways\n"),             # models ↔ ngram
    ("fastspec/spectral/accumulator.py", "def _cycle():\n    from .oneshot import spectrum\n"),  # a hidden cycle
])
def test_the_contracts_catch_a_bad_import(tmp_path, offender, line):
    """The contracts can fail: a copy of the package with one bad import breaks one of them."""
    import shutil

    shutil.copytree(os.path.join(ROOT, "fastspec"), tmp_path / "fastspec",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    with open(tmp_path / offender, "a") as fh:
        fh.write("\n\n" + line)
    proc = _lint_imports(str(tmp_path), str(tmp_path / "pyproject.toml"))
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-2000:]


def test_each_capability_is_a_subpackage_that_re_exports_only_its_public_names():
    for name in CAPABILITIES:
        sub = importlib.import_module(f"fastspec.{name}")
        assert os.path.basename(sub.__file__) == "__init__.py", name
        for public in sub.__all__:
            assert hasattr(sub, public), f"fastspec.{name}.{public}"


def test_toy_is_a_module_by_both_spellings():
    import fastspec.toy as toy

    assert toy is fastspec.toy is fastspec.analyses.toy
    for name in ("train", "run_conditions", "compression"):
        assert callable(getattr(toy, name))
