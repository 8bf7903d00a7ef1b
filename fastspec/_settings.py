"""Settings written once: a dataclass field carries its default, its help text, its check,
whether it changes results, and its command-line spelling (in the spirit of Hugging Face's
``TrainingArguments`` and ``HfArgumentParser``); and errors that name a setting in the words
of whoever set it: the keyword in Python, the flag on the command line.

The settings themselves live with what they configure (``fastspec.models.settings``); this
module is the machinery under them, at the bottom of the layers.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import textwrap
from typing import Any, Callable, Iterable, Mapping, TypeVar

S = TypeVar("S", bound="Settings")
#: A value for :class:`SettingError` that names the setting alone (``max_length``, ``--max-length``).
NAME_ONLY = ...


class SettingError(ValueError):
    """A fault in a setting, or advice that names one, in the words of whoever set it.

    The message is a ``template`` whose ``{name}`` fields are settings: ``str(err)`` spells
    them as Python keywords (``nan_policy='omit'``), `render` with a parser's flags as
    options (``--nan-policy omit``), so neither side rewrites the other's words. A subclass
    of `ValueError`, so code that catches that catches this.

    Parameters
    ----------
    template : str
        The message; each ``{name}`` field names a setting, and literal braces are doubled
        (`str.format` syntax).
    **named
        The settings the template names, with the values given (``...``, i.e.
        ``fastspec._settings.NAME_ONLY``: the setting's name alone, no value).

    Attributes
    ----------
    template : str
        The template, as given.
    named : dict
        The settings it names and their values.

    Examples
    --------
    >>> err = fastspec.SettingError("{batch_size} must be positive", batch_size=0)
    >>> str(err)
    'batch_size=0 must be positive'
    >>> err.render({"batch_size": "--batch-size"})
    '--batch-size 0 must be positive'
    >>> str(fastspec.SettingError("{layers} is empty", layers=...))
    'layers is empty'
    """

    def __init__(self, template: str, /, **named: Any):
        self.template, self.named = template, named
        super().__init__(self.render())

    def render(self, flags: Mapping[str, str] | None = None) -> str:
        """The message, its settings spelled as Python keywords or as command-line options.

        Parameters
        ----------
        flags : mapping of str to str, optional
            Keyword → option string (``{"batch_size": "--batch-size"}``); a keyword not in it
            is ``--`` and its kebab-case. None: spell settings as Python keywords.

        Returns
        -------
        str
            The message. As options, True and None values print the flag alone, False its
            ``--no-`` form, and sequences their items after the flag.

        Examples
        --------
        >>> err = fastspec.SettingError("{final_norm} needs a final norm", final_norm=False)
        >>> err.render()
        'final_norm=False needs a final norm'
        >>> err.render({})
        '--no-final-norm needs a final norm'
        """
        words = {}
        for name, value in self.named.items():
            if flags is None:
                words[name] = name if value is NAME_ONLY else f"{name}={value!r}"
            else:
                words[name] = _cli_words(flags.get(name, "--" + name.replace("_", "-")), value)
        return self.template.format(**words)

    def prefixed(self, prefix: str) -> "SettingError":
        """The same error with ``prefix`` (a file name, a layer) before its message.

        Parameters
        ----------
        prefix : str
            Plain text put before the message; braces in it are kept literally.

        Returns
        -------
        SettingError
            A new error naming the same settings.

        Examples
        --------
        >>> err = fastspec.SettingError("{folds} must be positive", folds=0)
        >>> str(err.prefixed("config.json: "))
        'config.json: folds=0 must be positive'
        """
        return SettingError(literal(prefix) + self.template, **self.named)


def literal(text: str) -> str:
    """``text`` as a :class:`SettingError` template part that names no setting (braces kept)."""
    return text.replace("{", "{{").replace("}", "}}")


def _cli_words(flag: str, value: Any) -> str:
    if value is NAME_ONLY or value is True or value is None:
        return flag
    if value is False:
        return flag.replace("--", "--no-", 1)
    if isinstance(value, (list, tuple)):
        return " ".join([flag, *map(str, value)])
    return f"{flag} {value}"


def setting(default: Any, help: str, *, affects: bool = False, check: Callable[[Any, str], Any] | None = None,
            flag: str | None = None, cli: dict[str, Any] | None = None) -> Any:
    """A settings field.

    Parameters
    ----------
    default
        The field's default, written here once.
    help
        Its help text, also the command line's.
    affects
        Whether it changes results (bound in a results directory's ``config.json``, refused on
        a resume that differs) or is operational.
    check
        ``check(value, name)``: the value to keep, or a :class:`SettingError`.
    flag
        The command line's option (default: ``--`` and the name in kebab-case); ``"-"`` keeps
        the field off the command line.
    cli
        Extra argparse keywords (``type``, ``choices``, ``nargs``, ``metavar``, ``action``;
        ``shown``: the default to show where the field's is None).

    Returns
    -------
    dataclasses.Field
        The field, its metadata holding all of the above.
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "affects": affects, "check": check, "flag": flag, "cli": dict(cli or {})})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of the settings dataclasses: every field is checked when made, and a bad value is
    a :class:`SettingError` naming it.

    A subclass's docstring gets its Parameters section from its fields (see
    `parameters_section`): the help text is written once, in `setting`, and serves the
    reference and the command line alike.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__:
            cls.__doc__ = with_parameters(cls.__doc__, parameters_section(_class_fields(cls)))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            if check is not None:
                object.__setattr__(self, f.name, check(getattr(self, f.name), f.name))

    @classmethod
    def names(cls) -> list[str]:
        """The names of the fields, in order.

        Returns
        -------
        list of str
            The field names.
        """
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls: type[S], base: "Settings | None" = None, /, *, caller: str = "", **options: Any) -> S:
        """Settings of this class from another's fields and keywords.

        Parameters
        ----------
        base
            Settings whose fields this class has are taken over (None: the defaults).
        caller
            The function whose keywords ``options`` are, named in a TypeError.
        **options
            Fields of this class, over ``base``'s.

        Returns
        -------
        Settings
            An instance of this class, every field checked.

        Raises
        ------
        TypeError
            An option that is no field of this class, in Python's own words for ``caller``.
        SettingError
            A field that fails its check.
        """
        unknown = [k for k in options if k not in cls.names()]
        if unknown:
            raise TypeError(f"{caller or cls.__name__}() got an unexpected keyword argument {unknown[0]!r}")
        values = {k: getattr(base, k) for k in cls.names() if base is not None and hasattr(base, k)}
        return cls(**{**values, **options})

    def to_config(self) -> dict[str, Any]:
        """Every field, as JSON values (what a results directory's ``config.json`` records).

        Returns
        -------
        dict
            Field name → value, tuples as lists.
        """
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def affecting_names(cls) -> tuple[str, ...]:
        """The fields that change results: those bound in a results directory's ``config.json``.

        Returns
        -------
        tuple of str
            Their names, in field order.
        """
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("affects"))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, only: Iterable[str] | None = None,
                      help: Mapping[str, str] | None = None) -> None:
        """Add one command-line option per field to ``parser``.

        An option not given leaves the field's default (``argparse.SUPPRESS``), so the
        default is written once, in the field; the help shows it.

        Parameters
        ----------
        parser : argparse.ArgumentParser
            The parser (or subcommand parser) to add the options to.
        only : iterable of str, optional
            The fields to add (default: all, except those whose ``flag`` is ``"-"``).
        help : mapping of str to str, optional
            Field name → help text to use instead of the field's own.
        """
        keep = None if only is None else set(only)
        for f in dataclasses.fields(cls):
            if (keep is not None and f.name not in keep) or f.metadata.get("flag") == "-":
                continue
            cli = dict(f.metadata["cli"])
            shown = f.default if f.default not in (None, False) else cli.get("shown")
            cli.pop("shown", None)
            help_text = (help or {}).get(f.name, f.metadata["help"]) + \
                (f" (default {_shown(shown)})" if shown is not None else "")
            if f.default is False and "action" not in cli:
                cli["action"] = "store_true"
            parser.add_argument(option_string(f), dest=f.name, default=argparse.SUPPRESS, help=help_text, **cli)

    @classmethod
    def from_args(cls: type[S], args: argparse.Namespace, **options: Any) -> S:
        """The settings a command line gave.

        Parameters
        ----------
        args
            A namespace parsed by a parser that :meth:`add_arguments` filled: the fields it did
            not give keep their defaults.
        **options
            Fields over the command line's.

        Returns
        -------
        Settings
            An instance of this class.

        Raises
        ------
        SettingError
            A field that fails its check.
        """
        given = {k: getattr(args, k) for k in cls.names() if hasattr(args, k)}
        return cls(**{**given, **options})


