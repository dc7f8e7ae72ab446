"""Downlink commands: MAC, replay window with a persisted counter, expiry, dispatch, acks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_firmware.commands import Downlink
from citisense_firmware.config import Counter
from citisense_firmware.store_forward import Store
from citisense_firmware.uplink import Clock, Uplink, unpack_record
from citisense_protocols import messages

NODE = 4711
KEY = bytes(range(32))  # test-only
OTHER_KEY = bytes(range(1, 33))  # test-only
NOW = 1_760_000_000


class Ticks:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


def command(
    counter: int,
    op: int = messages.OP_DIM,
    args: Any = (40, 600),
    cid: int | None = None,
    expiry: int = NOW + 300,
    node: int = NODE,
    key: bytes = KEY,
) -> bytes:
    body = messages.command(node, counter if cid is None else cid, expiry, counter, op,
                            list(args) if isinstance(args, tuple) else args)
    return messages.encode_signed(key, body)


class Node:
    """A Downlink as a role would set it up, recording handler calls."""

    def __init__(self, folder: Path, timed: bool = True) -> None:
        self.folder = folder
        self.clock = Clock(Ticks())
        if timed:
            self.clock.set(NOW, messages.TQ_NTP)
        self.store = Store(str(folder / "queue"))
        self.uplink = Uplink(NODE, KEY, 3, self.clock, self.store)
        self.calls: list[Any] = []
        self.downlink = Downlink(NODE, KEY, Counter(str(folder / "down")), self.clock,
                                 self.uplink)
        self.downlink.register(messages.OP_DIM, self.dim)

    def dim(self, args: list[int]) -> None:
        self.calls.append(args)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


async def test_command_runs_once_and_is_acked(node: Node) -> None:
    assert await node.downlink.handle(command(5)) == [5, messages.OK]
    assert node.calls == [[40, 600]]
    assert await node.downlink.handle(command(5)) is None  # a replay (or QoS 1 redelivery)
    assert node.calls == [[40, 600]] and node.store.depth == 1


async def test_ack_is_queued_as_a_signed_uplink(node: Node) -> None:
    await node.downlink.handle(command(9))
    (record,) = node.store.peek(10)
    kind, boot, seq, message = unpack_record(record)
    body = messages.decode_signed(KEY, message)
    assert (kind, boot, seq) == (messages.ACK, 3, 0)
    assert body[messages.KEY_DATA] == [9, messages.OK]
    assert body[messages.KEY_TS] == NOW and body[messages.KEY_TQ] == messages.TQ_NTP


async def test_replay_after_reboot_is_refused(node: Node) -> None:
    await node.downlink.handle(command(6, expiry=NOW - 1))  # refused, counter still used
    await node.downlink.handle(command(7))
    rebooted = Node(node.folder)
    assert rebooted.downlink.window.highest == 7
    assert await rebooted.downlink.handle(command(7)) is None
    assert await rebooted.downlink.handle(command(6)) is None
    assert await rebooted.downlink.handle(command(8)) == [8, messages.OK]
    assert rebooted.calls == [[40, 600]]


@pytest.mark.parametrize(
    "message",
    [
        command(1, key=OTHER_KEY),
        command(1)[:-1] + bytes([command(1)[-1] ^ 1]),
        b"",
        b"\x84\x40\xa0",
        messages.encode_signed(KEY, {0: 1, 1: 16}),  # envelope incomplete: no id to ack
    ],
    ids=["wrong-key", "flipped-tag", "empty", "truncated", "bad-envelope"],
)
async def test_untrusted_messages_are_dropped_without_ack(node: Node, message: bytes) -> None:
    assert await node.downlink.handle(message) is None
    assert node.downlink.rejected == 1 and node.calls == [] and node.store.depth == 0


async def test_message_for_another_node_is_dropped(node: Node) -> None:
    assert await node.downlink.handle(command(1, node=NODE + 1)) is None
    assert node.calls == []


@pytest.mark.parametrize(
    ("op", "args", "result"),
    [
        (messages.OP_DIM, (150, 600), messages.BAD_ARGS),
        (messages.OP_RECALIBRATE, 0, messages.UNSUPPORTED),  # valid, but no handler
        (200, None, messages.UNSUPPORTED),  # not in the catalogue
    ],
)
async def test_refused_commands_get_an_error_ack(
    node: Node, op: int, args: Any, result: int
) -> None:
    assert await node.downlink.handle(command(3, op=op, args=args)) == [3, result]
    assert node.calls == []


async def test_expired_command_does_not_run(node: Node) -> None:
    assert await node.downlink.handle(command(4, expiry=NOW - 1)) == [4, messages.EXPIRED]
    assert node.calls == []


async def test_without_time_only_time_sync_runs(tmp_path: Path) -> None:
    node = Node(tmp_path, timed=False)
    assert await node.downlink.handle(command(1)) == [1, messages.NO_TIME]
    sync = command(2, op=messages.OP_TIME_SYNC, args=NOW)
    assert await node.downlink.handle(sync) == [2, messages.OK]
    assert node.clock.now() == (NOW, messages.TQ_GATEWAY)
    # The gateway retries the refused command (same id, fresh counter): now it runs.
    assert await node.downlink.handle(command(3, cid=1)) == [1, messages.OK]
    assert node.calls == [[40, 600]]


async def test_retried_command_id_is_not_run_twice(node: Node) -> None:
    assert await node.downlink.handle(command(10, cid=77)) == [77, messages.OK]
    assert await node.downlink.handle(command(11, cid=77)) == [77, messages.DUPLICATE]
    assert node.calls == [[40, 600]]
    for n in range(16):  # the node remembers the last 16 executed ids
        await node.downlink.handle(command(20 + n, cid=1000 + n))
    assert await node.downlink.handle(command(40, cid=77)) == [77, messages.OK]


async def test_checks_follow_the_spec_order(node: Node) -> None:
    # expiry before opcode and arguments; a replayed counter before everything
    late_and_bad = command(1, args=(150, 600), expiry=NOW - 1)
    assert await node.downlink.handle(late_and_bad) == [1, messages.EXPIRED]
    assert await node.downlink.handle(late_and_bad) is None


async def test_handler_results_and_failures(node: Node) -> None:
    async def identify(seconds: int) -> int:
        return messages.BUSY if seconds > 60 else messages.OK

    def reboot(_: None) -> None:
        raise RuntimeError("watchdog says no")

    node.downlink.register(messages.OP_IDENTIFY, identify)
    node.downlink.register(messages.OP_REBOOT, reboot)
    assert await node.downlink.handle(command(1, messages.OP_IDENTIFY, 5)) == [1, messages.OK]
    assert await node.downlink.handle(command(2, messages.OP_IDENTIFY, 90)) == [2, messages.BUSY]
    assert await node.downlink.handle(command(3, messages.OP_REBOOT, None)) == [
        3, messages.FAILED,
    ]
    assert isinstance(node.downlink.last_error, RuntimeError)


async def test_uplink_ack_is_reported_and_not_persisted(node: Node) -> None:
    acks: list[tuple[int, int]] = []
    node.downlink.on_uplink_ack = lambda boot, seq: acks.append((boot, seq))
    ack = messages.encode_signed(KEY, messages.uplink_ack(NODE, 40, 3, 12))
    assert await node.downlink.handle(ack) is None
    assert await node.downlink.handle(ack) is None  # replayed: ignored
    assert acks == [(3, 12)]
    assert Counter(str(node.folder / "down")).value is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
async def test_hostile_bytes_never_raise(data: bytes) -> None:
    clock = Clock(Ticks())

    class NoWrites:
        value = None

        def set(self, value: int) -> None:
            raise AssertionError("nothing may be persisted")

    downlink = Downlink(NODE, KEY, NoWrites(), clock)
    assert await downlink.handle(data) is None


FIRMWARE = Path(__file__).resolve().parents[1] / "citisense_firmware"

# The messages arrive as hex; the node's ack messages leave as hex.
MP_COMMANDS = """
import json
from binascii import hexlify, unhexlify
from citisense_firmware.commands import Downlink
from citisense_firmware.config import Counter
from citisense_firmware.store_forward import Store
from citisense_firmware.uplink import Clock, Uplink, unpack_record
from citisense_protocols import messages

