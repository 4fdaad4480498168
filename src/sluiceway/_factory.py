"""Loading a ``module:function`` factory named on the command line."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["load_factory"]


def load_factory(spec: str) -> Callable[[], Any]:
    """Import ``module:attribute``; a clear error if it is not there."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"factory must look like module:function, got {spec!r}")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
