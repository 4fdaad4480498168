"""Small shared type aliases."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, TypeAlias

__all__ = ["BatchHandler", "ItemHandler", "KeyFunc", "LockLike"]

BatchHandler: TypeAlias = Callable[[list[Any]], object]
"""Called with a list of items; returning normally means every item is processed."""

ItemHandler: TypeAlias = Callable[[Any], object]
"""Called with one priority item."""

KeyFunc: TypeAlias = Callable[[Any], Hashable]


class LockLike(Protocol):
    """The part of ``threading.Lock`` the clocks use."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


Items: TypeAlias = Sequence[Any]
