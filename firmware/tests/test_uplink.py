"""Uplink builder: boot counter, sequence, clock, store records and MQTT forwarding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_boards.mpvm import run_on_cpython
from citisense_firmware.config import Counter
from citisense_firmware.store_forward import Store
from citisense_firmware.uplink import (
    Clock,
    Uplink,
    forward_mqtt,
    mqtt_will,
    next_boot,
    pack_record,
    unpack_record,
)
from citisense_protocols import messages, topics
from citisense_protocols.replay import ReplayWindow, uplink_counter

NODE = 4711
KEY = bytes(range(32))  # test-only
TELEMETRY = [60, messages.SOURCE_SCHEDULE, 312, 1200, 3, 0]


class Ticks:
    """MicroPython-style ticks: wrap at 2**30 ms."""

    def __init__(self, ms: int = 0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms & ((1 << 30) - 1)


def test_boot_counter_counts_boots(tmp_path: Path) -> None:
    path = str(tmp_path / "boot")
    assert [next_boot(Counter(path)) for _ in range(3)] == [0, 1, 2]


def test_messages_are_signed_with_boot_seq_and_time(tmp_path: Path) -> None:
    ticks = Ticks()
    clock = Clock(ticks)
    uplink = Uplink(NODE, KEY, 7, clock)
    ticks.ms = 5_500
    seq, first = uplink.build(messages.TELEMETRY, TELEMETRY)
    body = messages.decode_signed(KEY, first)
    assert seq == 0
    assert (body[messages.KEY_NODE], body[messages.KEY_BOOT], body[messages.KEY_SEQ]) == (
        NODE, 7, 0,
    )
    assert (body[messages.KEY_TS], body[messages.KEY_TQ]) == (5, messages.TQ_UPTIME)
    clock.set(1_760_000_000, messages.TQ_GATEWAY)
    ticks.ms += 2_000
    seq, second = uplink.build(messages.EVENT, [messages.EV_LAMP_OK, 0])
    body = messages.decode_signed(KEY, second)
    assert seq == 1
    assert (body[messages.KEY_TS], body[messages.KEY_TQ]) == (1_760_000_002, messages.TQ_GATEWAY)


def test_gateway_window_accepts_every_message_across_reboots(tmp_path: Path) -> None:
    path = str(tmp_path / "boot")
    window = ReplayWindow()
    for _ in range(3):
        uplink = Uplink(NODE, KEY, next_boot(Counter(path)), Clock(Ticks()))
        for _ in range(5):
            _, message = uplink.build(messages.TELEMETRY, TELEMETRY)
            body = messages.decode_signed(KEY, message)
            window.accept(uplink_counter(body[messages.KEY_BOOT], body[messages.KEY_SEQ]))


@given(st.integers(0, 2**30 - 1), st.lists(st.integers(0, 2**29 - 1), max_size=20))
def test_uptime_does_not_wrap_with_the_ticks(start: int, steps: list[int]) -> None:
    ticks = Ticks(start)
    clock = Clock(ticks)
    for step in steps:
        ticks.ms += step
        clock.uptime_ms()
    assert clock.uptime_ms() == sum(steps)


def test_clock_reports_time_since_sync() -> None:
    ticks = Ticks()
    clock = Clock(ticks)
    assert clock.unix() is None and clock.since_set() is None and not clock.valid
    clock.set(1_760_000_000, messages.TQ_NTP)
    ticks.ms += 90_000
    assert clock.now() == (1_760_000_090, messages.TQ_NTP)
    assert clock.since_set() == 90


def test_store_records_carry_kind_boot_seq(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    uplink = Uplink(NODE, KEY, 2, Clock(Ticks()), store)
    assert uplink.send(messages.TELEMETRY, TELEMETRY) == 0
    assert uplink.send(messages.TELEMETRY, TELEMETRY) == 1
    records = [unpack_record(r) for r in store.peek(5)]
    assert [r[:3] for r in records] == [(messages.TELEMETRY, 2, 0), (messages.TELEMETRY, 2, 1)]
    assert unpack_record(pack_record(6, 1, 2, b"x")) == (6, 1, 2, b"x")


def test_will_and_birth_take_adjacent_seqs_at_each_connect(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    uplink = Uplink(NODE, KEY, 1, Clock(Ticks()), store)
    uplink.send(messages.TELEMETRY, TELEMETRY)
    birth = {0: "1.0.0", 1: messages.LIGHTING, 2: "esp32", 3: bytes(8), 4: 1, 5: None}
    will, on_connect = mqtt_will(uplink, lambda: birth)
    topic, refused = will()  # the broker refuses this attempt: no birth queued
    _, accepted = will()
    on_connect()
    assert topic == topics.topic(NODE, messages.WILL)
    wills = [messages.decode_signed(KEY, m) for m in (refused, accepted)]
    assert [w[messages.KEY_SEQ] for w in wills] == [1, 3]
    assert wills[1][messages.KEY_DATA] is None
    queued = [unpack_record(r) for r in store.peek(10)]
    assert [(kind, seq) for kind, _, seq, _ in queued] == [
        (messages.TELEMETRY, 0), (messages.BIRTH, 4),
    ]
    assert messages.decode_signed(KEY, queued[1][3])[messages.KEY_DATA] == birth


class FakeClient:
    """A connected MQTTClient stand-in: drain() means the broker acknowledged everything."""

    def __init__(self, on_drain: Callable[[], None] | None = None) -> None:
        self.connected = True
        self.published: list[tuple[str, bytes]] = []
        self.on_drain = on_drain

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        assert qos == 1
        self.published.append((topic, payload))
        return True

    async def drain(self) -> None:
        if self.on_drain is not None:
            self.on_drain()
        await asyncio.sleep(0)


async def forward_until(store: Store, client: FakeClient, done: Callable[[], bool]) -> None:
    task = asyncio.create_task(forward_mqtt(store, client, NODE, batch=3, idle=0.001))
    try:
        await asyncio.wait_for(_until(done), 5)
    finally:
        task.cancel()


async def _until(done: Callable[[], bool]) -> None:
    while not done():
        await asyncio.sleep(0.001)


async def test_forwarder_publishes_in_order_on_kind_topics(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    uplink = Uplink(NODE, KEY, 1, Clock(Ticks()), store)
    uplink.send(messages.TELEMETRY, TELEMETRY)
    uplink.send(messages.EVENT, [messages.EV_LAMP_FAULT, messages.LAMP_OUT])
    uplink.send(messages.ACK, [5, messages.OK])
    uplink.send(messages.TELEMETRY, TELEMETRY)
    client = FakeClient()
    await forward_until(store, client, lambda: store.depth == 0)
    assert [t.rsplit("/", 1)[1] for t, _ in client.published] == [
        "telemetry", "event", "ack", "telemetry",
    ]
    seqs = [messages.decode_signed(KEY, p)[messages.KEY_SEQ] for _, p in client.published]
    assert seqs == [0, 1, 2, 3]


async def test_a_queued_message_wakes_the_idle_forwarder(tmp_path: Path) -> None:
    """An ack leaves when it is queued, not at the forwarder's next look at the store."""
    store = Store(str(tmp_path))
    uplink = Uplink(NODE, KEY, 1, Clock(Ticks()), store)
    client = FakeClient()
    task = asyncio.create_task(forward_mqtt(store, client, NODE, idle=3600,
                                            wake=uplink.queued))
    try:
        await asyncio.sleep(0.01)  # it found nothing to send: it waits now
        uplink.send(messages.ACK, [5, messages.OK])
        await asyncio.wait_for(_until(lambda: store.depth == 0), 5)
    finally:
        task.cancel()
    assert [t.rsplit("/", 1)[1] for t, _ in client.published] == ["ack"]


