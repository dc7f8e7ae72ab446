"""Replay window: each counter accepted once, stale ones refused, on both VMs."""

from __future__ import annotations

import json
import random
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_boards.mpvm import MicroPythonVM
from citisense_protocols import mac
from citisense_protocols.errors import AuthError
from citisense_protocols.replay import (
    MAX_COUNTER,
    OUT_OF_RANGE,
    REPLAYED,
    TOO_OLD,
    WIDTH,
    ReplayWindow,
    uplink_counter,
)

TEST_KEY = bytes(range(32))  # test-only


def decision(window: ReplayWindow, counter: int) -> str:
    try:
        window.accept(counter)
    except AuthError as error:
        return error.reason
    return "ok"


def test_in_order_counters_pass_once_each() -> None:
    window = ReplayWindow()
    assert [decision(window, c) for c in (0, 1, 2, 2, 1, 3)] == [
        "ok",
        "ok",
        "ok",
        REPLAYED,
        REPLAYED,
        "ok",
    ]


def test_late_counters_inside_the_window_pass_once() -> None:
    window = ReplayWindow()
    window.accept(100)
    assert decision(window, 100 - (WIDTH - 1)) == "ok"  # oldest slot still open
    assert decision(window, 100 - (WIDTH - 1)) == REPLAYED
    assert decision(window, 100 - WIDTH) == TOO_OLD
    assert decision(window, 50) == "ok"
    window.accept(100 + WIDTH)  # slides the window by its full width
    assert decision(window, 100) == TOO_OLD
    assert decision(window, 101) == "ok"
    assert decision(window, 100 + WIDTH) == REPLAYED


def test_check_never_moves_the_window() -> None:
    window = ReplayWindow()
    window.accept(10)
    window.check(11)
    window.check(9)
    assert (window.highest, window.seen) == (10, 1)
    with pytest.raises(AuthError, match=REPLAYED):
        window.check(10)


def test_uplink_counter_orders_boots_before_sequence_numbers() -> None:
    assert uplink_counter(0, 0) == 0
    assert uplink_counter(3, 7) == (3 << 32) | 7
    window = ReplayWindow()
    window.accept(uplink_counter(1, 5))
    assert decision(window, uplink_counter(2, 0)) == "ok"  # the node rebooted
    assert decision(window, uplink_counter(1, 4)) == TOO_OLD  # a late message of boot 1
    window.accept(uplink_counter(0xFFFFFFFF, 0xFFFFFFFF))
    assert window.highest == MAX_COUNTER


@pytest.mark.parametrize(("boot", "seq"), [(-1, 0), (0, -1), (1 << 32, 0), (0, 1 << 32)])
def test_counter_parts_outside_32_bits_are_refused(boot: int, seq: int) -> None:
    with pytest.raises(AuthError, match=OUT_OF_RANGE):
        uplink_counter(boot, seq)


@pytest.mark.parametrize("counter", [-1, MAX_COUNTER + 1])
def test_counters_outside_64_bits_are_refused(counter: int) -> None:
    with pytest.raises(AuthError, match=OUT_OF_RANGE):
        ReplayWindow().accept(counter)


def test_resume_from_persisted_highest_refuses_everything_up_to_it() -> None:
    window = ReplayWindow.resume(500)
    assert [decision(window, c) for c in (500, 499, 437, 436, 501)] == [
        REPLAYED,
        REPLAYED,
        REPLAYED,
        TOO_OLD,
        "ok",
    ]


counters = st.lists(st.integers(0, 300) | st.integers(MAX_COUNTER - 300, MAX_COUNTER), max_size=200)


@given(counters)
def test_window_matches_a_model_that_remembers_everything(sequence: list[int]) -> None:
    window = ReplayWindow()
    accepted: set[int] = set()
    for counter in sequence:
        fresh = counter not in accepted and counter > max(accepted, default=-1) - WIDTH
        assert (decision(window, counter) == "ok") == fresh
        if fresh:
            accepted.add(counter)
        window = ReplayWindow(window.highest, window.seen)  # (highest, seen) is all the state


