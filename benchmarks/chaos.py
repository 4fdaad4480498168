"""Chaos: traffic of every kind against a flapping downstream, then a drain; nothing lost.

Run: ``.venv/bin/python benchmarks/chaos.py --seconds 60``. Two pipelines run side by side,
one keyed and one unkeyed, each with a ``Retry``, a ``Breaker``, frequent balancing steps and
one slow shard (so work is stolen). Producer threads submit per item, in bulk, tracked, with
``on_done`` callbacks (half of which raise) and on the priority lane. The downstream flaps
(down for 50-250 ms, up for 100-400 ms), fails some calls at random while up, fails some
items of a batch with ``sw.BatchError``, and fails every call holding a poison item; the
dead-letter sink raises now and then (``--without KIND`` leaves one kind out). After
``--seconds`` the producers stop, the downstream heals, and both pipelines are shut down
without a timeout, at once, under a watchdog (``--drain-bound``, default 30 s).

Every item has a unique id, tracked from submission to outcome. The report: items accepted
and refused, processed, dead-lettered by reason, faults injected by kind, duplicates, lost,
and whether (and how fast) the drain returned. The last line is the verdict (``chaos: OK
...`` or ``chaos: FAIL ...``); the exit status is 1 on any loss, duplicate, foreign object
handed to the handler, unsettled completion, or hang.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from typing import Any

import sluiceway as sw

POISON_EVERY = 4_999  # an id that is 7 modulo this fails every call it is in
KEYS = 64
SLOW_SHARD = 0
WITHOUT = ("flapping", "random-failures", "poison", "raising-callbacks", "sink-errors")


class Books:
    """Per-id state, in flat byte arrays so a long run stays small."""

    def __init__(self, size: int) -> None:
        """Room for ``size`` ids."""
        self.size = size
        self.ids = itertools.count()
        self.admitted = bytearray(size)  # 1 accepted, 2 refused
        self.processed = bytearray(size)
        self.dead = bytearray(size)
        self.lock = threading.Lock()
        self.foreign: list[Any] = []
        self.reasons: Counter[str] = Counter()

    def take(self, n: int) -> list[int] | None:
        """``n`` fresh ids, or None once the books are full."""
        ids = [next(self.ids) for _ in range(n)]
        return ids if ids[-1] < self.size else None

    def settle(self, ids: list[int], k: int) -> None:
        """The first ``k`` of ``ids`` were accepted, the rest refused."""
        admitted = self.admitted
        for n, i in enumerate(ids):
            admitted[i] = 1 if n < k else 2

    def handled(self, items: list[Any]) -> None:
        """Items a handler call processed."""
        with self.lock:
            for x in items:
                if isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], int):
                    self.processed[x[1]] = min(255, self.processed[x[1]] + 1)
                else:
                    self.foreign.append(x)

    def dead_lettered(self, records: list[sw.DeadLetter]) -> None:
        """Records the sink took."""
        with self.lock:
            for d in records:
                i = d.item[1]
                self.dead[i] = min(255, self.dead[i] + 1)
                self.reasons[d.reason] += 1


class Faults:
    """A downstream that flaps, fails at random and on poison; counts what it injected."""

    def __init__(self, books: Books, rng: random.Random, without: set[str]) -> None:
        """Start up (healthy), injecting every kind of fault but those ``without``."""
        self.without = without
        self.books = books
        self.rng = rng
        self.down = False
        self.healed = False
        self.count: Counter[str] = Counter()
        self.lock = threading.Lock()

    def inject(self, kind: str) -> None:
        """Count one injected fault."""
        with self.lock:
            self.count[kind] += 1

    def flap(self, stop: threading.Event) -> None:
        """Alternate down and up periods until ``stop``; then stay up."""
        while "flapping" not in self.without and not stop.is_set():
            self.down = True
            self.inject("down-period")
            stop.wait(self.rng.uniform(0.05, 0.25))
            self.down = False
            stop.wait(self.rng.uniform(0.1, 0.4))
        stop.wait()
        self.down = False
        self.healed = True

    def handler(self, batch: list[Any]) -> None:
        """The batch handler both pipelines call."""
        items = list(batch)
        if sw.current_shard() == SLOW_SHARD:
            time.sleep(0.0005)  # a skewed shard: the balancer should steal from it
        if "poison" not in self.without and any(
            isinstance(x, tuple) and x[1] % POISON_EVERY == 7 for x in items
        ):
            self.inject("poison-call")
            raise ValueError("poison")
        if self.down:
            self.inject("down-call")
            raise ConnectionError("downstream down")
        if self.healed or "random-failures" in self.without:
            self.books.handled(items)
            return
        roll = self.rng.random()
        if roll < 0.05:
            self.inject("random-failure")
            raise ConnectionError("transient")
        if roll < 0.08 and len(items) > 1:
            self.inject("partial-batch")
            failed = set(self.rng.sample(range(len(items)), max(1, len(items) // 4)))
            self.books.handled([x for n, x in enumerate(items) if n not in failed])
            raise sw.BatchError({n: ConnectionError("partial") for n in failed})
        self.books.handled(items)

    def sink(self, records: list[sw.DeadLetter]) -> None:
        """The dead-letter sink: refuses 2% of deliveries while faults are on."""
        if not self.healed and "sink-errors" not in self.without and self.rng.random() < 0.02:
            self.inject("sink-error")
            raise OSError("sink down")
        self.books.dead_lettered(records)


class Producer:
    """One producer thread's loop: a submission style, a pipeline, and its counts."""

    def __init__(
        self, p: sw.Pipeline, style: str, books: Books, faults: Faults, keyed: bool, seed: int
    ) -> None:
        """Submit to ``p`` in ``style`` until stopped."""
        self.p = p
        self.style = style
        self.books = books
        self.faults = faults
        self.keyed = keyed
        self.rng = random.Random(seed)
        self.completions: list[sw.Completion] = []
        self.on_done_expected = 0
        self.on_done_calls = 0
        self.escaped = 0  # on_done exceptions that reached this producer's submit_many
        self.lock = threading.Lock()

    def _items(self, n: int) -> tuple[list[int], list[tuple[int, int]]] | None:
        ids = self.books.take(n)
        if ids is None:
            return None
        # Skewed keys: a third of the items on key 0.
        keys = [0 if self.rng.random() < 0.33 else self.rng.randrange(KEYS) for _ in ids]
        return ids, list(zip(keys, ids, strict=True))

    def _on_done(self, c: sw.Completion) -> None:
        with self.lock:
            self.on_done_calls += 1
        if "raising-callbacks" not in self.faults.without and self.rng.random() < 0.5:
            self.faults.inject("raising-callback")
            raise RuntimeError("on_done raised")

    def run(self, stop: threading.Event) -> None:
        """Submit until ``stop``; back off briefly after a refusal."""
        p, books = self.p, self.books
        while not stop.is_set():
            n = 1 if self.style in ("item", "priority") else self.rng.randint(1, 64)
            made = self._items(n)
            if made is None:
                return
            ids, items = made
            if self.style == "item":
                k = int(p.submit(items[0]))
            elif self.style == "priority":
                k = int(p.submit(items[0], priority=True))
                time.sleep(0.0005)
            elif self.style == "bulk":
                k = p.submit_many(items)
            elif self.style == "tracked":
                c = p.submit_tracked(items)
                self.completions.append(c)
                k = c.accepted
            else:  # on_done
                self.on_done_expected += 1
                try:
                    k = p.submit_many(items, on_done=self._on_done)
                except RuntimeError:  # ran at once (nothing admitted) and was not guarded
                    self.escaped += 1
                    k = 0
            books.settle(ids, k)
            if k < n:
                time.sleep(0.0005)


