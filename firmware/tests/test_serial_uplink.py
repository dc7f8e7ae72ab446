"""The serial link: frames out, uplink-acks and commands in, nothing lost to noise."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_firmware.commands import Downlink
from citisense_firmware.config import Counter
from citisense_firmware.serial_uplink import SerialLink, UartStream
from citisense_firmware.store_forward import Store
from citisense_firmware.uplink import Clock, Uplink
from citisense_protocols import messages
from citisense_protocols.framing import FrameDecoder, encode_frame

NODE = 4711
KEY = bytes(range(32))  # test-only
NOW = 1_760_000_000
TELEMETRY = [60, 0, 312, 1200, 3, 0]


class Gateway:
    """The far end of the line: verifies frames, answers with signed uplink-acks."""

    def __init__(self, to_node: asyncio.StreamReader, key: bytes = KEY) -> None:
        self.to_node = to_node
        self.key = key
        self.decoder = FrameDecoder()
        self.received: list[tuple[int, int, int]] = []  # (kind, boot, seq)
        self.counter = 0
        self.ignore_once: set[int] = set()  # seqs whose first copy gets no ack
        self.noise = b""

    def write(self, data: bytes) -> None:
        for message in self.decoder.feed(data):
            body = messages.decode_signed(KEY, message)
            boot, seq = body[messages.KEY_BOOT], body[messages.KEY_SEQ]
            self.received.append((body[messages.KEY_KIND], boot, seq))
            if seq in self.ignore_once:
                self.ignore_once.discard(seq)
                continue
            self.counter += 1
            ack = messages.uplink_ack(NODE, self.counter, boot, seq)
            self.to_node.feed_data(self.noise + encode_frame(messages.encode_signed(self.key, ack)))

    def send_command(self, op: int, args: object, cid: int) -> None:
        self.counter += 1
        body = messages.command(NODE, cid, NOW + 60, self.counter, op, args)
        self.to_node.feed_data(encode_frame(messages.encode_signed(KEY, body)))


class LineWriter:
    """StreamWriter stand-in: what the node writes reaches the gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def write(self, data: bytes) -> None:
        self.gateway.write(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)


class Rig:
    def __init__(self, folder: Path, gateway_key: bytes = KEY) -> None:
        self.reader = asyncio.StreamReader()
        self.gateway = Gateway(self.reader, gateway_key)
        clock = Clock(lambda: 0)
        clock.set(NOW, messages.TQ_NTP)
        self.store = Store(str(folder / "queue"))
        self.uplink = Uplink(NODE, KEY, 1, clock, self.store)
        self.downlink = Downlink(NODE, KEY, Counter(str(folder / "down")), clock, self.uplink)
        self.link = SerialLink(self.reader, LineWriter(self.gateway), self.downlink, self.store,
                               batch=4, ack_timeout=0.05)

    async def run_until(self, done: Callable[[], bool]) -> None:
        tasks = [asyncio.create_task(self.link.receive()),
                 asyncio.create_task(self.link.forward(idle=0.005))]
        try:
            async def wait() -> None:
                while not done():
                    await asyncio.sleep(0.005)

            await asyncio.wait_for(wait(), 10)
        finally:
            for task in tasks:
                task.cancel()


def seqs(received: list[tuple[int, int, int]]) -> list[int]:
    return [seq for _, _, seq in received]


