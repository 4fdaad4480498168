"""The ``sluiceway`` command line: version, plain help texts, argument checks, install hints."""

from __future__ import annotations

import argparse
import builtins
import re
import sys
from typing import Any

import pytest

import sluiceway
from sluiceway import cli

SUBCOMMANDS = ("bench", "serve", "worker", "top")


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``sluiceway --version`` prints the one version the package and its metadata carry."""
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"sluiceway {sluiceway.__version__}"
    assert version("sluiceway") == sluiceway.__version__


@pytest.mark.parametrize("argv", [(), *((c,) for c in SUBCOMMANDS)])
def test_help_is_plain_text(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    """No help page carries reStructuredText markup or points at files users do not have."""
    text = _help(capsys, *argv)
    assert "``" not in text
    assert ":class:" not in text
    assert "shared/" not in text
    assert "WORKLOAD.md" not in text


@pytest.mark.parametrize("command", ["bench", "top"])
def test_every_option_states_its_default(command: str) -> None:
    """Every option of ``bench`` and ``top`` has a help line that names its default."""
    sub = next(
        a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices[command]
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        assert action.help, action.dest
        assert "default" in action.help, action.dest


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duration-scale", "0"], "argument --duration-scale: must be > 0"),
        (["--duration-scale", "-1.5"], "argument --duration-scale: must be > 0"),
        (["--shards", "0"], "argument --shards: must be > 0"),
        (["--shards", "-2"], "argument --shards: must be > 0"),
        (["--batch-size", "0"], "argument --batch-size: must be > 0"),
        (["--batch-size", "many"], "argument --batch-size: not a number"),
        (["--repeat", "0"], "argument --repeat: must be > 0"),
        (["--submit-many", "-1"], "argument --submit-many: must be >= 0"),
        (["--switch-interval", "0"], "argument --switch-interval: must be > 0"),
        (["--switch-interval", "fast"], "argument --switch-interval: not a number"),
    ],
)
def test_bench_rejects_bad_numbers(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Non-positive sizes and scales are argument errors (exit 2), before anything runs."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "want"), [("auto", "auto"), ("AUTO", "auto"), ("none", None), ("0.0003", 0.0003)]
)
def test_bench_switch_interval_takes_auto_none_or_seconds(text: str, want: object) -> None:
    """``--switch-interval`` is passed to the Pipeline as "auto", None or seconds."""
    from sluiceway.bench._cli import config_from_args

    args = cli._parser().parse_args(["bench", "--switch-interval", text])
    assert config_from_args(args).switch_interval == want


def test_missing_extra_names_the_module_and_the_extra_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command whose extra is missing says which module is missing and what to install."""
    real_import = builtins.__import__

    def no_uvicorn(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvicorn" or name.startswith("uvicorn."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sluiceway._serve", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    assert cli.main(["serve", "tests.serve_app:factory"]) == 2
    err = capsys.readouterr().err
    assert err.count("pip install 'sluiceway[http]'") == 1
    assert "'uvicorn'" in err


def test_missing_module_follows_the_cause_of_an_integration_error() -> None:
    """An integration re-raises with the missing module as the cause; its name is reported."""
    inner = ModuleNotFoundError("No module named 'nats'", name="nats")
    outer = ImportError("sluiceway.nats needs 'nats': pip install 'sluiceway[nats]'")
    outer.__cause__ = inner
    assert cli._missing_module(outer) == "nats"
    assert cli._missing_module(inner) == "nats"


def test_pyproject_classifiers_match_the_tested_versions() -> None:
    """The metadata claims exactly the CPython versions CI tests (3.11, 3.12, 3.13)."""
    from importlib.metadata import metadata

    classifiers = metadata("sluiceway").get_all("Classifier") or []
    claimed = sorted(
        m.group(1)
        for c in classifiers
        if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))
    )
    assert claimed == ["3.11", "3.12", "3.13"]
