"""Every public name has a numpydoc docstring, and its examples run.

The public names are those the API reference documents: ``fastspec.__all__``, the public
functions and classes of ``fastspec.toy``, ``fastspec.integrations.*`` and
``fastspec.compat.*``, and the public methods and properties those classes define. Each is
checked with numpydoc's own validator for the sections a reader needs (a summary, every
parameter documented and no unknown one, Returns or Yields where a value comes back, and
Examples on functions and classes), and the ``>>>`` lines of its docstring run as a doctest.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import types

import numpy as np
import pytest
import torch

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="the docs extra (numpydoc) is not installed")

import fastspec  # noqa: E402

MODULES = (
    "fastspec.integrations.hf",
    "fastspec.integrations.lightning",
    "fastspec.integrations.torchmetrics",
    "fastspec.integrations.lm_eval",
    "fastspec.integrations.ray",
    "fastspec.compat.reptrix",
)

# numpydoc's codes: GL08 no docstring, SS01 no summary, PR01 a parameter not documented,
# PR02 a documented parameter that does not exist, RT01 no Returns, YD01 no Yields.
REQUIRED = {"GL08", "SS01", "PR01", "PR02", "RT01", "YD01"}
# Examples are required of functions and classes, not of every method and property.
REQUIRED_TOP = REQUIRED | {"EX01"}


def _own_members(cls: type) -> list[tuple[str, object]]:
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property) or inspect.isfunction(member):
            out.append((f"{cls.__module__}.{cls.__qualname__}.{name}", member))
    return out


def _public(module: types.ModuleType, names: list[str] | None = None) -> list[tuple[str, object]]:
    names = names if names is not None else getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == module.__name__]
    out = []
    for name in names:
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType) or not callable(obj):
            continue  # fastspec.toy is walked on its own; constants (lm_eval.NAME) are documented in prose
        out.append((f"{obj.__module__}.{obj.__qualname__}", obj))
        if inspect.isclass(obj):
            out.extend(_own_members(obj))
    return out


def public_names() -> dict[str, object]:
    found = _public(fastspec) + _public(fastspec.toy)
    for name in MODULES:
        try:
            found += _public(importlib.import_module(name))
        except ImportError:  # an integration whose tool is not installed is checked where it is
            continue
    return dict(found)


PUBLIC = public_names()


def _errors(qualname: str, obj: object) -> list[str]:
    module = (obj.fget if isinstance(obj, property) else obj).__module__
    top = "." not in qualname.removeprefix(module + ".")
    wanted = REQUIRED_TOP if top else REQUIRED
    report = numpydoc_validate.validate(qualname)
    return [f"{code}: {msg}" for code, msg in report["errors"] if code in wanted]


def test_public_names_found() -> None:
    assert fastspec.spectrum in PUBLIC.values() and fastspec.CovarianceAccumulator.update in PUBLIC.values()
    assert len(PUBLIC) > 50


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_numpydoc_sections(qualname: str) -> None:
    errors = _errors(qualname, PUBLIC[qualname])
    assert not errors, f"{qualname}:\n  " + "\n  ".join(errors)


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_examples_run(qualname: str, tmp_path, monkeypatch) -> None:
    obj = PUBLIC[qualname]
    doc = inspect.getdoc(obj.fget if isinstance(obj, property) else obj) or ""
    test = doctest.DocTestParser().get_doctest(
        doc, {"fastspec": fastspec, "np": np, "torch": torch}, qualname, None, 0)
    if not test.examples:
        return
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)
