"""fastspec._settings and fastspec.models.settings: every setting written once, its checks, the
command line generated from it, and errors that name a setting as a keyword or as a flag."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

import fastspec
from fastspec._settings import SettingError, flags_of
from fastspec.cli import build_parser, main
from fastspec.models.settings import DEFAULT_SAVE_EVERY, ExtractSettings, MemorizationSettings, TraceSettings
from fastspec.spectral.metrics import DEFAULT_FIT_RANGE


def test_defaults_are_the_fields_and_the_command_line_takes_them():
    s = TraceSettings()
    assert (s.layers, s.pooling, s.max_length, s.batch_size, s.folds) == ("all", "last", "auto", 16, 1)
    assert s.fit_range == DEFAULT_FIT_RANGE and s.save_every == DEFAULT_SAVE_EVERY and s.prefetch is None
    args = build_parser().parse_args(["trace", "ck", "--data", "d.txt", "--out", "o"])
    assert TraceSettings.from_args(args) == s  # nothing given: the fields' own defaults
    args = build_parser().parse_args(["trace", "ck", "--data", "d.txt", "--out", "o", "--layers", "0,2", "--n-texts",
                                      "7", "--fit-range", "5", "50", "--save-every", "0", "--no-final-norm", "--evict",
                                      "--labels", "base", "sft"])
    got = TraceSettings.from_args(args)
    assert got == TraceSettings(layers=(0, 2), n=7, fit_range=(5, 50), save_every=None, final_norm=False, evict=True,
                                labels=("base", "sft"))


def test_every_field_has_an_option_and_help():
    from fastspec.analyses.ablation import AblateSettings

    for cls, command in ((TraceSettings, "trace"), (MemorizationSettings, "memorization"), (AblateSettings, "ablate")):
        flags = flags_of(build_parser(), command)
        for f in dataclasses.fields(cls):
            assert f.metadata["help"], f.name
            assert f.name in flags, f"{cls.__name__}.{f.name} has no command-line option"
    flags = flags_of(build_parser(), "trace")
    assert flags["n"] == "--n-texts"  # not --n: torchrun would take it for one of its own


def test_what_binds_is_what_changes_results():
    assert set(TraceSettings.affecting_names()) == {"layers", "pooling", "max_length", "batch_size", "final_norm",
                                                    "padding_side", "folds", "dtype", "fit_range"}
    assert set(ExtractSettings.affecting_names()) <= set(TraceSettings.affecting_names())
    assert TraceSettings(layers=[3, 1]).to_config()["layers"] == [3, 1]  # JSON: lists, not tuples


@pytest.mark.parametrize("options, keyword, flag", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0", "--batch-size must be a positive integer"),
    ({"dtype": "int8"}, "dtype must be one of 'float32', 'bfloat16', 'float16', got 'int8'", "--dtype must be one of"),
    ({"padding_side": "middle"}, "padding_side must be 'right' or 'left'", "--padding-side must be"),
    ({"fit_range": (9, 9)}, "fit_range (9, 9) must satisfy", "--fit-range (9, 9) must satisfy"),
    ({"n": -1}, "n must be a positive integer", "--n-texts must be a positive integer"),
    ({"layers": "some"}, "layers must be 'all' or a list", "--layers must be 'all'"),
    ({"refine": -1}, "refine must be a non-negative integer", "--refine must be"),
])
def test_a_bad_setting_is_named_as_keyword_in_python_and_as_flag_on_the_command_line(options, keyword, flag):
    with pytest.raises(SettingError) as err:
        TraceSettings(**options)
    assert keyword in str(err.value)
    assert err.value.render(flags_of(build_parser(), "trace")).startswith(flag)


def test_unknown_keywords_are_refused_as_python_refuses_them(tmp_path):
    with pytest.raises(TypeError, match="trace\\(\\) got an unexpected keyword argument 'nn'"):
        fastspec.trace(["x"], ["a"], tmp_path, nn=3)
    with pytest.raises(TypeError, match="extract\\(\\) got an unexpected keyword argument 'dtype'"):
        fastspec.extract(None, None, ["a"], dtype="float32")  # a loading setting: extract takes a loaded model


def test_settings_and_keywords_combine():
    base = TraceSettings(folds=3, n=10)
    assert TraceSettings.build(base, n=20) == TraceSettings(folds=3, n=20)
    assert ExtractSettings.build(base) == ExtractSettings(folds=3)


def test_advice_names_the_flag_on_the_command_line(tmp_path, capsys):
    import numpy as np

    x = np.ones((40, 3), dtype=np.float32)
    x[5, 1] = np.nan
    np.save(tmp_path / "n.npy", x)
    assert main(["spectrum", str(tmp_path / "n.npy"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pass --nan-policy omit to drop rows" in err and "nan_policy" not in err
    with pytest.raises(ValueError, match="pass nan_policy='omit' to drop rows"):  # Python: the keyword
        fastspec.spectrum(x)
    assert main(["trace", "ck", "--data", str(tmp_path / "d.txt"), "--out", str(tmp_path / "o"), "--batch-size",
                 "0"]) == 2
    assert "error: --batch-size must be a positive integer, got 0" in capsys.readouterr().err


def test_setting_error_templates_keep_literal_braces():
    err = SettingError("{x}: {{not a setting}}", x=2)
    assert str(err) == "x=2: {not a setting}"
    assert err.prefixed("file {a}.npy: ").render({"x": "--x"}) == "file {a}.npy: --x 2: {not a setting}"
    assert SettingError("pass {flag}", flag=True).render({}) == "pass --flag"
    assert SettingError("pass {flag}", flag=False).render({}) == "pass --no-flag"
    assert SettingError("use {r}", r=(1, 2)).render({}) == "use --r 1 2"


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"fastspec {fastspec.__version__}"


def test_parser_options_of_settings_do_not_shadow_defaults():
    parser = argparse.ArgumentParser()
    MemorizationSettings.add_arguments(parser)
    assert vars(parser.parse_args([])) == {}  # nothing given, nothing set: the fields' defaults apply
    assert MemorizationSettings.from_args(parser.parse_args(["--rule", "all"])).rule == "all"


def test_ablate_takes_its_settings_from_the_command_line(capsys):
    from fastspec.analyses.ablation import AblateSettings

    args = build_parser().parse_args(["ablate", "m", "--items", "i.jsonl", "--basis-data", "b.txt", "--k", "1", "5",
                                      "--modes", "remove", "--n-texts", "9"])
    assert AblateSettings.from_args(args) == AblateSettings(ks=(1, 5), modes=("remove",))
    assert TraceSettings.from_args(args).n == 9
    with pytest.raises(SettingError, match=r"ks must be positive integers, got \[0\]"):
        AblateSettings(ks=[0])
    # refused before the model is looked for
    assert main(["ablate", "no-such-model", "--items", "i.jsonl", "--basis-data", "b.txt", "--k", "0"]) == 2
    assert "error: --k must be positive integers, got [0]" in capsys.readouterr().err


def test_the_reference_documents_each_field_from_its_one_help_text():
    from fastspec._settings import Settings, setting

    @dataclasses.dataclass(frozen=True)
    class Base(Settings):
        """Base settings.

        Examples
        --------
        >>> Base()
        """

        k: int = setting(3, "how many, see --k-max", affects=True)

    @dataclasses.dataclass(frozen=True)
    class Child(Base):
        """Child settings."""

        where: str | None = setting(None, "where it runs", cli={"shown": "cpu"})

    @dataclasses.dataclass(frozen=True)
    class Own(Base):
        """Own.

        Parameters
        ----------
        k : int
            Written by hand.
        """

    base = Base.__doc__.splitlines()
    # The section comes before Examples, the flag is a literal, and a field that binds says so.
    assert base.index("Parameters") < base.index("Examples")
    assert "k : int, default 3" in base and any("``--k-max``" in line and "Changes results" in line for line in base)
    child = Child.__doc__
    assert "k : int, default 3" in child and "where : str | None, default None" in child  # inherited fields too
    assert "where it runs. None means cpu." in child and child.index("k : int") < child.index("where :")
    assert Own.__doc__.count("Parameters") == 1 and "Written by hand." in Own.__doc__
    # One source: every field's help (first words) is in both the reference and the command line.
    parser = argparse.ArgumentParser()
    TraceSettings.add_arguments(parser)
    helps = {a.dest: a.help for a in parser._actions}
    for f in dataclasses.fields(TraceSettings):
        first = " ".join(f.metadata["help"].split()[:3])
        assert first in " ".join(TraceSettings.__doc__.split()) and helps[f.name].startswith(f.metadata["help"][:20])