async def test_every_message_is_sent_once_and_forgotten_when_acked(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    for _ in range(10):
        rig.uplink.send(messages.TELEMETRY, TELEMETRY)
    await rig.run_until(lambda: rig.store.depth == 0)
    assert seqs(rig.gateway.received) == list(range(10))
    assert rig.link.resends == 0


async def test_unacked_message_is_sent_again_and_nothing_is_lost(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.gateway.ignore_once = {2, 5}
    for _ in range(8):
        rig.uplink.send(messages.TELEMETRY, TELEMETRY)
    await rig.run_until(lambda: rig.store.depth == 0)
    got = seqs(rig.gateway.received)
    assert sorted(set(got)) == list(range(8))
    assert got.count(2) == 2 and rig.link.resends >= 1


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=1, max_size=40))
async def test_noise_between_frames_costs_nothing(noise: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        rig = Rig(Path(folder))
        rig.gateway.noise = noise + b"\x00"  # garbage, then a delimiter to resynchronise
        for _ in range(6):
            rig.uplink.send(messages.TELEMETRY, TELEMETRY)
        await rig.run_until(lambda: rig.store.depth == 0)
        assert sorted(set(seqs(rig.gateway.received))) == list(range(6))


async def test_forged_uplink_acks_do_not_release_messages(tmp_path: Path) -> None:
    rig = Rig(tmp_path, gateway_key=bytes(range(1, 33)))
    rig.uplink.send(messages.TELEMETRY, TELEMETRY)
    await rig.link.forward_batch(rig.store.peek(4))
    await asyncio.sleep(0)
    receiver = asyncio.create_task(rig.link.receive())
    await asyncio.sleep(0.01)
    receiver.cancel()
    assert rig.store.depth == 1 and rig.downlink.rejected >= 1


async def test_command_over_the_line_is_run_and_acked(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    levels: list[Any] = []
    rig.downlink.register(messages.OP_DIM, levels.append)
    rig.gateway.send_command(messages.OP_DIM, [30, 900], cid=42)
    await rig.run_until(lambda: any(k == messages.ACK for k, _, _ in rig.gateway.received))
    assert levels == [[30, 900]]


class FakeUart:
    """machine.UART as far as UartStream uses it."""

    def __init__(self) -> None:
        self.rx = bytearray()
        self.tx = bytearray()

    def any(self) -> int:
        return len(self.rx)

    def read(self, n: int) -> bytes:
        data = bytes(self.rx[:n])
        del self.rx[:n]
        return data

    def write(self, data: bytes) -> int:
        self.tx += data
        return len(data)


async def test_uart_stream_polls_a_uart_for_ports_without_stream_support() -> None:
    uart = FakeUart()
    stream = UartStream(uart, poll=0.001)
    reading = asyncio.create_task(stream.read(4))
    await asyncio.sleep(0.01)
    assert not reading.done()
    uart.rx += b"abcdef"
    assert await asyncio.wait_for(reading, 5) == b"abcd"
    assert await stream.read(10) == b"ef"
    stream.write(b"\x01\x02\x00")
    await stream.drain()
    assert uart.tx == b"\x01\x02\x00"


FIRMWARE = Path(__file__).resolve().parents[1] / "citisense_firmware"

MP_SERIAL = """
import json
from citisense_firmware.commands import Downlink
from citisense_firmware.config import Counter
from citisense_firmware.serial_uplink import SerialLink, UartStream
from citisense_firmware.store_forward import Store
from citisense_firmware.uplink import Clock, Uplink
from citisense_protocols import messages
from citisense_protocols.framing import FrameDecoder

KEY = bytes(range(32))
clock = Clock(lambda: 0)
store = Store('/tmp/queue')
up = Uplink(4711, KEY, 1, clock, store)
down = Downlink(4711, KEY, Counter('/tmp/down'), clock, up)
decoder = FrameDecoder()
seen = []
pending = []

class Line:
    def write(self, data):
        for message in decoder.feed(data):
            body = messages.decode_signed(KEY, message)
            seen.append(body[messages.KEY_SEQ])
            if body[messages.KEY_SEQ] != 1 or seen.count(1) > 1:  # seq 1 lost once
                ack = messages.uplink_ack(4711, len(seen), 1, body[messages.KEY_SEQ])
                pending.append(messages.encode_signed(KEY, ack))
    async def drain(self):
        while pending:
            await down.handle(pending.pop(0))

link = SerialLink(None, Line(), down, store, batch=3, ack_timeout=0.05)
for n in range(5):
    up.send(messages.TELEMETRY, [n, 0, None, None, None, 0])
rounds = 0
while store.depth and rounds < 10:
    await link.forward_batch(store.peek(3))
    rounds += 1
print(json.dumps([seen, store.depth, link.resends, decoder.frames]))
"""


@pytest.mark.micropython
def test_serial_link_on_micropython(mp: Any) -> None:
    mp.install_package(FIRMWARE)
    seen, depth, resends, frames = json.loads(mp.run(MP_SERIAL))
    assert depth == 0 and resends == 1
    assert seen == [0, 1, 2, 1, 2, 3, 4]  # 1 was lost: resent with 2, once acked
    assert frames == len(seen)
