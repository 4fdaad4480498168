"""Loading a ``module:function`` factory named on the command line.

Like ``uvicorn``, ``gunicorn`` and ``celery``, the working directory (or the ``directory``
given) goes first on ``sys.path``, so ``sluiceway serve myapp:make`` works from the folder
holding ``myapp.py`` without ``PYTHONPATH``. Every way the spec can be wrong raises
:class:`FactoryError`, whose message is one line naming the problem.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from ._errors import SluicewayError

__all__ = ["FactoryError", "build_pipeline", "load_factory"]


class FactoryError(SluicewayError, ValueError):
    """The ``module:function`` spec cannot give a pipeline; the message says why."""


def load_factory(spec: str, directory: str | None = None) -> Callable[[], Any]:
    """Import ``module:attribute`` with ``directory`` (default: the cwd) first on the path."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise FactoryError(f"factory must look like module:function, got {spec!r}")
    path = os.path.abspath(directory if directory is not None else os.getcwd())
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            message = f"cannot import module {module!r} (searched {path} first): {exc}"
            raise FactoryError(message) from None
        raise FactoryError(f"importing {module!r} failed: {exc}") from exc
    except Exception as exc:
        raise FactoryError(f"importing {module!r} failed: {type(exc).__name__}: {exc}") from exc
    try:
        factory = getattr(loaded, attr)
    except AttributeError:
        raise FactoryError(f"module {module!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise FactoryError(f"{spec} is a {type(factory).__name__}, not a function")
    return factory  # type: ignore[no-any-return]


def build_pipeline(spec: str, factory: Callable[[], Any]) -> Any:
    """Call ``factory()``; a :class:`FactoryError` unless it returns a Pipeline."""
    from ._core._pipeline import Pipeline  # noqa: PLC0415 - keeps this module light

    try:
        pipeline = factory()
    except Exception as exc:
        raise FactoryError(f"{spec}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(pipeline, Pipeline):
        raise FactoryError(f"{spec}() returned {type(pipeline).__name__}, not a sluiceway.Pipeline")
    return pipeline
