"""Reconnect backoff: exponential ceiling, full jitter, reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_firmware.mqtt import Backoff


def test_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(lambda n: n - 1, base_ms=1000, cap_ms=30_000)
    delays = [backoff.next_ms() for _ in range(8)]
    # The highest draw is the ceiling: 1, 2, 4, 8, 16, 30 (cap) seconds.
    assert delays == [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    backoff.reset()
    assert backoff.next_ms() == 1000


@settings(max_examples=300)
@given(attempt=st.integers(0, 10_000), draw=st.floats(0, 1, exclude_max=True))
def test_delay_lies_between_zero_and_the_ceiling(attempt: int, draw: float) -> None:
    backoff = Backoff(lambda n: int(draw * n), base_ms=2000, cap_ms=300_000)
    backoff.attempt = attempt
    ceiling = backoff.ceiling_ms()
    assert ceiling == min(300_000, 2000 * 2 ** min(attempt, 20))
    assert 0 <= backoff.next_ms() <= ceiling
    assert backoff.attempt == attempt + 1


def test_a_district_that_lost_the_broker_spreads_its_reconnects() -> None:
    """1000 nodes failing at the same instant, retrying with the default backoff: the
    busiest second of the first wave holds about half of them, of the fourth wave
    under a tenth."""
    nodes = [Backoff(random.Random(seed).randrange) for seed in range(1000)]
    elapsed = [0] * len(nodes)
    busiest = []
    for _ in range(4):
        per_second: dict[int, int] = {}
        for index, node in enumerate(nodes):
            elapsed[index] += node.next_ms()
            per_second[elapsed[index] // 1000] = per_second.get(elapsed[index] // 1000, 0) + 1
        busiest.append(max(per_second.values()))
    assert busiest[0] <= 560
    assert busiest[3] <= 100
    assert busiest == sorted(busiest, reverse=True)


def test_rejects_a_base_above_the_cap() -> None:
    with pytest.raises(ValueError):
        Backoff(lambda n: 0, base_ms=10, cap_ms=5)
