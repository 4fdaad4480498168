"""The public surface: every name in ``__all__`` exists, once, sorted; nothing leaks."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import sluiceway

PUBLIC_MODULES = ["sluiceway", "sluiceway.testing", "sluiceway.prometheus"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_unique_and_resolves(name: str) -> None:
    """``__all__`` is alphabetised, has no duplicates, and every name resolves."""
    module = importlib.import_module(name)
    names = list(module.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for attr in names:
        assert getattr(module, attr) is not None


def test_no_public_name_missing_from_all() -> None:
    """Every public attribute of the package is listed in ``__all__``."""
    public = {
        n
        for n, v in vars(sluiceway).items()
        if not n.startswith("_") and not isinstance(v, type(sluiceway))
    }
    assert public - {"annotations", "TYPE_CHECKING"} <= set(sluiceway.__all__)


def test_prometheus_exports_every_public_function() -> None:
    """Each public function of ``sluiceway.prometheus``, ``add_source`` included, is exported."""
    import inspect

    import sluiceway.prometheus as swp

    functions = {
        n
        for n, v in vars(swp).items()
        if inspect.isfunction(v) and not n.startswith("_") and v.__module__ == swp.__name__
    }
    assert "add_source" in functions
    assert functions <= set(swp.__all__)


def test_core_import_is_light() -> None:
    """Importing sluiceway pulls in none of the integrations' dependencies."""
    code = (
        "import sys, sluiceway; "
        "heavy = {'rich', 'prometheus_client', 'nats', 'starlette', 'uvicorn', 'httpx', "
        "'orjson', 'asyncio'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_error_is_a_sluiceway_error() -> None:
    """The exception tree has one root, and the stdlib bases the docs promise."""
    assert issubclass(sluiceway.Full, sluiceway.SluicewayError)
    assert issubclass(sluiceway.Full, TimeoutError)
    assert issubclass(sluiceway.ConfigError, ValueError)
    assert issubclass(sluiceway.ConfigTypeError, TypeError)
    for name in ("Closed", "Permanent", "BatchError", "CircuitOpen", "ConfigError"):
        assert issubclass(getattr(sluiceway, name), sluiceway.SluicewayError)
