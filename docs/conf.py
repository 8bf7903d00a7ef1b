"""Sphinx configuration of fastspec's documentation site.

Built with ``sphinx-build -W --keep-going -n -b html docs docs/_build/html`` (warnings are
errors, every cross-reference must resolve); ``tests/test_docs.py`` runs that build.
"""

from __future__ import annotations

import atexit
import inspect
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# The local extension that renders the command line from fastspec.cli.build_parser.
sys.path.insert(0, os.path.join(HERE, "_ext"))

import fastspec  # noqa: E402  (after the path set-up; the installed package, or PYTHONPATH's)

project = "fastspec"
author = "the fastspec authors"
copyright = "2026, the fastspec authors"
version = release = fastspec.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "fastspec_cli",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# Quotes and ellipses only: "--" must stay two hyphens (command-line flags in help texts).
smartquotes_action = "qe"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "tutorials/GALLERY_HEADER.rst",
                    # sphinx-gallery writes these beside the executed pages; they are not pages.
                    "tutorials_gen/*.ipynb", "tutorials_gen/*.py", "tutorials_gen/*.zip",
                    "tutorials_gen/*.md5", "tutorials_gen/*.codeobj.json"]

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
# Headings down to ### get anchors, so pages can link to a section ([text](page.md#anchor)).
myst_heading_anchors = 3

# Nitpicky: every cross-reference must resolve. There is no network while building (CI and
# this machine are offline), so intersphinx has no inventory to fetch and is not enabled;
# references to other projects' types would then be unresolved, so they are listed here.
nitpicky = True
nitpick_ignore_regex = [
    # Types of other projects: torch, NumPy, pandas, transformers, lightning, torchmetrics,
    # lm-eval, and the standard library's typing/os names that autodoc writes out.
    ("py:.*", r"(torch|numpy|np|pandas|pd|transformers|lightning|torchmetrics|lm_eval|scipy)(\..*)?"),
    ("py:.*", r"(os|typing|collections\.abc|pathlib|argparse|dataclasses)\..*"),
    # lm-eval's model class, which fastspec-ablate subclasses, named as lm-eval's docs name it.
    ("py:class", r"HFLM"),
]

# Signatures show names and defaults; the types are in each docstring's Parameters section,
# in words a reader can follow (autodoc's expanded annotations would be unreadable and,
# without intersphinx, unresolvable).
autodoc_typehints = "none"
autodoc_member_order = "bysource"
# No "Bases:" line: the bases are private machinery (fastspec._settings.Settings, the
# callbacks' shared core) or another tool's class, and the docstrings say what a class is.
autodoc_default_options = {"members": True}

# numpydoc renders the sections; autodoc's :members: lists methods and properties, so
# numpydoc's own autosummary table of members would list them twice.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# The tutorials write their runs (models, traces, indexes) here, a fresh folder per build,
# removed when the build ends; run by hand they use ./fastspec-tutorials.
_tutorial_dir = tempfile.mkdtemp(prefix="fastspec-docs-tutorials-")
os.environ["FASTSPEC_TUTORIALS"] = _tutorial_dir
atexit.register(shutil.rmtree, _tutorial_dir, ignore_errors=True)


sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "tutorials_gen",
    # Every script is executed at each build, changed or not (sphinx-gallery would otherwise
    # reuse the output of an earlier build in the same tree): they are sized to take seconds.
    # `-D plot_gallery=0` builds the pages without running them, for quick edits.
    "filename_pattern": r".*\.py",
    "run_stale_examples": True,
    "ignore_pattern": r"(^|/)_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    # A tutorial that raises fails the build (an error, not a warning to overlook).
    "abort_on_example_error": True,
    "plot_gallery": "True",
    "show_memory": False,
    "min_reported_time": 1,
    # By name, not as a function object: Sphinx caches its configuration by pickling it.
    "reset_modules": ("matplotlib", "tutorial_setup.one_torch_thread"),
}

html_theme = "furo"
html_title = f"fastspec {release}"
html_static_path = []
html_show_sourcelink = False


def _init_signature(app, what, name, obj, options, signature, return_annotation):
    """A class whose ``__new__`` takes ``(*args, **kwargs)`` (CovarianceAccumulator's, which
    picks the folded subclass) would be documented with that signature, as autodoc prefers
    ``__new__``; show its ``__init__``'s parameters instead, without annotations."""
    if what == "class" and signature == "(*args, **kwargs)" and "__init__" in vars(obj):
        sig = inspect.signature(obj.__init__)
        params = [p.replace(annotation=inspect.Parameter.empty) for p in list(sig.parameters.values())[1:]]
        return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty)), None
    return None


def setup(app):
    app.connect("autodoc-process-signature", _init_signature)
