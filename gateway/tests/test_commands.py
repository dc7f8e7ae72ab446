"""Commands: validated before they are stored, retried with backoff, expired, sent once
per claim even with two gateway instances."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from gwkit import opened, provision
from hypothesis import given
from hypothesis import strategies as st

from citisense_gateway.commands import (
    CommandError,
    CommandPolicy,
    Commands,
    ack_outcome,
    args_from_json,
    args_to_json,
    backoff,
    check_args,
)
from citisense_gateway.keyring import KeyRing
from citisense_gateway.metrics import Metrics
from citisense_protocols import messages


class Clock:
    def __init__(self) -> None:
        self.now = time.time()  # the simulated node checks expiry against the real clock

    def __call__(self) -> float:
        return self.now


class Radio:
    """Downlink double: records what would go on the air."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes]] = []

    async def send(self, node_id: int, kind: int, message: bytes) -> None:
        self.sent.append((node_id, kind, message))


@pytest.mark.parametrize(("result", "state"), [
    (messages.OK, "acked"), (messages.STALE, "acked"), (messages.DUPLICATE, "acked"),
    (messages.EXPIRED, "failed"), (messages.BAD_ARGS, "failed"),
    (messages.UNSUPPORTED, "failed"), (messages.FAILED, "sent"), (messages.BUSY, "sent"),
    (messages.NO_TIME, "sent"),
])
def test_each_ack_result_moves_the_command(result: int, state: str) -> None:
    assert ack_outcome(result, 100.0, 60.0)[0] == state


@given(st.integers(0, 40), st.floats(0.1, 100), st.floats(1, 1000), st.floats(0, 1))
def test_backoff_doubles_is_capped_and_jittered(attempt: int, base: float, cap: float,
                                                r: float) -> None:
    delay = backoff(attempt, base, cap, lambda: r)
    nominal = min(cap, base * 2**attempt)
    assert 0.8 * nominal * (1 - 1e-9) <= delay <= 1.2 * nominal * (1 + 1e-9)


@pytest.mark.parametrize(("op", "args"), [
    (messages.OP_DIM, [30, 600]), (messages.OP_SCHEDULE, {0: 4, 1: [[1, 0, 100]]}),
    (messages.OP_RESERVE, [10, 20]), (messages.OP_RELEASE, None),
    (messages.OP_APP_UPDATE, ["1.2", "https://x.org/a.tar", 10, bytes(32)]),
    (messages.OP_SET_CONFIG, {"telemetry_s": 60}),
])
def test_arguments_survive_storage(op: int, args: Any) -> None:
    check_args(op, args)
    assert args_from_json(op, args_to_json(op, args)) == args


@pytest.mark.parametrize(("op", "args", "message"), [
    (messages.OP_DIM, [101, 60], "dim command field level out of range 0..100"),
    (messages.OP_RESERVE, [20, 10], "until must be after from"),
    (messages.OP_IDENTIFY, 0, "seconds out of range 1..600"),
    (99, None, "unknown opcode 99"),
])
def test_bad_arguments_never_reach_a_node(op: int, args: Any, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        check_args(op, args)


def test_retries_back_off_then_expire(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            fleet = await provision(store, [(1, "lighting")])
            clock, radio = Clock(), Radio()
            keyring = KeyRing(store)
            await keyring.refresh()
            commands = Commands(store, keyring, radio, Metrics(), CommandPolicy(
                ttl=100, retry_base=10, retry_cap=40, max_attempts=10), clock)
            [c] = await commands.issue([1], messages.OP_IDENTIFY, 5, user="eve")
            sends = []
            while clock.now < c.expires_at + 1:
                if await commands.send_due():
                    sends.append(clock.now - c.created_at)
                clock.now += 1
            assert 4 <= len(sends) <= 6 and sends[0] == 0
            gaps = [b - a for a, b in itertools.pairwise(sends)]
            assert all(g >= 8 for g in gaps) and max(gaps) <= 49  # doubling, capped at 40
            final = await store.get_command(c.command_id)
            assert final.state == "expired" and final.attempts == len(sends)
            # Each transmission is a fresh message: same id, new counter, node accepts it.
            lamp = fleet.nodes[1]
            replies = [lamp.handle(m) for _, _, m in radio.sent]
            assert lamp.refused == 0 and len(lamp.commands) == 1
            assert all(r is not None for r in replies)

    asyncio.run(scenario())


def test_two_instances_never_send_the_same_attempt_twice(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            await provision(store, [(1, "lighting"), (2, "lighting")])
            keyring = KeyRing(store)
            await keyring.refresh()
            radio = Radio()
            a = Commands(store, keyring, radio, Metrics())
            b = Commands(store, keyring, radio, Metrics())
            await a.issue([1, 2], messages.OP_REBOOT, None, user="ops")
            await asyncio.gather(a.send_due(), b.send_due())
            assert sorted(node for node, _, _ in radio.sent) == [1, 2]

    asyncio.run(scenario())


def test_issuing_needs_a_user_and_known_nodes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            await provision(store, [(1, "lighting")])
            commands = Commands(store, KeyRing(store), Radio(), Metrics())
            with pytest.raises(CommandError, match="attributed"):
                await commands.issue([1], messages.OP_REBOOT, None, user="")
            with pytest.raises(Exception, match="node 9 is not registered"):
                await commands.issue([9], messages.OP_REBOOT, None, user="ops")

    asyncio.run(scenario())