def build(faults: Faults, keyed: bool) -> sw.Pipeline:
    """One pipeline of the run."""
    return sw.Pipeline(
        faults.handler,
        shards=4,
        batch_size=16,
        max_delay=0.002,
        capacity=4096,
        key=(lambda e: e[0]) if keyed else None,
        retry=sw.Retry(attempts=4, backoff=0.001, max_backoff=0.02),
        breaker=sw.Breaker(failures=3, cooldown=0.02),
        dead_letter=faults.sink,
        balance_interval=0.005,
    ).start()


def drain(
    pipes: dict[str, sw.Pipeline], bound: float
) -> tuple[dict[str, sw.DrainReport | None], dict[str, float]]:
    """``shutdown()`` without a timeout on every pipeline at once, under a watchdog.

    Returns each pipeline's report (None if it had not returned after ``bound`` seconds:
    a hang) and how long its drain took.
    """
    reports: dict[str, sw.DrainReport | None] = dict.fromkeys(pipes)
    times = dict.fromkeys(pipes, bound)
    t0 = time.perf_counter()

    def one(name: str) -> None:
        reports[name] = pipes[name].shutdown()
        times[name] = time.perf_counter() - t0

    watched = [threading.Thread(target=one, args=(name,), daemon=True) for name in pipes]
    for t in watched:
        t.start()
    for t in watched:  # the watchdog: one deadline for all
        t.join(max(0.0, t0 + bound - time.perf_counter()))
    return reports, times


