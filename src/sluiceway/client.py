"""Clients for the ingest service that respect its backpressure (``sluiceway[http]``).

``send(events)`` posts NDJSON. On 429 it resends exactly the refused suffix after
``Retry-After``; on a transport error or 5xx it backs off exponentially with full jitter.
Resends are idempotent: each request carries an ``Idempotency-Key`` (one per send, kept
across its retries; ``<key>+<offset>`` for a refused suffix), and the service answers a
repeat from memory instead of admitting its events again. A
client-side circuit breaker fails fast with :class:`sluiceway.CircuitOpen` after repeated
failures and lets one probe through after a cool-down. Sleeping and the clock are
injectable, so tests run without waiting.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

try:
    import httpx
    import orjson
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("sluiceway.client needs: pip install 'sluiceway[http]'") from exc

from ._errors import CircuitOpen, Rejected, SluicewayError

__all__ = ["AsyncClient", "Client", "SendResult"]


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one ``send`` achieved: every event accepted, in ``requests`` HTTP calls."""

    accepted: int
    requests: int
    throttled: int  # 429 answers (refused suffixes resent)
    failures: int  # transport errors and 5xx answers retried
    processed: int | None = None  # with wait=True: processed and dead-lettered counts
    dead_lettered: int | None = None


class _Policy:
    """Backoff, breaker and the reading of answers, shared by both clients."""

    def __init__(
        self,
        *,
        max_attempts: int,
        backoff: float,
        max_backoff: float,
        breaker_failures: int,
        breaker_cooldown: float,
        now: Callable[[], float],
        seed: int | None,
    ) -> None:
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.breaker_failures = breaker_failures
        self.breaker_cooldown = breaker_cooldown
        self.now = now
        self.rng = random.Random(seed)
        self.consecutive = 0
        self.open_until: float | None = None
        self.probing = False

    def before_request(self) -> None:
        if self.open_until is None:
            return
        now = self.now()
        if now < self.open_until or self.probing:
            raise CircuitOpen(max(0.0, self.open_until - now))
        self.probing = True  # half-open: this request is the probe

    def success(self) -> None:
        self.consecutive = 0
        self.open_until = None
        self.probing = False

    def failure(self) -> None:
        self.consecutive += 1
        if self.probing or self.consecutive >= self.breaker_failures:
            self.open_until = self.now() + self.breaker_cooldown
        self.probing = False

    def delay(self, failures: int) -> float:
        cap = min(self.max_backoff, self.backoff * 2 ** max(0, failures - 1))
        return self.rng.uniform(0.0, cap)


def _body(events: Sequence[Any]) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in events) + b"\n"


class _Base:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        max_attempts: int = 20,
        backoff: float = 0.05,
        max_backoff: float = 5.0,
        breaker_failures: int = 5,
        breaker_cooldown: float = 5.0,
        now: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/v1/events"
        self.headers = {"content-type": "application/x-ndjson"}
        if token is not None:
            self.headers["authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.policy = _Policy(
            max_attempts=max_attempts,
            backoff=backoff,
            max_backoff=max_backoff,
            breaker_failures=breaker_failures,
            breaker_cooldown=breaker_cooldown,
            now=now,
            seed=seed,
        )

    def _request_headers(self, run: _Run, priority: bool) -> dict[str, str]:
        headers = {**self.headers, "idempotency-key": run.idempotency_key()}
        if priority:
            headers["x-priority"] = "1"
        return headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, timeout={self.timeout!r})"


