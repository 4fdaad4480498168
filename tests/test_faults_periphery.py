"""Faults at the engine's periphery: policies, durations, completions, tuning, lifecycle."""

from __future__ import annotations

import sluiceway as sw


def test_retry_delay_is_total_for_any_call_count() -> None:
    """Fault: ``Retry.delay`` overflowed (OverflowError) after 1025 calls in a long outage."""
    retry = sw.Retry(attempts=5000, backoff=0.05, max_backoff=2.0, jitter=False)
    assert retry.delay(1) == 0.05
    assert retry.delay(1025) == 2.0
    assert retry.delay(10**9) == 2.0
    tiny = sw.Retry(attempts=5000, backoff=1e-300, max_backoff=2.0, jitter=False)
    assert tiny.delay(2000) == 2.0  # grows past the cap even from a tiny backoff
    assert tiny.delay(10) == 1e-300 * 2**9
    zero = sw.Retry(backoff=0.0, jitter=False)
    assert zero.delay(10**6) == 0.0
    jittered = sw.Retry(attempts=5000, seed=1)
    assert 0.0 <= jittered.delay(4000) <= 2.0