KEY = bytes(range(32))
ticks = [0]
calls = []

def boot():
    clock = Clock(lambda: ticks[0])
    clock.set(%d, messages.TQ_NTP)
    store = Store('/tmp/queue')
    up = Uplink(4711, KEY, 3, clock, store)
    down = Downlink(4711, KEY, Counter('/tmp/down'), clock, up)
    down.register(messages.OP_DIM, calls.append)
    return down, store

down, store = boot()
results = []
for hexed in json.loads(%r):
    results.append(await down.handle(unhexlify(hexed)))
store.close()
down, store = boot()  # reboot: the persisted counter refuses replays
results.append(await down.handle(unhexlify(json.loads(%r)[0])))
acks = [hexlify(unpack_record(r)[3]).decode() for r in store.peek(20)]
print(json.dumps([results, calls, acks]))
"""


@pytest.mark.micropython
def test_commands_on_micropython(mp: Any) -> None:
    mp.install_package(FIRMWARE)
    sent = [
        command(5),  # runs
        command(5),  # replay
        command(6, args=(101, 5)),  # bad args
        command(7, expiry=NOW - 10),  # expired
        command(8, key=OTHER_KEY),  # forged: no ack
        command(9, op=messages.OP_REBOOT, args=None),  # no handler
    ]
    hexed = json.dumps([m.hex() for m in sent])
    results, calls, acks = json.loads(mp.run(MP_COMMANDS % (NOW, hexed, hexed)))
    assert results == [
        [5, messages.OK], None, [6, messages.BAD_ARGS], [7, messages.EXPIRED],
        None, [9, messages.UNSUPPORTED], None,
    ]
    assert calls == [[40, 600]]
    bodies = [messages.decode_signed(KEY, bytes.fromhex(a)) for a in acks]
    assert [b[messages.KEY_DATA] for b in bodies] == [r for r in results if r is not None]
    assert [b[messages.KEY_SEQ] for b in bodies] == [0, 1, 2, 3]