async def test_forwarder_keeps_newer_messages_when_drops_hit_the_batch(tmp_path: Path) -> None:
    store = Store(str(tmp_path), capacity=4)
    uplink = Uplink(NODE, KEY, 1, Clock(Ticks()), store)
    for _ in range(4):
        uplink.send(messages.TELEMETRY, TELEMETRY)

    def two_more_while_in_flight() -> None:
        uplink.send(messages.TELEMETRY, TELEMETRY)  # full: drops seq 0
        uplink.send(messages.TELEMETRY, TELEMETRY)  # drops seq 1
        client.connected = False  # stop after this batch

    client = FakeClient(two_more_while_in_flight)
    await forward_until(store, client, lambda: not client.connected)
    await asyncio.sleep(0.01)
    # Batch seq 0..2 was delivered; 0 and 1 were dropped meanwhile: ack removes only 2.
    assert [unpack_record(r)[2] for r in store.peek(10)] == [3, 4, 5]
    assert store.drops == 2


FIRMWARE = Path(__file__).resolve().parents[1] / "citisense_firmware"

# Runs unchanged on MicroPython and CPython: %r is a state folder.
BUILD_SCRIPT = """
import json
from binascii import hexlify
from citisense_firmware.config import Counter
from citisense_firmware.uplink import Clock, Uplink, next_boot
from citisense_protocols import messages

D = %r
ticks = [1073741000]  # about to wrap
boots = [next_boot(Counter(D + '/boot')) for _ in range(3)]
clock = Clock(lambda: ticks[0])
up = Uplink(4294967295, bytes(range(32)), boots[-1], clock)
out = [hexlify(up.build(messages.TELEMETRY, [100, 0, 65535, 4294967295, 65535, 63])[1])]
ticks[0] = (ticks[0] + 61000) & 0x3FFFFFFF
out.append(hexlify(up.build(messages.HEALTH, {0: 50000, 1: 60000, 2: clock.uptime(), 3: 3,
    4: 0, 5: 0, 6: None, 7: None, 8: '1.0.0'})[1]))
clock.set(1760000000, messages.TQ_NTP)
up.seq = 4294967295  # the worst case the 64-byte budget is set for
out.append(hexlify(up.build(messages.TELEMETRY, [100, 4, 65535, 4294967295, 65535, 63])[1]))
print(json.dumps([boots] + [h.decode() for h in out]))
"""


@pytest.mark.micropython
def test_uplink_bytes_match_cpython_on_micropython(mp: Any, tmp_path: Path) -> None:
    mp.install_package(FIRMWARE)
    on_board = mp.run(BUILD_SCRIPT % "/tmp/state")
    assert on_board == run_on_cpython(BUILD_SCRIPT % str(tmp_path))
    boots, *hexed = json.loads(on_board)
    assert boots == [0, 1, 2]
    bodies = [messages.decode_signed(KEY, bytes.fromhex(h)) for h in hexed]
    assert [(b[messages.KEY_SEQ], b[messages.KEY_TS]) for b in bodies] == [
        (0, 0), (1, 61), (2**32 - 1, 1_760_000_000),
    ]
    assert len(bytes.fromhex(hexed[2])) <= 64