def uplink(boot: int, seq: int, key: bytes = TEST_KEY) -> bytes:
    body = cbor2.dumps({0: 1, 1: 2, 2: 4711, 3: boot, 4: seq, 5: 60, 6: 0, 7: [1]})
    return mac.sign(key, body)


def gateway_accepts(window: ReplayWindow, message: bytes) -> str:
    """The gateway's order: MAC first, then the counter, so forgeries never move the window."""
    try:
        envelope = cbor2.loads(mac.verify(TEST_KEY, message))
        window.accept(uplink_counter(envelope[3], envelope[4]))
    except AuthError as error:
        return error.reason
    return "ok"


def test_replayed_and_forged_uplinks_are_rejected() -> None:
    window = ReplayWindow()
    first, second = uplink(7, 0), uplink(7, 1)
    assert gateway_accepts(window, first) == "ok"
    assert gateway_accepts(window, second) == "ok"
    assert gateway_accepts(window, first) == REPLAYED
    forged = uplink(9, 0, key=bytes(32))
    assert gateway_accepts(window, forged) == "MAC tag mismatch"
    assert window.highest == uplink_counter(7, 1)
    assert gateway_accepts(window, uplink(8, 0)) == "ok"


# --- identical decisions on the real MicroPython VM ---------------------------------


def decision_script() -> tuple[list[int], list[str]]:
    rng = random.Random(5)
    sequence = []
    for boot in (0, 1, 0xFFFF, 0xFFFFFFFF):
        for _ in range(60):
            seq = rng.choice((rng.randrange(40), rng.randrange(1 << 32), 0xFFFFFFFF))
            sequence.append(uplink_counter(boot, seq))
        sequence += sequence[-5:]  # straight replays
    window = ReplayWindow()
    return sequence, [decision(window, c) for c in sequence]


MP_DECISIONS = """
import json
from citisense_protocols.replay import ReplayWindow
from citisense_protocols.errors import AuthError
w = ReplayWindow()
out = []
for c in json.loads(%r):
    try:
        w.accept(c)
        out.append('ok')
    except AuthError as e:
        out.append(e.reason)
print(json.dumps([out, str(w.highest), str(w.seen)]))
"""


@pytest.mark.micropython
def test_micropython_window_decides_like_cpython_on_64_bit_counters(mp: MicroPythonVM) -> None:
    sequence, expected = decision_script()
    assert {"ok", REPLAYED, TOO_OLD} <= set(expected)
    window = ReplayWindow()
    for counter in sequence:
        decision(window, counter)
    got: list[Any] = json.loads(mp.run(MP_DECISIONS % json.dumps(sequence)))
    assert got == [expected, str(window.highest), str(window.seen)]


MP_DOWNLINK = """
from citisense_protocols import cbor, mac
from citisense_protocols.replay import ReplayWindow
from citisense_protocols.errors import WireError
key = bytes(range(32))
def command(counter):
    return mac.sign(key, cbor.dumps({0: 1, 1: 16, 2: 4711, 8: counter, 10: counter, 11: 6}))
def receive(window, message):
    try:
        body = cbor.loads(mac.verify(key, message))
        window.accept(body[10])
        return 'ok'
    except WireError as e:
        return e.reason
w = ReplayWindow()
first, second, third = command(1), command(2), command(3)
print(receive(w, first), receive(w, second), receive(w, first))
persisted = w.highest
w = ReplayWindow.resume(persisted)  # after a reboot
tampered = third[:-1] + bytes([third[-1] ^ 1])
print(receive(w, second), receive(w, tampered), receive(w, third), receive(w, third))
"""


@pytest.mark.micropython
def test_micropython_node_rejects_replayed_commands_across_reboots(mp: MicroPythonVM) -> None:
    assert mp.run(MP_DOWNLINK).splitlines() == [
        "ok ok " + REPLAYED,
        REPLAYED + " MAC tag mismatch ok " + REPLAYED,
    ]