class LogCount(logging.Handler):
    """Counts the engine's log records by level and by what they say first."""

    def __init__(self) -> None:
        """Nothing counted yet."""
        super().__init__()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        """Count one record."""
        key = f"{record.levelname} {str(record.msg)[:28]}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def summary(self) -> str:
        """The counts, most frequent first."""
        ranked = sorted(self.counts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{n:,} x {key!r}" for key, n in ranked[:6]) or "none"


def main(argv: list[str] | None = None) -> int:
    """Run the chaos, print the books, return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="traffic time (default 10)")
    ap.add_argument("--seed", type=int, default=1, help="fault schedule seed")
    ap.add_argument(
        "--drain-bound", type=float, default=30.0, help="seconds before a drain is a hang"
    )
    ap.add_argument(
        "--without",
        action="append",
        default=[],
        choices=WITHOUT,
        help="leave one kind of fault out (repeatable), to tell faults apart",
    )
    args = ap.parse_args(argv)
    logs = LogCount()
    engine_log = logging.getLogger("sluiceway")
    engine_log.addHandler(logs)  # counted, not printed: raising callbacks log by design
    engine_log.propagate = False
    books = Books(min(int(args.seconds * 500_000) + 1_000_000, 100_000_000))
    faults = Faults(books, random.Random(args.seed), set(args.without))
    pipes = {"keyed": build(faults, keyed=True), "unkeyed": build(faults, keyed=False)}
    styles = ("item", "bulk", "tracked", "on_done", "priority")
    producers = [
        Producer(p, style, books, faults, name == "keyed", args.seed * 100 + n)
        for name, p in pipes.items()
        for n, style in enumerate(styles)
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=faults.flap, args=(stop,), daemon=True)]
    threads += [threading.Thread(target=pr.run, args=(stop,), daemon=True) for pr in producers]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    traffic = time.perf_counter() - t0
    steals = {name: sum(s.steals_out for s in p.stats().shards) for name, p in pipes.items()}
    reports, drain_times = drain(pipes, args.drain_bound)
    hung = [name for name, r in reports.items() if r is None]
    if not hung:
        for p in pipes.values():
            books.dead_lettered(p.undelivered_dead_letters())
    return verdict(books, faults, producers, pipes, reports, drain_times, steals, traffic)


def verdict(
    books: Books,
    faults: Faults,
    producers: list[Producer],
    pipes: dict[str, sw.Pipeline],
    reports: dict[str, sw.DrainReport | None],
    drain_times: dict[str, float],
    steals: dict[str, int],
    traffic: float,
) -> int:
    """Print the books and the one-line verdict; return the exit status."""
    with books.lock:
        admitted, processed, dead = bytes(books.admitted), books.processed, books.dead
        used = min(next(books.ids), books.size)
        accepted = refused = handled = dead_n = dup = lost = refused_handled = 0
        for i in range(used):
            outcomes = processed[i] + dead[i]
            handled += processed[i]
            dead_n += dead[i]
            if admitted[i] == 1:
                accepted += 1
                dup += outcomes > 1
                lost += outcomes == 0
            elif admitted[i] == 2:
                refused += 1
                refused_handled += outcomes > 0
    hung = [name for name, r in reports.items() if r is None]
    unsettled = sum(
        not c.done() or c.processed + c.dead_lettered != c.accepted
        for pr in producers
        for c in pr.completions
    )
    callbacks_missing = sum(pr.on_done_expected - pr.on_done_calls for pr in producers)
    escaped = sum(pr.escaped for pr in producers)
    report_lost = sum(r.lost for r in reports.values() if r is not None)
    if hung:  # the books cannot close: items may still come out of the hung pipeline
        lost = max(lost, sum(pipes[n].stats().in_flight for n in hung))
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(books.reasons.items())) or "none"
    injected = ", ".join(f"{k} {v:,}" for k, v in sorted(faults.count.items())) or "none"
    drains = ", ".join(
        f"{name} {'HUNG' if reports[name] is None else 'returned'} after {drain_times[name]:.2f} s"
        for name in pipes
    )
    print(
        f"chaos: {traffic:.1f} s of traffic, pipelines {', '.join(pipes)}, "
        f"{len(producers)} producers; steals {sum(steals.values()):,}"
    )
    print(
        f"items: accepted {accepted:,}, refused {refused:,}, processed {handled:,}, "
        f"dead-lettered {dead_n:,} ({reasons})"
    )
    print(f"faults: {injected}")
    for handler in logging.getLogger("sluiceway").handlers:
        if isinstance(handler, LogCount):
            print(f"engine log records: {handler.summary()}")
    print(
        f"drain: {drains}; duplicates {dup:,}, lost {lost:,} (reports: {report_lost:,}), "
        f"refused-but-handled {refused_handled:,}, foreign {len(books.foreign):,}, "
        f"unsettled completions {unsettled:,}, on_done missing {callbacks_missing:,}, "
        f"on_done escaped {escaped:,}"
    )
    for name in hung:  # one line to start the diagnosis from
        st = pipes[name].stats()
        breakers = ", ".join(f"{sh.index}:{sh.breaker}" for sh in st.shards)
        print(
            f"hung: {name} in flight {st.in_flight:,}, breakers {breakers}, "
            f"in handler {sum(sh.in_handler for sh in st.shards)}, "
            f"priority depth {st.priority_depth}"
        )
    problems = []
    if hung:
        problems.append(f"hang ({', '.join(hung)})")
    for label, n in (
        ("lost", max(lost, report_lost)),
        ("duplicates", dup),
        ("refused-but-handled", refused_handled),
        ("foreign", len(books.foreign)),
        ("unsettled completions", unsettled),
        ("on_done missing", callbacks_missing),
        ("on_done escaped into submit_many", escaped),
    ):
        if n:
            problems.append(f"{label} {n:,}")
    total_drain = max(drain_times.values())  # the drains run at once
    if problems:
        print(f"chaos: FAIL {'; '.join(problems)}")
        return 1
    print(f"chaos: OK accepted {accepted:,}, lost 0, duplicates 0, drained in {total_drain:.2f} s")
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # a hung pipeline's threads must not keep the process alive
