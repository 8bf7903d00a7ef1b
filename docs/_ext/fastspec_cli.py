"""A Sphinx directive that renders an argparse command line, so the reference cannot drift.

``.. argparse-cli:: fastspec.cli:build_parser`` (MyST: ```` ```{argparse-cli} fastspec.cli:build_parser ````)
imports the function, builds the parser and writes one section per command and subcommand:
its help, its usage line as argparse prints it, and every option with its metavar, choices,
default and help. The options of ``fastspec trace`` and ``fastspec memorization`` are
themselves generated from the settings dataclasses, so the page follows them too.
"""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.util.nodes import make_id


def _load(spec: str) -> argparse.ArgumentParser:
    module, _, func = spec.partition(":")
    if not func:
        raise ValueError(f"argparse-cli expects MODULE:FUNCTION, got {spec!r}")
    return getattr(importlib.import_module(module), func)()


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order they were added."""
    out = []
    for action in parser._actions:  # argparse keeps no public list of subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


def _usage(parser: argparse.ArgumentParser) -> str:
    """argparse's usage line at a fixed width (it reads the terminal's otherwise), with a
    subcommand list shown as COMMAND: the commands are listed below it, each with its help."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    saved = [a.metavar for a in subs]
    old_columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        for action in subs:
            action.metavar = "COMMAND"
        return parser.format_usage().strip()
    finally:
        for action, metavar in zip(subs, saved):
            action.metavar = metavar
        if old_columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old_columns


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar if isinstance(action.metavar, str) else action.dest
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    fmt = argparse.HelpFormatter("fastspec")
    args = fmt._format_args(action, action.dest.upper())  # the metavars argparse's --help prints
    return ", ".join(f"{opt} {args}" for opt in action.option_strings)


def _describe(action: argparse.Action) -> str:
    text = (action.help or "").replace("%(default)s", str(action.default))
    notes = []
    # The choices show in the invocation ({right,left}) unless a metavar hides them.
    if action.choices is not None and action.metavar is not None and not isinstance(action, argparse._SubParsersAction):
        notes.append("one of " + ", ".join(str(c) for c in action.choices))
    if action.required and action.option_strings:
        notes.append("required")
    default = action.default
    if (action.option_strings and action.nargs != 0 and default not in (None, argparse.SUPPRESS)
            and "default" not in text):
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        notes.append(f"default: {shown}")
    if notes:
        text = (text.rstrip(".") + ". " if text else "") + "; ".join(n[0].upper() + n[1:] for n in notes) + "."
    return text


class ArgparseCli(Directive):
    """Render ``MODULE:FUNCTION``'s parser: a section per subcommand, options as a list."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        parser = _load(self.arguments[0])
        env = self.state.document.settings.env
        env.note_dependency(__file__)
        out: list[nodes.Node] = []
        out.extend(self._body(parser))
        for name, helptext, sub in _subparsers(parser):
            out.append(self._section(f"{parser.prog} {name}", helptext, sub))
        return out

    def _section(self, title: str, helptext: str, parser: argparse.ArgumentParser) -> nodes.section:
        env = self.state.document.settings.env
        node_id = make_id(env, self.state.document, "", title)
        section = nodes.section(ids=[node_id], names=[nodes.fully_normalize_name(title)])
        section += nodes.title(text=title)
        # A label per command ({ref}`fastspec-trace`), so other pages can link to its section.
        env.get_domain("std").note_hyperlink_target(node_id, env.docname, node_id, title)
        if helptext:
            section += nodes.paragraph(text=helptext[0].upper() + helptext[1:] + ("" if helptext.endswith(".") else "."))
        section.extend(self._body(parser))
        self.state.document.note_implicit_target(section)
        for name, subhelp, sub in _subparsers(parser):
            section += self._section(f"{title} {name}", subhelp, sub)
        return section

    def _body(self, parser: argparse.ArgumentParser) -> list[nodes.Node]:
        out: list[nodes.Node] = []
        if parser.description:
            out.append(nodes.paragraph(text=parser.description))
        if not parser.add_help:
            # lm-eval: the command passes its arguments on; argparse has nothing to show.
            return out
        usage = _usage(parser)
        out.append(nodes.literal_block(usage, usage, language="text"))
        commands = _subparsers(parser)
        if commands:
            listing = nodes.definition_list()
            for name, helptext, _ in commands:
                item = nodes.definition_list_item()
                term = nodes.term()
                term += nodes.literal(text=name)
                item += term
                definition = nodes.definition()
                definition += nodes.paragraph(text=helptext)
                item += definition
                listing += item
            out.append(listing)
        items = nodes.definition_list()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            item = nodes.definition_list_item()
            term = nodes.term()
            term += nodes.literal(text=_invocation(action))
            item += term
            definition = nodes.definition()
            definition += nodes.paragraph(text=_describe(action) or " ")
            item += definition
            items += item
        if len(items):
            out.append(items)
        return out


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("argparse-cli", ArgparseCli)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