def _class_fields(cls: type) -> list[tuple[str, str, dataclasses.Field]]:
    """(name, annotation, field) of every field ``cls`` will have, in the dataclass's order.

    ``__init_subclass__`` runs before ``@dataclass`` has made ``cls`` one, so its own fields
    are still the `setting` objects in its namespace; its bases' are dataclass fields already.
    """
    def spelled(annotation: Any) -> str:  # a string under ``from __future__ import annotations``
        return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))

    found: dict[str, tuple[str, dataclasses.Field]] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            for f in dataclasses.fields(base):
                found[f.name] = (spelled(f.type), f)
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        value = cls.__dict__.get(name, dataclasses.MISSING)
        if isinstance(value, dataclasses.Field):
            found[name] = (spelled(annotation), value)
    return [(name, annotation, f) for name, (annotation, f) in found.items()]


def parameters_section(fields: Iterable[tuple[str, str, dataclasses.Field]]) -> str:
    """A numpydoc Parameters section from settings fields: the type from the annotation, the
    default and the help text from `setting`, and whether the field changes results.

    Parameters
    ----------
    fields
        ``(name, annotation, field)`` triples; fields made without `setting` (no help) are
        listed with their type and default alone.

    Returns
    -------
    str
        The section, its lines unindented, ending with a newline.
    """
    lines = ["Parameters", "----------"]
    for name, annotation, f in fields:
        default = "" if f.default is dataclasses.MISSING else f", default {f.default!r}"
        lines.append(f"{name} : {annotation}{default}")
        # Not capitalised: the help often starts with a value ("wang: ...", "right | left").
        help_text = f.metadata.get("help", "")
        if help_text and not help_text.endswith("."):
            help_text += "."
        shown = f.metadata.get("cli", {}).get("shown")
        if f.default is None and shown is not None:
            help_text += f" None means {_shown(shown)}."
        if f.metadata.get("affects"):
            # Why it is said here: a resumed run with another value is refused, which a reader
            # of the reference should know before changing it.
            help_text += " Changes results: bound in a results directory's ``config.json``."
        # Options as literals: Sphinx's smart quotes would print "--no-final-norm" with a dash.
        help_text = re.sub(r"(?<![\w`-])(--[a-z][\w-]*)", r"``\1``", help_text)
        if help_text:
            lines.extend(textwrap.wrap(help_text.strip(), 92, initial_indent="    ", subsequent_indent="    ",
                                       break_on_hyphens=False))
    return "\n".join(lines) + "\n"


