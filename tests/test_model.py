"""A model-based test of the whole engine: random traffic, random faults, then liveness.

A hypothesis state machine builds a pipeline (keyed or not, random shape, retry policy,
breaker, balance interval, one slow shard) on a :class:`FakeClock` (driven by the test) or
on the system clock (where timing races happen on their own), and drives random
sequences of submits of every kind (``submit``, ``submit_many``, ``submit_tracked``,
``submit_many(on_done=...)``, priority, two producer threads at once), a downstream that
fails and recovers (ok, down, failing every other call, partial ``BatchError``,
``Permanent``), poison items, a handler that mutates the list it was given, ``on_done``
callbacks that raise, a dead-letter sink that raises or is slow, clock moves, flushes and a
shutdown with or without a timeout at a random point.

Checked after every step: no item handled twice, nothing but our items reaches the handler,
capacity and the priority quota are never exceeded. Checked after every run: each accepted
item has exactly one outcome (processed by a handler call that counted it, or dead-lettered
with a reason); refused items were never processed; keyed runs keep per-key order; every
completion settles and every ``on_done`` runs once; and **liveness**: once the downstream
and the sink are healthy, the pipeline goes idle within a bound of clock time, and
``shutdown()`` without a timeout returns within a bound of real time.

Items are ``(key, id)`` tuples with a unique, increasing ``id`` (submission order).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import sluiceway as sw
from sluiceway.testing import FakeClock

Item = tuple[int, int]

TICK = 0.01  # clock seconds the driver moves at a time while waiting for liveness
TICK_REAL = 0.001  # real seconds between two ticks
LIVENESS = 5.0  # clock seconds in which a healed pipeline must go idle
STEP = 0.05  # clock seconds of one flush-and-wait step of the liveness check
SHUTDOWN_REAL = 3.0  # real seconds in which a shutdown must return
NKEYS = 5


class CallbackBoom(Exception):
    """What a raising ``on_done`` callback raises."""


class Downstream:
    """The batch handler: fails in the ways real downstreams do and records what counted.

    ``ok`` counts each item processed by a call that returned (or by the items a
    ``BatchError`` did not name); ``order`` lists those items in the order their calls
    finished; ``failed`` holds every item that was in a call that failed in any way.
    """

    def __init__(self) -> None:
        """Start healthy, fast and well-behaved."""
        self.mode = "ok"  # ok | down | flaky | partial | permanent
        self.poison: set[int] = set()
        self.mutate = "none"  # none | clear | append | pop
        self.slow_shard: int | None = None
        self.calls = 0
        self.ok: Counter[int] = Counter()
        self.order: list[Item] = []
        self.failed: set[int] = set()
        self.strange: list[Any] = []  # anything but our items that reached the handler
        self.lock = threading.Lock()

    def __call__(self, batch: list[Any]) -> None:
        """Copy the batch, misbehave as told, then fail or record it."""
        given = list(batch)
        ours = [x for x in given if _is_item(x)]
        with self.lock:
            self.calls += 1
            call = self.calls
            self.strange.extend(x for x in given if not _is_item(x))
        if self.mutate == "clear":
            batch.clear()
        elif self.mutate == "append":
            batch.append("junk appended by the handler")
        elif self.mutate == "pop":
            while batch:
                batch.pop()
        shard = sw.current_shard()
        if shard is not None and shard == self.slow_shard:
            time.sleep(0.0005)  # an uneven shard: the balancer should move work off it
        mode = self.mode
        error: BaseException | None = None
        done = ours
        if any(i in self.poison for _, i in ours):
            error = ConnectionError("poison")
        elif mode == "down" or (mode == "flaky" and call % 2 == 0):
            error = ConnectionError("down")
        elif mode == "permanent":
            error = sw.Permanent("rejected")
        elif mode == "partial" and len(ours) > 1:
            done = ours[1:]
            error = sw.BatchError({0: ConnectionError("first one failed")})
        if error is not None and done is ours:
            done = []
        with self.lock:
            self.ok.update(i for _, i in done)
            self.order.extend(done)
            if error is not None:
                self.failed.update(x[1] for x in ours if x not in done)
        if error is not None:
            raise error


def _moved(s: sw.Stats) -> int:
    return sum(sh.moved_in for sh in s.shards)


def _is_item(x: object) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, int) for v in x)


class Sink:
    """A dead-letter sink that can raise or be slow; remembers what it was offered."""

    def __init__(self) -> None:
        """Start healthy."""
        self.mode = "ok"  # ok | raising | slow
        self.records: list[sw.DeadLetter] = []
        self.offered: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, records: list[sw.DeadLetter]) -> None:
        """Keep the records, raise, or take a while."""
        with self.lock:
            self.offered.update(d.item[1] for d in records if _is_item(d.item))
        if self.mode == "raising":
            raise OSError("sink down")
        if self.mode == "slow":
            time.sleep(0.002)
        with self.lock:
            self.records.extend(records)


@contextmanager
def ticking(clock: FakeClock | None) -> Iterator[None]:
    """Move the fake clock forward by TICK every TICK_REAL seconds while inside.

    On the system clock (None) time passes anyway.
    """
    if clock is None:
        yield
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(TICK_REAL):
            clock.advance(TICK)

    t = threading.Thread(target=run, name="clock-driver", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def bounded(fn: Callable[[], sw.DrainReport], seconds: float) -> sw.DrainReport | None:
    """Run ``fn`` in a thread; its result, or None if it did not return in ``seconds``."""
    out: list[sw.DrainReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread below)
            errors.append(exc)

    t = threading.Thread(target=run, name="bounded-shutdown", daemon=True)
    t.start()
    t.join(seconds)
    if errors:
        raise errors[0]
    return out[0] if out else None


class Model(RuleBasedStateMachine):
    """Random traffic and faults against one pipeline, with its books kept item by item."""

    def __init__(self) -> None:
        super().__init__()
        self.down = Downstream()
        self.sink = Sink()
        self.clock: FakeClock | None = None  # None: the system clock
        self.p: sw.Pipeline | None = None
        self.keyed = False
        self.next_id = 0
        self.accepted: set[int] = set()
        self.priority: set[int] = set()
        self.refused: set[int] = set()
        self.completions: list[sw.Completion] = []
        self.on_done_calls: Counter[int] = Counter()
        self.on_done_expected: set[int] = set()
        self.raise_in_callbacks = False
        self.report: sw.DrainReport | None = None
        self.timed_out = False
        self.hung = False  # a shutdown already failed to return: nothing more to check

    # -- set-up ----------------------------------------------------------------------------
    @initialize(
        keyed=st.booleans(),
        shards=st.integers(1, 4),
        batch=st.integers(1, 8),
        capacity=st.integers(8, 60),
        attempts=st.none() | st.integers(1, 4),
        isolate=st.booleans(),
        breaker=st.none() | st.integers(1, 3),
        cooldown=st.sampled_from([0.002, 0.01, 0.02]),
        interval=st.sampled_from([0.001, 0.005, 0.01]),
        slow=st.none() | st.integers(0, 3),
        adaptive=st.booleans(),
        fake_clock=st.booleans(),
    )
    def build(
        self,
        keyed: bool,
        shards: int,
        batch: int,
        capacity: int,
        attempts: int | None,
        isolate: bool,
        breaker: int | None,
        cooldown: float,
        interval: float,
        slow: int | None,
        adaptive: bool,
        fake_clock: bool,
    ) -> None:
        """Start a pipeline of a random shape and failure policy."""
        self.clock = FakeClock(real_timeout=5.0) if fake_clock else None
        retry = None
        if attempts is not None:
            retry = sw.Retry(
                attempts=attempts, backoff=0.001, max_backoff=0.004, isolate=isolate, seed=0
            )
        self.keyed = keyed
        self.down.slow_shard = None if slow is None else slow % shards
        self.p = sw.Pipeline(
            self.down,
            shards=shards,
            batch_size=batch,
            min_batch=1,
            max_batch=16,
            capacity=max(capacity, shards),
            priority_ratio=0.25,
            max_delay=0.002,
            key=(lambda e: e[0]) if keyed else None,
            clock=self.clock,
            retry=retry,
            breaker=None if breaker is None else sw.Breaker(failures=breaker, cooldown=cooldown),
            dead_letter=self.sink,
            balance_interval=interval,
            adaptive=adaptive,
            steal=True,
        ).start()

    def _items(self, keys: list[int]) -> list[Item]:
        items = [(k, self.next_id + n) for n, k in enumerate(keys)]
        self.next_id += len(keys)
        return items

    def _book(self, items: list[Item], k: int, priority: bool) -> None:
        ids = {i for _, i in items}
        got = {i for _, i in items[:k]}
        self.accepted |= got
        self.refused |= ids - got
        if priority:
            self.priority |= got

    def _on_done(self) -> Callable[[sw.Completion], None]:
        token = len(self.on_done_expected)
        self.on_done_expected.add(token)

        def on_done(c: sw.Completion) -> None:
            self.on_done_calls[token] += 1
            self.completions.append(c)
            if self.raise_in_callbacks:
                raise CallbackBoom("on_done raised")

        return on_done

    # -- traffic ---------------------------------------------------------------------------
    @rule(key=st.integers(0, NKEYS - 1), priority=st.booleans())
    @precondition(lambda self: self.p is not None)
    def submit_one(self, key: int, priority: bool) -> None:
        """One item, either lane."""
        assert self.p is not None
        items = self._items([key])
        self._book(items, int(self.p.submit(items[0], priority)), priority)

    @rule(
        keys=st.lists(st.integers(0, NKEYS - 1), max_size=30),
        kind=st.sampled_from(["many", "tracked", "on_done"]),
        priority=st.booleans(),
    )
    @precondition(lambda self: self.p is not None)
    def submit_bulk(self, keys: list[int], kind: str, priority: bool) -> None:
        """A bulk submission; its accepted prefix is what counts."""
        assert self.p is not None
        items = self._items(keys)
        if kind == "tracked":
            c = self.p.submit_tracked(items, priority)
            self.completions.append(c)
            k = c.accepted
        elif kind == "on_done":
            try:
                k = self.p.submit_many(items, priority, on_done=self._on_done())
            except CallbackBoom as exc:  # the callback ran at once, in this thread
                raise AssertionError("an on_done exception escaped submit_many") from exc
        else:
            k = self.p.submit_many(items, priority)
        self._book(items, k, priority)

    @rule(keys=st.lists(st.integers(0, NKEYS - 1), min_size=2, max_size=40))
    @precondition(lambda self: self.p is not None)
    def submit_from_two_threads(self, keys: list[int]) -> None:
        """Two producers at once, one per-item and one bulk; keys split between them."""
        p = self.p
        assert p is not None
        items = self._items(keys)
        mine = [[x for x in items if x[0] % 2 == t] for t in (0, 1)]
        got: list[list[Item]] = [[], []]

        def one_by_one() -> None:
            got[0] = [x for x in mine[0] if p.submit(x)]

        def in_bulk() -> None:
            got[1] = mine[1][: p.submit_many(mine[1])]

        threads = [threading.Thread(target=f) for f in (one_by_one, in_bulk)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SHUTDOWN_REAL)
            assert not t.is_alive(), "submit blocked"
        accepted = {i for part in got for _, i in part}
        self.accepted |= accepted
        self.refused |= {i for _, i in items} - accepted

    @rule(keys=st.lists(st.integers(0, NKEYS - 1), min_size=1, max_size=100))
    @precondition(lambda self: self.p is not None)
    def traffic_while_time_passes(self, keys: list[int]) -> None:
        """A producer thread submits one by one, for up to 50 ms, while the clock runs."""
        p = self.p
        assert p is not None
        items = self._items(keys)
        got: list[Item] = []

        def produce() -> None:
            for x in items:
                if p.submit(x):
                    got.append(x)
                time.sleep(0.0005)

        t = threading.Thread(target=produce)
        with ticking(self.clock):
            t.start()
            t.join(SHUTDOWN_REAL)
        assert not t.is_alive(), "submit blocked"
        accepted = {i for _, i in got}
        self.accepted |= accepted
        self.refused |= {i for _, i in items} - accepted

    @rule(keys=st.lists(st.integers(0, NKEYS - 1), min_size=1, max_size=8))
    @precondition(lambda self: self.p is not None)
    def storm(self, keys: list[int]) -> None:
        """Two producers submit as fast as they can for 50 ms of real time, the clock running.

        Items cycle through ``keys`` (the second producer's shifted by NKEYS); most are
        refused once the pipeline is full, which is the point: capacity comes back and is
        taken again while batches fail and succeed.
        """
        p = self.p
        assert p is not None
        lock = threading.Lock()
        made: list[Item] = []
        got: list[Item] = []
        until = time.monotonic() + 0.05

        def produce(me: int) -> None:
            n = 0
            while time.monotonic() < until:
                with lock:  # keys of their own: each key's ids go in in submission order
                    (x,) = self._items([keys[n % len(keys)] + me * NKEYS])
                    made.append(x)
                n += 1
                if p.submit(x):
                    with lock:
                        got.append(x)

        threads = [threading.Thread(target=produce, args=(me,)) for me in range(2)]
        with ticking(self.clock):
            for t in threads:
                t.start()
            for t in threads:
                t.join(SHUTDOWN_REAL)
        assert not any(t.is_alive() for t in threads), "submit blocked"
        accepted = {i for _, i in got}
        self.accepted |= accepted
        self.refused |= {i for _, i in made} - accepted

    # -- faults ----------------------------------------------------------------------------
    @rule(mode=st.sampled_from(["ok", "ok", "down", "flaky", "partial", "permanent"]))
    def downstream(self, mode: str) -> None:
        """The downstream changes how it behaves."""
        self.down.mode = mode

    @rule(mode=st.sampled_from(["ok", "raising", "slow"]))
    def sink_mode(self, mode: str) -> None:
        """The dead-letter sink breaks, slows down or recovers."""
        self.sink.mode = mode

    @rule(back=st.integers(-5, 20))
    def poison(self, back: int) -> None:
        """An item (recent, or yet to come) fails every call it is in."""
        self.down.poison.add(self.next_id - back)

    @rule(how=st.sampled_from(["none", "none", "clear", "append", "pop"]))
    def handler_mutates(self, how: str) -> None:
        """The handler starts (or stops) changing the list it was given."""
        self.down.mutate = how

    @rule(on=st.booleans())
    def callbacks_raise(self, on: bool) -> None:
        """``on_done`` callbacks start (or stop) raising."""
        self.raise_in_callbacks = on

    # -- time ------------------------------------------------------------------------------
    @rule(seconds=st.sampled_from([0.0005, 0.001, 0.002, 0.005, 0.01, 0.03]))
    def advance(self, seconds: float) -> None:
        """Clock time passes: batches come due, backoffs end, breakers cool down."""
        if self.clock is None:
            time.sleep(seconds)
        else:
            self.clock.advance(seconds)

    @rule(ms=st.integers(0, 3))
    def let_threads_run(self, ms: int) -> None:
        """Real time passes, so engine threads run between the test's steps."""
        time.sleep(ms / 1000)

    @rule()
    @precondition(lambda self: self.p is not None)
    def flush(self) -> None:
        """Hand partial batches over now."""
        assert self.p is not None
        self.p.flush()

    @rule(timeout=st.sampled_from([None, 0.0, 0.005, 0.05]))
    @precondition(lambda self: self.p is not None and self.report is None)
    def shutdown(self, timeout: float | None) -> None:
        """Stop at a random point: with a timeout under faults, or healed without one."""
        p = self.p
        assert p is not None
        if timeout is None:
            self._heal()
        with ticking(self.clock):
            report = bounded(lambda: p.shutdown(timeout), SHUTDOWN_REAL)
        if report is None:
            self.hung = True
        assert report is not None, f"shutdown(timeout={timeout}) did not return"
        self.report = report
        self.timed_out = report.timed_out
        if timeout is None:
            assert not report.timed_out

    # -- checked after every step ----------------------------------------------------------
    @invariant()
    def nothing_twice_nothing_foreign(self) -> None:
        """No item is processed twice; only our items reach the handler."""
        with self.down.lock:
            twice = [i for i, n in self.down.ok.items() if n > 1]
            strange = list(self.down.strange)
        assert not twice, f"processed twice: {twice}"
        assert not strange, f"the handler was given objects it never submitted: {strange!r}"

    @invariant()
    def capacity_holds(self) -> None:
        """Neither lane holds more than its capacity, by the stats and by our books."""
        if self.p is None:
            return
        # No producer runs between steps, so only outcomes and steals move under the
        # snapshot; a steal completing during it could show its items on both shards, so the
        # shards' depths are added up only when no steal completed around the snapshot.
        before = self.p.stats()
        s = self.p.stats()
        after = self.p.stats()
        if _moved(before) == _moved(after):
            assert sum(sh.depth for sh in s.shards) <= s.capacity, s
        assert s.priority_depth <= s.priority_capacity, s
        assert s.in_flight <= s.capacity + s.priority_capacity, s
        # Our books give a lower bound on what the engine still holds: an item leaves them
        # when its handler call records it, or when the sink is first offered it. The engine
        # may settle a dead letter before offering it to the sink, so every dead letter the
        # engine counted (read after our books) is subtracted as well: a conservative bound.
        with self.down.lock:
            ok = set(self.down.ok)
        with self.sink.lock:
            offered = set(self.sink.offered)
        held = self.accepted - ok - offered - {d.item[1] for d in self._undelivered()}
        slack = self.p.stats().dead_lettered
        regular, priority = len(held - self.priority), len(held & self.priority)
        assert regular - slack <= s.capacity, (regular, slack, s)
        assert priority - slack <= s.priority_capacity, (priority, slack, s)

    def _undelivered(self) -> list[sw.DeadLetter]:
        assert self.p is not None
        return [d for d in self.p.undelivered_dead_letters() if _is_item(d.item)]

    # -- checked after every run -----------------------------------------------------------
    def _heal(self) -> None:
        self.down.mode = "ok"
        self.down.mutate = "none"
        self.sink.mode = "ok"

    def teardown(self) -> None:
        """Heal, prove liveness, then check every item's outcome."""
        p = self.p
        if p is None or self.hung:
            return
        self._heal()
        if self.report is None:
            with ticking(self.clock):
                for _ in range(round(LIVENESS / STEP)):  # flush and wait, a step at a time
                    p.flush()
                    if idle := p.wait_idle(timeout=STEP):
                        break
                stats = p.stats()
                report = bounded(p.shutdown, SHUTDOWN_REAL)
            assert idle, f"not idle {LIVENESS} s of clock time after faults stopped: {stats}"
            assert report is not None, "shutdown() without a timeout did not return"
            assert not report.timed_out
            self.report = report
        self._check_outcomes(self.report)

    def _check_outcomes(self, report: sw.DrainReport) -> None:
        assert self.p is not None
        with self.sink.lock:
            kept = list(self.sink.records)
        kept += self._undelivered()
        assert all(d.reason for d in kept)
        dead = Counter(d.item[1] for d in kept)
        late = {d.item[1] for d in kept if d.reason == "shutdown-timeout"}
        ok = self.down.ok
        assert report.lost == 0, report
        assert report.accepted == len(self.accepted), (report, len(self.accepted))
        assert report.processed + report.dead_lettered == len(self.accepted), report
        assert not (set(ok) | set(dead)) & self.refused, "a refused item was handled"
        assert set(ok) | set(dead) <= self.accepted, "an unknown item was handled"
        twice = [i for i in self.accepted if ok[i] + dead[i] > 1]
        # A handler call that returns after a timed-out shutdown dead-lettered its batch
        # changes nothing: the dead letter is that item's one outcome (README, guarantees).
        if self.timed_out:
            twice = [i for i in twice if not (ok[i] == dead[i] == 1 and i in late)]
        assert not twice, f"more than one outcome: {sorted(twice)}"
        none = sorted(i for i in self.accepted if ok[i] + dead[i] == 0)
        assert not none, f"no outcome: {none}"
        for c in self.completions:
            assert c.wait(SHUTDOWN_REAL), c
            assert c.processed + c.dead_lettered == c.accepted, c
        assert set(self.on_done_calls) == self.on_done_expected, "an on_done never ran"
        assert all(n == 1 for n in self.on_done_calls.values()), self.on_done_calls
        if self.keyed:
            self._check_key_order()

    def _check_key_order(self) -> None:
        """Per key, items never in a failed call were processed in submission order."""
        last: dict[int, int] = {}
        for k, i in self.down.order:
            if i in self.priority or i in self.down.failed:
                continue
            assert i > last.get(k, -1), f"key {k}: item {i} processed after {last[k]}"
            last[k] = i


TestModel = Model.TestCase
TestModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
# A passing run takes seconds; a failing one may shrink for up to five minutes (hypothesis
# stops there), and the minimal example it prints is the point of the test.
TestModel.pytestmark = pytest.mark.timeout(420)  # type: ignore[attr-defined]
