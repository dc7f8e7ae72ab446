"""The ingest pipeline on a real store, without a broker: exactly-once, replays, wills,
restarts, store failures, acknowledgement order, and payloads of any shape."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from gwkit import opened, provision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citisense_gateway.ingest import Ingest, Outcome
from citisense_gateway.keyring import KeyRing
from citisense_gateway.metrics import Metrics
from citisense_gateway.simnode import SAMPLE, SimNode
from citisense_gateway.store.base import IngestBatch, Node, Store
from citisense_protocols import messages, topics


class Frame(NamedTuple):
    topic: str
    payload: bytes
    packet_id: int


class Source:
    name = "mqtt"

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def acknowledge(self, outcomes: list[Outcome]) -> None:
        self.outcomes += outcomes


async def pipeline(store: Store, **kw: Any) -> Ingest:
    keyring = KeyRing(store, min_interval=0)
    await keyring.refresh()
    return Ingest(store, keyring, Metrics(), batch_size=50, **kw)


def topic(node: SimNode, kind: int = messages.TELEMETRY) -> str:
    return topics.topic(node.node_id, kind)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_each_message_stored_once_and_acknowledged_every_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            fleet = await provision(store, [(1, "lighting"), (2, "air")])
            lamp, air = fleet.nodes[1], fleet.nodes[2]
            ingest = await pipeline(store)
            src = Source()
            m1, m2, m3 = lamp.telemetry(), lamp.telemetry(), air.telemetry()
            for token, payload in enumerate([m1, m2, m1, m3, m2, m1], start=1):
                ingest.offer(src, topic(lamp if payload != m3 else air), payload, token)
            await ingest.flush()
            ingest.offer(src, topic(lamp), m1, 7)  # after the commit: a redelivery
            await ingest.flush()
            assert await store.count_uplinks() == 3
            assert [o.token for o in src.outcomes] == [1, 2, 3, 4, 5, 6, 7]  # arrival order
            assert all(o.accepted for o in src.outcomes)
            assert [(o.node_id, o.seq) for o in src.outcomes][:4] == [(1, 0), (1, 1), (1, 0),
                                                                      (2, 0)]
            assert await store.count_quarantined() == 0

    run(scenario())


def test_a_restarted_gateway_knows_what_it_stored(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            lamp = (await provision(store, [(1, "lighting")])).nodes[1]
            stream = [lamp.telemetry() for _ in range(100)]
            first = await pipeline(store)
            for i, m in enumerate(stream[:80]):
                if i != 10:  # seq 10 never arrived before the crash
                    first.offer(Source(), topic(lamp), m, i + 1)
            await first.flush()
            # A new process: windows come from the store, not from memory.
            second = await pipeline(store)
            src = Source()
            for i, m in enumerate(stream[60:], start=60):  # redelivered and new
                second.offer(src, topic(lamp), m, i)
            second.offer(src, topic(lamp), stream[10], 10)  # too old, never stored: late
            second.offer(src, topic(lamp), stream[5], 5)  # too old, stored: duplicate
            await second.flush()
            assert await store.count_uplinks() == 100
            assert all(o.accepted for o in src.outcomes) and len(src.outcomes) == 42
            assert await store.count_quarantined() == 0
            assert second.metrics.late._value.get() == 1
            assert second.metrics.duplicates._value.get() == 21  # 60..79 and 5

    run(scenario())


def test_a_will_counts_only_right_after_its_birth(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            lamp = (await provision(store, [(1, "lighting")])).nodes[1]
            ingest = await pipeline(store)
            src = Source()
            will = lamp.message(messages.WILL, None)  # signed at connect: seq 0
            birth = lamp.birth()  # seq 1
            later = [lamp.telemetry() for _ in range(100)]
            stale_will = lamp.message(messages.WILL, None)  # not below a birth
            for m in [birth, *later]:
                ingest.offer(src, topic(lamp, messages.BIRTH if m is birth else 2), m, 1)
            ingest.offer(src, topic(lamp, messages.WILL), will, 2)  # the broker publishes it
            ingest.offer(src, topic(lamp, messages.WILL), will, 3)  # and again
            ingest.offer(src, topic(lamp, messages.WILL), stale_will, 4)
            await ingest.flush()
            twin = await store.twin(1)
            assert not twin.online and twin.boot == 1 and twin.birth_seq == 1
            assert len(await store.uplinks(1, kind=messages.WILL)) == 1
            assert [q.reason for q in await store.quarantined()] == ["replay"]

    run(scenario())


def test_refused_payloads_are_quarantined_and_acknowledged(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            lamp = (await provision(store, [(1, "lighting")])).nodes[1]
            stranger = SimNode(77, secrets.token_bytes(32))
            ingest = await pipeline(store)
            src = Source()
            early = stranger.telemetry()
            ingest.offer(src, topic(stranger), early, 1)
            ingest.offer(src, topic(lamp), b"\xa0", 2)
            ingest.offer(src, topic(lamp), lamp.telemetry([1, 0, 0, 0, 0, 0, 0]), 3)  # air data
            await ingest.flush()
            assert [o.accepted for o in src.outcomes] == [False, False, False]
            reasons = sorted(q.reason for q in await store.quarantined())
            assert reasons == ["invalid", "malformed", "unknown-node"]
            # The node gets registered while the gateway runs: found on the next miss.
            await store.add_node(Node(77, "lighting", stranger.key, "$7$x", created_at=0), "t")
            ingest.offer(src, topic(stranger), stranger.telemetry(), 4)
            await ingest.flush()
            assert src.outcomes[-1].accepted

    run(scenario())


class FlakyStore:
    """A store whose first commits fail (a database restarting)."""

    def __init__(self, store: Store, failures: int) -> None:
        self._store = store
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def commit_ingest(self, batch: IngestBatch) -> int:
        if self.failures:
            self.failures -= 1
            raise OSError("database unavailable")
        return await self._store.commit_ingest(batch)


def test_nothing_is_acknowledged_before_it_is_durable(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            lamp = (await provision(store, [(1, "lighting")])).nodes[1]
            flaky = FlakyStore(store, failures=2)
            ingest = await pipeline(flaky)  # type: ignore[arg-type]
            src = Source()
            ingest.offer(src, topic(lamp), lamp.telemetry(), 1)
            consumer = asyncio.create_task(ingest.run())
            await asyncio.sleep(0.15)
            assert src.outcomes == [] and flaky.failures == 0  # still retrying
            while not src.outcomes:
                await asyncio.sleep(0.02)
            consumer.cancel()
            assert await store.count_uplinks() == 1
            assert ingest.metrics.store_errors._value.get() == 2

    run(scenario())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["citisense/v1/1/up/telemetry", "citisense/v1/1/up/will",
                                            "citisense/v1/9/up/birth", "x/y", ""]),
                          st.binary(max_size=80)), max_size=8))
def test_payloads_of_any_shape_never_break_the_pipeline(
        tmp_path: Path, items: list[tuple[str, bytes]]) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / f'{secrets.token_hex(4)}.db'}") as store:
            await provision(store, [(1, "lighting")])
            ingest = await pipeline(store)
            src = Source()
            for i, (t, payload) in enumerate(items):
                ingest.offer(src, t, b"\x84\x40\xa0" + payload if i % 2 else payload, i)
            await ingest.flush()
            assert len(src.outcomes) == len(items)
            assert await store.count_uplinks() == 0
            assert await store.count_quarantined() == len(items)

    run(scenario())


@pytest.mark.parametrize("n", [3])
def test_serial_frames_name_their_node_in_the_body(tmp_path: Path, n: int) -> None:
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            lamp = (await provision(store, [(1, "lighting")])).nodes[1]
            ingest = await pipeline(store)
            src = Source()
            for i in range(n):
                ingest.offer(src, None, lamp.telemetry(), i)  # no topic: a serial frame
            await ingest.flush()
            assert await store.count_uplinks() == n

    run(scenario())


def test_a_flush_while_the_consumer_runs_takes_each_message_once(tmp_path: Path) -> None:
    """Chunks of many messages (one MQTT read each); a test or shutdown flushes meanwhile."""
    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            fleet = await provision(store, [(1, "lighting"), (2, "parking"), (3, "air")])
            ingest = await pipeline(store)
            src = Source()
            stream = [(topic(n), n.telemetry()) for _ in range(60) for n in fleet.nodes.values()]
            stream.insert(100, (topic(fleet.nodes[1]), stream[3][1]))  # a redelivery
            frames = [Frame(t, p, i + 1) for i, (t, p) in enumerate(stream)]
            consumer = asyncio.create_task(ingest.run())
            for start in range(0, len(frames), 37):
                ingest.offer_many(src, frames[start : start + 37])
                if start % 74 == 0:
                    await ingest.flush()
            await ingest.flush()
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            assert [o.token for o in src.outcomes] == list(range(1, len(frames) + 1))
            assert all(o.accepted for o in src.outcomes)
            assert await store.count_uplinks() == 180
            assert ingest.metrics.duplicates._value.get() == 1

    run(scenario())


def test_a_new_key_takes_effect_at_the_next_key_refresh(tmp_path: Path) -> None:
    """Telemetry of a known node takes a fast lane holding its key: a refresh closes it."""

    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            lamp = (await provision(store, [(1, "lighting")])).nodes[1]
            ingest = await pipeline(store)
            src = Source()
            for token in range(1, 4):  # the first seeds the window, then the lane opens
                ingest.offer(src, topic(lamp), lamp.telemetry(), token)
            await ingest.flush()
            await store.remove_node(1, "test")
            await store.add_node(Node(1, "lighting", secrets.token_bytes(32), "$7$unused"), "test")
            await ingest.keyring.refresh()
            ingest.offer(src, topic(lamp), lamp.telemetry(), 4)  # signed with the old key
            await ingest.flush()
            assert [o.accepted for o in src.outcomes] == [True, True, True, False]
            assert [q.reason for q in await store.quarantined()] == ["bad-mac"]
            assert await store.count_uplinks() == 3

    run(scenario())


def test_a_late_redelivery_to_another_worker_is_stored_not_refused(store_url: str) -> None:
    """Ingest workers share one store and split one node's stream. A worker that dies with
    a batch uncommitted gets it back after the others stored far newer counters: older than
    its replay window, never stored, signed by the node in its current boot, so stored late.
    """

    async def scenario() -> None:
        async with opened(store_url) as a_store, opened(store_url) as b_store:
            lamp = (await provision(a_store, [(1, "lighting")])).nodes[1]
            stream = [lamp.telemetry() for _ in range(200)]
            a, b = await pipeline(a_store), await pipeline(b_store)
            a_src, b_src = Source(), Source()
            for seq in range(0, 40, 2):  # the share group alternates: evens to a, odds to b
                a.offer(a_src, topic(lamp), stream[seq], seq)
            await a.flush()
            for seq in range(40, 60, 2):
                a.offer(a_src, topic(lamp), stream[seq], seq)  # a dies before committing these
            for seq in range(1, 200, 2):
                b.offer(b_src, topic(lamp), stream[seq], seq)
            await b.flush()
            restarted, src = await pipeline(a_store), Source()  # its window comes from the store
            for seq in [*range(40, 60, 2), *range(60, 200, 2)]:  # redelivered, then new
                restarted.offer(src, topic(lamp), stream[seq], seq)
            await restarted.flush()
            assert all(o.accepted for o in src.outcomes)
            assert await a_store.count_quarantined() == 0
            assert await a_store.count_uplinks() == 200  # each once
            late = restarted.metrics.late._value.get()
            assert late == len(range(40, 136, 2))  # older than 199 - 63 when they came
            again = Source()
            for seq in range(40, 60, 2):  # the broker redelivers once more: duplicates
                restarted.offer(again, topic(lamp), stream[seq], seq)
            await restarted.flush()
            assert all(o.accepted for o in again.outcomes)
            assert restarted.metrics.duplicates._value.get() == 10
            assert restarted.metrics.late._value.get() == late
            assert await a_store.count_uplinks() == 200

    run(scenario())


def test_an_old_message_is_stored_late_only_if_retention_kept_its_like(tmp_path: Path) -> None:
    """Late is plausible while retention would still keep the message raw: a signed message
    from before that (its stored copy may have been summarised and deleted) is a replay."""

    async def scenario() -> None:
        async with opened(f"sqlite:///{tmp_path / 'g.db'}") as store:
            lamp = (await provision(store, [(1, "lighting")])).nodes[1]
            now = time.time()
            ancient = lamp.message(messages.TELEMETRY, SAMPLE["lighting"],
                                   ts=int(now - 31 * 86400))  # before raw_days = 30
            uptime = [lamp.message(messages.TELEMETRY, SAMPLE["lighting"], ts=100 + i,
                                   tq=messages.TQ_UPTIME) for i in range(3)]
            fresh = [lamp.telemetry() for _ in range(100)]
            ingest = await pipeline(store, clock=lambda: now)
            src = Source()
            for token, m in enumerate([uptime[1], *fresh], start=1):
                ingest.offer(src, topic(lamp), m, token)
            await ingest.flush()
            late = Source()
            ingest.offer(late, topic(lamp), ancient, 1)
            ingest.offer(late, topic(lamp), uptime[0], 2)  # made a second before uptime[1]
            ingest.offer(late, topic(lamp), uptime[2], 3)
            await ingest.flush()
            assert [o.accepted for o in late.outcomes] == [False, True, True]
            refused = await store.quarantined()
            assert [(q.reason, q.node_id) for q in refused] == [("replay", 1)]
            assert "older than the replay window" in refused[0].detail
            assert ingest.metrics.late._value.get() == 2
            assert await store.count_uplinks() == 103

    run(scenario())