def with_parameters(doc: str, section: str) -> str:
    """``doc`` (a class docstring) with ``section`` inserted before its first numpydoc section,
    or at its end; a docstring that has a Parameters section of its own is kept as it is."""
    lines = inspect.cleandoc(doc).splitlines()
    headers = [i for i in range(len(lines) - 1)
               if lines[i].strip() and set(lines[i + 1].strip()) == {"-"} and len(lines[i + 1].strip()) >= 3]
    if any(lines[i].strip() == "Parameters" for i in headers):
        return doc
    at = headers[0] if headers else len(lines)
    head = "\n".join(lines[:at]).rstrip("\n")
    tail = "\n".join(lines[at:])
    return head + "\n\n" + section + ("\n" + tail if tail else "")


def option_string(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def flags_of(parser: argparse.ArgumentParser, command: str | None = None) -> dict[str, str]:
    """Keyword → option string of every option of ``parser`` (of its subcommand ``command``
    alone, when given, with that one's subcommands): how :meth:`SettingError.render` spells a
    setting on that command line."""
    out: dict[str, str] = {}
    for action in parser._actions:  # argparse has no public accessor for its options
        if isinstance(action, argparse._SubParsersAction):
            subs = [action.choices[command]] if command in action.choices else \
                [] if command is not None else list(action.choices.values())
            for sub in subs:
                out.update({k: v for k, v in flags_of(sub).items() if k not in out})
        elif action.option_strings and action.dest not in out:
            out[action.dest] = max(action.option_strings, key=len)
    return out


def jsonable(value: Any) -> Any:
    """Tuples as lists (JSON has no tuple), everything else as it is."""
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    return value


# -- checks: each returns the value to keep, or raises SettingError naming the setting --------

def fault(name: str, what: str, value: Any) -> SettingError:
    """``name`` ``what``, got ``value``: the error of a setting that failed its check."""
    return SettingError("{%s} %s, got %s" % (name, literal(what), literal(repr(value))), **{name: NAME_ONLY})


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fault(name, "must be a positive integer", value)
    return value


def non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fault(name, "must be a non-negative integer", value)
    return value


def optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """``check``, with None allowed."""
    def checked(value: Any, name: str) -> Any:
        return None if value is None else check(value, name)
    return checked


def one_of(*choices: Any) -> Callable[[Any, str], Any]:
    def checked(value: Any, name: str) -> Any:
        if value not in choices:
            words = " or ".join(map(repr, choices)) if len(choices) == 2 else "one of " + ", ".join(map(repr, choices))
            raise fault(name, "must be " + words, value)
        return value
    return checked


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise fault(name, "must be True or False", value)
    return value
