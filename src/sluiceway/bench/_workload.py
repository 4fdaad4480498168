"""Events, handlers and the producer loop of the seed workload.

An event is a tuple ``(id, key, ts, payload)``: ``ts`` is ``time.monotonic_ns()`` stamped
at submission, ``payload`` 64 bytes, ``key`` one of 1,024 strings. Every 100th event is
priority. Handlers count what they processed in batches (an append per call, no lock) and
record, for priority events, the latency from ``ts`` to handler start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["KEYS", "PAYLOAD", "Produced", "Sink", "produce", "retry_refused"]

KEYS = tuple(f"key-{i:04d}" for i in range(1024))
PAYLOAD = bytes(range(64))
PRIORITY_EVERY = 100
IO_BASE = 0.001
IO_PER_EVENT = 2e-6
BACKOFF_FIRST = 50e-6
BACKOFF_MAX = 5e-3

Event = tuple[int, str, int, bytes]


class Sink:
    """The downstream: cpu or io work per batch, plus counters the bench reads."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        # Appends are atomic under the GIL, so handlers on any thread record without a lock.
        self.done: list[int] = []  # one entry per handler call: its event count
        self.latencies: list[int] = []  # priority latency, ns
        self.batch = self.io if kind == "io" else self.cpu

    def processed(self) -> int:
        """Events handled so far."""
        return sum(self.done)

    def cpu(self, batch: list[Event]) -> None:
        """Touch every event (sum the payload lengths)."""
        total = 0
        for event in batch:
            total += len(event[3])
        self.done.append(len(batch))

    def io(self, batch: list[Event]) -> None:
        """A downstream write: sleep 1 ms + 2 us an event, releasing the GIL."""
        time.sleep(IO_BASE + IO_PER_EVENT * len(batch))
        self.done.append(len(batch))

    def priority(self, event: Event) -> None:
        """Priority events go to the in-memory (cpu) sink; record their latency first."""
        self.latencies.append(time.monotonic_ns() - event[2])
        self.cpu([event])


class Produced:
    """What the producer did in a phase."""

    __slots__ = ("accepted", "refusals", "seconds")

    def __init__(self, accepted: int, refusals: int, seconds: float) -> None:
        self.accepted = accepted
        self.refusals = refusals
        self.seconds = seconds


def retry_refused(attempt: Callable[[], bool]) -> int:
    """Call ``attempt()`` until it is accepted, backing off 50 us doubling to 5 ms.

    ``attempt`` builds its event afresh each call (a new ``ts``). Returns the refusals seen.
    """
    refusals = 0
    delay = BACKOFF_FIRST
    while not attempt():
        refusals += 1
        time.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)
    return refusals


def produce(
    submit: Callable[[Any, bool], bool],
    seconds: float,
    rate: float | None,
    first_id: int = 0,
    stop: Callable[[], bool] | None = None,
) -> Produced:
    """Submit events one at a time for ``seconds``, paced at ``rate`` events/s if given.

    On a refusal: back off 50 us doubling to 5 ms and retry the same event with a fresh
    ``ts``. Returns how many events were accepted and how many refusals were seen.
    """
    now_ns = time.monotonic_ns
    clock = time.perf_counter
    sleep = time.sleep
    keys = KEYS
    payload = PAYLOAD
    chunk = 512 if rate is None else max(8, min(512, int(rate / 2000)))
    refusals = 0
    i = first_id
    start = clock()
    end = start + seconds
    while True:
        for i in range(i, i + chunk):  # noqa: B020 - the loop resumes where it left off
            if not submit((i, keys[i & 1023], now_ns(), payload), i % PRIORITY_EVERY == 0):
                refusals += retry_refused(  # the slow path only: the first try is inline
                    lambda i=i: submit(  # type: ignore[misc]
                        (i, keys[i & 1023], now_ns(), payload), i % PRIORITY_EVERY == 0
                    )
                )
        i += 1
        now = clock()
        if now >= end or (stop is not None and stop()):
            break
        if rate is not None:
            ahead = start + (i - first_id) / rate - now
            if ahead > 0:
                sleep(ahead)
    return Produced(i - first_id, refusals, clock() - start)
