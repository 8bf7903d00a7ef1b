"""The documentation site builds, offline, with no warning, and its tutorials execute.

Runs ``sphinx-build -W --keep-going -n -b html docs <tmp>`` in a subprocess, as a reader would
(README.md says how): warnings are errors, nitpicky mode makes every cross-reference resolve,
and sphinx-gallery executes every script of ``docs/tutorials/`` (a tutorial that raises fails
the build). Skips only when the docs extra (``pip install 'fastspec[docs]'``) is not installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

for _module in ("sphinx", "myst_parser", "furo", "numpydoc", "sphinx_gallery"):
    pytest.importorskip(_module, reason=f"the docs extra ({_module}) is not installed: pip install 'fastspec[docs]'")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
# Sphinx's own prefixes for what it reports: a warning, an error, or a "CRITICAL" failure.
REPORTED = re.compile(r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("docs")
    html = os.path.join(out, "html")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-b", "html", "-q",
           "-d", os.path.join(out, "doctrees"), DOCS, html]
    # Not run from the repository root: `python -m` puts the working directory first on sys.path,
    # and the source tree's fastspec (no compiled _C) would shadow the installed one.
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    reported = [line for line in proc.stderr.splitlines() if REPORTED.search(line)]
    assert proc.returncode == 0 and not reported, (
        f"sphinx-build exited {proc.returncode} with {len(reported)} warnings/errors:\n"
        + "\n".join(reported[:60]) + "\n--- stderr tail ---\n" + proc.stderr[-6000:])
    return html


def _page(html: str, *parts: str) -> str:
    path = os.path.join(html, *parts)
    assert os.path.isfile(path), f"{path} was not built"
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_the_site_builds_without_warnings(built: str) -> None:
    index = _page(built, "index.html")
    for target in ("getting-started.html", "reference/index.html", "benchmarks.html", "explanation/index.html",
                   "how-to/index.html", "tutorials_gen/index.html"):
        assert target in index, f"the front page does not link {target}"


def test_the_tutorials_executed(built: str) -> None:
    names = sorted(n for n in os.listdir(os.path.join(DOCS, "tutorials")) if n.startswith("plot_") and n.endswith(".py"))
    assert len(names) >= 5
    for name in names:
        page = _page(built, "tutorials_gen", name.replace(".py", ".html"))
        # sphinx-gallery inserts the figures a script drew, and the output it printed, only
        # when it ran the script.
        assert "sphx-glr-single-img" in page or "sphx-glr-multi-img" in page, f"{name}: no figure in its page"


def test_the_reference_documents_every_public_name(built: str) -> None:
    import fastspec

    pages = "".join(_page(built, "reference", p) for p in ("api.html", "models.html", "ngram.html", "analyses.html"))
    for name in fastspec.__all__:
        if name in ("__version__", "toy"):
            continue
        assert f'id="fastspec.{name}"' in pages, f"fastspec.{name} has no entry in the API reference"


def test_the_command_line_page_is_generated_from_the_parser(built: str) -> None:
    from fastspec.cli import build_parser

    page = _page(built, "reference", "cli.html")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in sub.choices:
        assert f"fastspec {command}</h2>" in page.replace("¶", "") or f"fastspec {command}<a" in page, \
            f"fastspec {command} has no section on the command-line page"
    assert "--batch-size" in page and "--n-texts" in page
