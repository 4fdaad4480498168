"""Keyed pipelines: equal keys share a shard and are handled in submission order."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

import sluiceway as sw

from .conftest import Recorder


@settings(max_examples=30, deadline=None)
@given(
    keys=st.lists(st.integers(0, 20), min_size=1, max_size=300),
    shards=st.integers(1, 6),
    batch=st.integers(1, 17),
    bulk=st.booleans(),
)
def test_per_key_order_is_submission_order(
    keys: list[int], shards: int, batch: int, bulk: bool
) -> None:
    """For random keys, every key's items reach the handler in the order submitted."""
    rec = Recorder()
    with sw.Pipeline(rec, shards=shards, batch_size=batch, max_delay=0, key=lambda x: x[0]) as p:
        items = [(k, i) for i, k in enumerate(keys)]
        if bulk:
            assert p.submit_many(items) == len(items)
        else:
            for item in items:
                assert p.submit(item)
    seen: dict[int, list[int]] = defaultdict(list)
    for k, i in rec.items:
        seen[k].append(i)
    for k, order in seen.items():
        assert order == sorted(order), k
    assert len(rec.items) == len(keys)


def test_equal_keys_share_a_shard() -> None:
    """All items of one key are counted on a single shard."""
    rec = Recorder()
    with sw.Pipeline(rec, shards=8, batch_size=4, key=lambda x: "same") as p:
        for i in range(40):
            p.submit(i)
    assert sum(1 for s in p.stats().shards if s.processed) == 1
    assert rec.items == list(range(40))
