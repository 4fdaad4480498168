"""The idempotency stores' contract: bounded in keys and age, repeats wait for the first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sluiceway._idempotency import (
    Answer,
    IdempotencyStore,
    KeyStore,
    SharedIdempotencyStore,
    Ticket,
)

OK = Answer(202, {"accepted": 1}, {})
MakeStore = Callable[[int, float, Callable[[], float]], KeyStore]


@pytest.fixture(params=["memory", "shared"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Build either store; the shared one in a fresh SQLite file (closed at teardown)."""
    opened: list[SharedIdempotencyStore] = []

    def make(max_keys: int, ttl: float, now: Callable[[], float]) -> KeyStore:
        if request.param == "memory":
            return IdempotencyStore(max_keys, ttl, now=now)
        path = tmp_path / "keys.sqlite3"
        SharedIdempotencyStore.create(path)
        store = SharedIdempotencyStore(path, max_keys, ttl, poll=0.001, now=now)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


async def first(store: KeyStore, key: str) -> Ticket:
    """Claim ``key``, which must be new."""
    ticket = await store.claim(key)
    assert isinstance(ticket, Ticket)
    return ticket


def test_keeps_at_most_max_keys(make_store: MakeStore) -> None:
    """After five keys, a store of three keeps the newest three and forgot the oldest."""
    store = make_store(3, 300.0, lambda: 0.0)

    async def main() -> None:
        for n in range(5):
            (await first(store, f"k{n}")).finish(OK)
        assert len(store) == 3
        assert await store.claim("k4") == OK
        assert isinstance(await store.claim("k0"), Ticket)  # forgotten: a fresh claim
        assert len(store) == 3

    asyncio.run(main())


def test_forgets_answers_after_the_ttl(make_store: MakeStore) -> None:
    """An answer is kept ``ttl`` seconds after it was given, then forgotten."""
    now = [0.0]
    store = make_store(10, 300.0, lambda: now[0])

    async def main() -> None:
        ticket = await first(store, "a")
        now[0] = 10.0
        ticket.finish(OK)
        now[0] = 309.0
        assert await store.claim("a") == OK
        now[0] = 310.5
        assert isinstance(await store.claim("a"), Ticket)
        assert len(store) == 1

    asyncio.run(main())


def test_a_repeat_waits_for_the_first_answer(make_store: MakeStore) -> None:
    """A repeat claimed while the first runs gets the first's answer once it is given."""
    store = make_store(10, 300.0, lambda: 0.0)

    async def main() -> None:
        ticket = await first(store, "a")
        repeat = asyncio.ensure_future(store.claim("a"))
        await asyncio.sleep(0.05)
        assert not repeat.done()
        ticket.finish(OK)
        assert await asyncio.wait_for(repeat, 5) == OK

    asyncio.run(main())


def test_a_forgotten_first_lets_the_repeat_go_ahead(make_store: MakeStore) -> None:
    """A first request that admitted nothing finishes with None: the repeat gets a ticket."""
    store = make_store(10, 300.0, lambda: 0.0)

    async def main() -> None:
        ticket = await first(store, "a")
        repeat = asyncio.ensure_future(store.claim("a"))
        await asyncio.sleep(0.05)
        ticket.finish(None)
        assert isinstance(await asyncio.wait_for(repeat, 5), Ticket)
        assert len(store) == 1

    asyncio.run(main())
