"""The MicroPython shim under CPython: const and wrapping millisecond ticks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from citisense_firmware.compat import const, ticks_add, ticks_diff, ticks_ms

PERIOD = 1 << 30


def test_const_is_the_identity() -> None:
    assert const(42) == 42


@given(start=st.integers(0, PERIOD - 1), delta=st.integers(-(PERIOD // 2), PERIOD // 2 - 1))
def test_ticks_diff_undoes_ticks_add_across_the_wrap(start: int, delta: int) -> None:
    later = ticks_add(start, delta)
    assert 0 <= later < PERIOD
    assert ticks_diff(later, start) == delta


def test_ticks_run_forward() -> None:
    first = ticks_ms()
    assert 0 <= first < PERIOD
    assert ticks_diff(ticks_ms(), first) >= 0