class _Run:
    """The state of one send: what is left, and what happened.

    Every request carries an ``Idempotency-Key``: a fresh uuid4 for the send, kept across
    its retries, and ``<key>+<offset>`` for the suffix that starts at ``offset`` after a
    partial acceptance, so that the server can tell a resend from a new request.
    """

    def __init__(self, events: Sequence[Any], url: str, key: str | None) -> None:
        self.left = list(events)
        self.url = url
        self.key = key if key is not None else uuid.uuid4().hex
        self.offset = 0  # events of this send accepted so far: where ``left`` starts
        self.accepted = self.requests = self.throttled = self.failures = 0
        self.attempts_without_progress = 0
        self.processed: int | None = None
        self.dead: int | None = None
        self.error: BaseException | None = None  # the last transport error

    def idempotency_key(self) -> str:
        """The key of the next request: the send's own, or the suffix's."""
        return self.key if self.offset == 0 else f"{self.key}+{self.offset}"

    def read(self, policy: _Policy, response: httpx.Response | None) -> float | None:
        """Digest one answer; return seconds to wait before the next try, None when done."""
        self.requests += 1
        if response is None or response.status_code >= 500:
            policy.failure()
            self.failures += 1
            held = 0 if response is None else self._held(response)
            self.attempts_without_progress = 0 if held else self.attempts_without_progress + 1
            if self.attempts_without_progress >= policy.max_attempts:
                raise SluicewayError(
                    f"gave up on {self.url} after {self.requests} requests: {self._cause(response)}"
                )
            if response is not None and "retry-after" in response.headers:
                return _seconds(response.headers["retry-after"])
            return policy.delay(self.failures)
        policy.success()
        data = response.json() if response.content else {}
        if response.status_code in (200, 202):
            self._count(data, len(self.left))
            self.left = []
            return None
        if response.status_code == 429:
            k = int(data.get("accepted", 0))
            self._advance(data, k)
            self.throttled += 1
            self.attempts_without_progress = 0 if k else self.attempts_without_progress + 1
            if self.attempts_without_progress >= policy.max_attempts:
                raise SluicewayError(
                    f"gave up on {self.url}: still throttled after {self.requests} requests"
                )
            return _seconds(response.headers.get("retry-after", "1"))
        raise Rejected(response.status_code, response.text, self.url)

    def _held(self, response: httpx.Response) -> int:
        """A 503 that says ``accepted: k`` (a drain or an interruption) still holds k."""
        try:
            data = response.json()
            k = int(data.get("accepted", 0)) if isinstance(data, dict) else 0
        except ValueError:
            return 0
        if k:
            self._advance(data, k)
        return k

    def _advance(self, data: dict[str, Any], k: int) -> None:
        self._count(data, k)
        self.left = self.left[k:]
        self.offset += k

    def _cause(self, response: httpx.Response | None) -> str:
        if response is not None:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        if self.error is not None:
            return f"no answer ({type(self.error).__name__}: {self.error})"
        return "no answer"

    def _count(self, data: dict[str, Any], k: int) -> None:
        self.accepted += int(data.get("accepted", k))
        if "processed" in data:
            self.processed = (self.processed or 0) + int(data["processed"])
            self.dead = (self.dead or 0) + int(data.get("dead_lettered", 0))

    def result(self) -> SendResult:
        return SendResult(
            self.accepted, self.requests, self.throttled, self.failures, self.processed, self.dead
        )


def _seconds(value: str) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


class Client(_Base):
    """A blocking client (httpx)."""

    def __init__(
        self,
        url: str,
        *,
        sleep: Callable[[float], object] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        **options: Any,
    ) -> None:
        """``url`` of the service; ``options`` as for the policy (see the module doc)."""
        super().__init__(url, **options)
        self.sleep = sleep
        self.http = httpx.Client(timeout=self.timeout, transport=transport)

    def send(
        self,
        events: Sequence[Any],
        priority: bool = False,
        wait: bool = False,
        *,
        key: str | None = None,
    ) -> SendResult:
        """Deliver every event (resending refused suffixes); raise if that cannot be done.

        ``key``: the send's idempotency key (default: a fresh uuid4). Give your own to
        repeat a whole send safely, say after it raised, within the server's window.
        """
        url = self.url + ("?wait=true" if wait else "")
        run = _Run(events, url, key)
        while run.left:
            self.policy.before_request()
            try:
                response: httpx.Response | None = self.http.post(
                    url, content=_body(run.left), headers=self._request_headers(run, priority)
                )
            except httpx.TransportError as exc:
                response = None
                run.error = exc
            pause = run.read(self.policy, response)
            if pause is not None and run.left:
                self.sleep(pause)
        return run.result()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """An asyncio client (httpx)."""

    def __init__(
        self,
        url: str,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> None:
        """``url`` of the service; ``options`` as for the policy (see the module doc)."""
        super().__init__(url, **options)
        self.sleep = sleep
        self.http = httpx.AsyncClient(timeout=self.timeout, transport=transport)

    async def send(
        self,
        events: Sequence[Any],
        priority: bool = False,
        wait: bool = False,
        *,
        key: str | None = None,
    ) -> SendResult:
        """Deliver every event (resending refused suffixes); raise if that cannot be done.

        ``key``: as for :meth:`Client.send`.
        """
        url = self.url + ("?wait=true" if wait else "")
        run = _Run(events, url, key)
        while run.left:
            self.policy.before_request()
            try:
                response: httpx.Response | None = await self.http.post(
                    url, content=_body(run.left), headers=self._request_headers(run, priority)
                )
            except httpx.TransportError as exc:
                response = None
                run.error = exc
            pause = run.read(self.policy, response)
            if pause is not None and run.left:
                await self.sleep(pause)
        return run.result()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
