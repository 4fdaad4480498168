"""asyncio support: ``async def`` handlers, ``aput``, and ``async with``.

An ``async def`` handler runs on an event loop: the loop that was running when the
pipeline started (so handlers can use that loop's connections), or else a private loop on
its own thread. Worker threads hand batches over with ``run_coroutine_threadsafe`` and wait
for the result with the GIL released, so shards keep their batching, ordering and failure
semantics, and regular work never runs on the loop itself.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

from .._errors import SluicewayError

__all__ = ["AsyncWaiter", "LoopHost", "is_async", "refuse_on_loop"]


def is_async(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine (an ``async def`` or such a callable)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class LoopHost:
    """The loop async handlers run on; owns a private loop thread when it has to."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Use the running loop, or start a private one."""
        import asyncio  # noqa: PLC0415 - only pipelines with async handlers pay for it

        try:
            self.loop = asyncio.get_running_loop()
            return
        except RuntimeError:
            pass
        self._start_private()

    def _start_private(self) -> None:
        import asyncio  # noqa: PLC0415 - only pipelines with async handlers pay for it

        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="sluiceway-loop", daemon=True)
        self._thread.start()
        ready.wait()
        self.loop = loop

    def on_loop_thread(self) -> bool:
        """True when called from the thread running the handlers' loop."""
        if self.loop is None:
            return False
        import asyncio  # noqa: PLC0415 - loaded already if a loop exists

        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def wrap(self, fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        """A blocking function that runs ``fn(arg)`` on the loop and returns its result."""

        def call(arg: Any) -> Any:
            loop = self.loop
            if loop is None:
                raise RuntimeError("the pipeline's event loop is not running")
            return self._await_on(loop, fn(arg))

        return call

    def run(self, awaitable: Any) -> Any:
        """Await ``awaitable`` on the handlers' loop (started privately if there is none).

        For a plain function that returned an awaitable; blocks the calling engine thread.
        """
        with self._lock:
            if self.loop is None:
                self._start_private()
        loop = self.loop
        assert loop is not None
        return self._await_on(loop, awaitable)

    @staticmethod
    def _await_on(loop: asyncio.AbstractEventLoop, awaitable: Any) -> Any:
        """Await on ``loop`` from an engine thread; the awaitable's error is raised here.

        ``KeyboardInterrupt`` and ``SystemExit`` raised by a handler are carried back to
        this thread instead of escaping into the loop (where they would stop it and leave
        every worker waiting for ever). If the loop stops or closes while we wait (the
        ``asyncio.run`` that owned it returned), the call fails instead of hanging.
        """
        import asyncio  # noqa: PLC0415 - only pipelines with async handlers pay for it

        async def guarded() -> Any:
            try:
                return await awaitable
            except (KeyboardInterrupt, SystemExit) as exc:
                return _Raised(exc)

        coro = guarded()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError as exc:  # the loop is closed
            coro.close()
            _close(awaitable)
            raise RuntimeError("the event loop running the async handlers is closed") from exc
        while True:
            try:
                result = future.result(timeout=POLL)
            except TimeoutError:
                if loop.is_closed() or not loop.is_running():
                    future.cancel()
                    if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                        coro.close()  # never started: nothing of it runs any more
                        _close(awaitable)
                    raise RuntimeError(
                        "the event loop running the async handlers stopped before the "
                        "handler finished"
                    ) from None
                continue
            if isinstance(result, _Raised):
                raise result.exc
            return result

    def stop(self) -> None:
        """Stop the private loop, if this host started one."""
        if self._thread is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self.loop.close()
            self._thread = None


POLL = 0.5  # seconds between checks that the handlers' loop still runs, while waiting


class _Raised:
    """A KeyboardInterrupt or SystemExit from a handler, carried out of the loop."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()  # a coroutine never scheduled: no "never awaited" warning


def refuse_on_loop(host: LoopHost, what: str, instead: str) -> None:
    """Raise if called on ``host``'s loop thread, where ``what`` would block the handlers."""
    if host.on_loop_thread():
        raise SluicewayError(
            f"{what}() would block the event loop the async handlers run on; use {instead}"
        )


class AsyncWaiter:
    """A room/idle waiter that resolves an asyncio future from any thread."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> None:
        """Resolve the future on its loop (safe from engine threads)."""
        try:
            self.loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)
