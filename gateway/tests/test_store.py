"""The one storage interface, identical on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from gwkit import opened
from hypothesis import given
from hypothesis import strategies as st

from citisense_gateway.store import StoreError, open_store
from citisense_gateway.store.base import (
    CommandAck,
    Conflict,
    HourlyRow,
    IngestBatch,
    Node,
    NotFound,
    QuarantineRow,
    ScheduleRecord,
    TwinUpdate,
    UplinkRow,
)
from citisense_gateway.store.sql import RowInsert


def row(node: int, seq: int, kind: int = 2, at: float = 1767225600.0) -> UplinkRow:
    return UplinkRow(node, 1, seq, kind, int(at), 2, at, at + 1, "[1,0,null,2,3,0]", "mqtt")


def node(node_id: int, role: str = "lighting", zone: str = "z1") -> Node:
    return Node(node_id, role, bytes(32), "$7$h", zone=zone, street="s1", lat=52.0, lon=4.0,
                created_at=time.time())


def run(url: str, body: Any) -> None:
    async def scenario() -> None:
        async with opened(url) as store:
            await body(store)

    asyncio.run(scenario())


def test_registry_and_groups(store_url: str) -> None:
    async def body(store: Any) -> None:
        await store.add_node(node(1, zone="north"), "ann")
        await store.add_node(node(2, role="parking", zone="north"), "ann")
        await store.add_node(node(3, zone="south"), "ann")
        with pytest.raises(Conflict, match="already registered"):
            await store.add_node(node(1), "ann")
        assert [n.node_id for n in await store.nodes(zone="north")] == [1, 2]
        assert [n.node_id for n in await store.nodes(zone="north", role="lighting")] == [1]
        assert (await store.get_node(2)).mac_key == bytes(32)
        await store.remove_node(3, "ann")
        with pytest.raises(NotFound):
            await store.get_node(3)
        actions = [(e.user, e.action, e.target) for e in await store.audit_log()]
        assert actions[0] == ("ann", "node.remove", "3") and len(actions) == 4

    run(store_url, body)


def test_ingest_commit_is_idempotent_and_updates_twins(store_url: str) -> None:
    async def body(store: Any) -> None:
        await store.add_node(node(1), "t")
        first = IngestBatch(uplinks=[row(1, 0), row(1, 1)], twins={1: TwinUpdate(
            1, 100.0, "mqtt", online=True, boot=1, birth_seq=0, firmware="1.0", board="b",
            config_hash="aa", reset_cause=1, schedule_version=3)})
        assert await store.commit_ingest(first) == 2
        again = IngestBatch(uplinks=[row(1, 1), row(1, 2)], twins={1: TwinUpdate(
            1, 90.0, "serial:/dev/ttyS1", health='{"0": 1}')})
        assert await store.commit_ingest(again) == 1  # (1, 1, 1) was stored already
        twin = await store.twin(1)
        assert (twin.last_seen, twin.via, twin.online, twin.firmware, twin.reported_schedule,
                twin.health) == (100.0, "serial:/dev/ttyS1", True, "1.0", 3, '{"0": 1}')
        assert await store.recent_counters(1, 2) == [(1, 2), (1, 1)]
        assert await store.is_stored(1, 1, 2) and not await store.is_stored(1, 1, 3)
        assert [r.seq for r in await store.uplinks(1)] == [0, 1, 2]

    run(store_url, body)


def test_a_batch_that_only_saw_nodes_alive_keeps_what_twins_learned(store_url: str) -> None:
    async def body(store: Any) -> None:
        for n in (1, 2, 3):
            await store.add_node(node(n), "t")
        learned = IngestBatch(twins={
            1: TwinUpdate(1, 100.0, "mqtt", online=True, boot=1, birth_seq=0, firmware="1.0",
                          board="b", config_hash="aa", reset_cause=1, schedule_version=3),
            2: TwinUpdate(2, 100.0, "mqtt", online=False)})
        await store.commit_ingest(learned)
        # Seen alive only (telemetry), in one batch with a node that learned something.
        alive = IngestBatch(twins={
            1: TwinUpdate(1, 90.0, "serial:/dev/ttyS1", online=True),  # older: last_seen stays
            2: TwinUpdate(2, 110.0, "mqtt", online=True),
            3: TwinUpdate(3, 120.0, "mqtt", online=True, bay_state=1)})
        await store.commit_ingest(alive)
        one, two, three = (await store.twin(1)), (await store.twin(2)), (await store.twin(3))
        assert (one.last_seen, one.via, one.online, one.boot, one.firmware, one.config_hash,
                one.reported_schedule) == (100.0, "serial:/dev/ttyS1", True, 1, "1.0", "aa", 3)
        assert (two.last_seen, two.online, two.firmware) == (110.0, True, "")
        assert (three.last_seen, three.online, three.bay_state) == (120.0, True, 1)

    run(store_url, body)


@pytest.mark.parametrize("rows", [1, 1000, 1500, 2500])
def test_large_batches_are_stored_whole_once(store_url: str, rows: int) -> None:
    async def body(store: Any) -> None:
        for n in range(1, 4):
            await store.add_node(node(n), "t")
        batch = [row(1 + i % 3, i) for i in range(rows)]
        twins = {n: TwinUpdate(n, 100.0 + n, "mqtt", online=True) for n in range(1, 4)}
        assert await store.commit_ingest(IngestBatch(uplinks=batch, twins=twins)) == rows
        # Half of them again with as many new: only the new ones count.
        again = batch[rows // 2:] + [row(1 + i % 3, i) for i in range(rows, rows + rows // 2)]
        assert await store.commit_ingest(IngestBatch(uplinks=again)) == rows // 2
        assert await store.count_uplinks() == rows + rows // 2
        assert [(r.seq, r.data) for r in await store.uplinks(1, limit=10)] == [
            (seq, "[1,0,null,2,3,0]") for seq in range(0, min(rows + rows // 2, 30), 3)][:10]
        assert (await store.twin(3)).last_seen == 103.0

    run(store_url, body)


@given(st.integers(0, 3000))
def test_row_inserts_cover_every_row_in_order(rows: int) -> None:
    insert = RowInsert("INSERT INTO t (a, b)", 2, "ON CONFLICT DO NOTHING")
    blocks = insert.blocks([(i, -i) for i in range(rows)])
    assert [p for _, params in blocks for p in params] == [
        v for i in range(rows) for v in (i, -i)]
    for statement, params in blocks:
        assert statement.count("?") == len(params) <= 32766
        assert statement.endswith("ON CONFLICT DO NOTHING")
    assert len(blocks) <= len(insert.sizes)


def test_quarantine_is_bounded(store_url: str) -> None:
    async def body(store: Any) -> None:
        store.quarantine_limit = 5
        for i in range(3):
            await store.commit_ingest(IngestBatch(quarantine=[
                QuarantineRow(float(i * 4 + j), "t", "malformed", "x", None, b"\xff")
                for j in range(4)]))
        kept = await store.quarantined()
        assert await store.count_quarantined() == 5
        assert [q.received_at for q in kept] == [11.0, 10.0, 9.0, 8.0, 7.0]  # the newest

    run(store_url, body)


def test_commands_counters_and_acks(store_url: str) -> None:
    async def body(store: Any) -> None:
        await store.add_node(node(1), "t")
        assert [await store.next_counter(1) for _ in range(3)] == [1, 2, 3]
        with pytest.raises(NotFound):
            await store.next_counter(9)
        c = await store.add_command(1, 1, "[50,60]", created_by="bo", expires_at=500.0,
                                    note="n", now=100.0)
        assert (c.state, c.attempts, c.next_attempt) == ("pending", 0, 100.0)
        assert await store.find_open_command(1, 1, "[50,60]") == c
        assert [d.command_id for d in await store.due_commands(100.0)] == [c.command_id]
        assert await store.claim_send(c.command_id, 0, 101.0, 111.0)
        assert not await store.claim_send(c.command_id, 0, 101.0, 111.0)  # claimed already
        assert await store.due_commands(105.0) == []
        await store.commit_ingest(IngestBatch(acks=[CommandAck(1, c.command_id, 0, 102.0,
                                                               "acked", 102.0)]))
        done = await store.get_command(c.command_id)
        assert (done.state, done.result, done.done_at, done.sent_at) == ("acked", 0, 102.0, 101.0)
        assert await store.find_open_command(1, 1, "[50,60]") is None
        await store.finish_command(c.command_id, "expired", 600.0)  # no effect once done
        assert (await store.get_command(c.command_id)).state == "acked"

    run(store_url, body)


def test_schedule_versions_are_unique_across_names(store_url: str) -> None:
    async def body(store: Any) -> None:
        assert await store.next_schedule_version() == 1
        await store.add_schedule(ScheduleRecord("a", 1, '{"wire": {}}', 1.0, "u"))
        await store.add_schedule(ScheduleRecord("a", 2, '{"wire": {}}', 2.0, "u"))
        with pytest.raises(Conflict):
            await store.add_schedule(ScheduleRecord("b", 2, '{"wire": {}}', 3.0, "u"))
        assert await store.next_schedule_version() == 3
        assert (await store.get_schedule("a")).version == 2
        assert (await store.get_schedule("a", 1)).created_at == 1.0
        with pytest.raises(NotFound, match="'b'"):
            await store.get_schedule("b")

    run(store_url, body)


def test_downsampling_replaces_raw_rows(store_url: str) -> None:
    async def body(store: Any) -> None:
        await store.commit_ingest(IngestBatch(uplinks=[row(1, i, at=3600.0 + i) for i in range(5)]
                                              + [row(1, 9, kind=3, at=3600.0)]))
        old = await store.telemetry_before(7200.0, 100)
        assert len(old) == 5
        summary = json.dumps({"level": {"n": 5}})
        assert await store.downsample([HourlyRow(1, 3600, 5, summary)],
                                      [(r.node_id, r.boot, r.seq) for r in old]) == 5
        assert [r.kind for r in await store.uplinks(1)] == [3]
        assert await store.hourly(1, 0) == [HourlyRow(1, 3600, 5, summary)]
        assert await store.purge([3], 1e12) == 1
        assert await store.purge_hourly(1e12) == 1

    run(store_url, body)


def test_bad_store_urls_say_what_is_expected() -> None:
    for url in ("mysql://x", "sqlite://", "sqlite:///"):
        with pytest.raises(StoreError, match="sqlite:///"):
            open_store(url)


def test_retention_pass_and_parking_history(store_url: str) -> None:
    from citisense_gateway import retention
    from citisense_gateway.parking import Parking

    async def body(store: Any) -> None:
        day = 86400.0
        now = 100 * day
        old, recent = now - 40 * day, now - day
        await store.add_node(node(5, role="parking", zone="market"), "t")
        await store.commit_ingest(IngestBatch(uplinks=[
            row(1, 0, at=old), row(1, 1, at=old + 60), row(1, 2, at=recent),
            row(1, 3, kind=4, at=old), row(1, 4, kind=3, at=old)]))
        counts = await retention.run_once(store, retention.RetentionPolicy(
            raw_days=30, status_days=30, events_days=365), now)
        assert counts["telemetry_summarised"] == 2 and counts["status_purged"] == 1
        assert [(r.kind, r.seq) for r in await store.uplinks(1)] == [(2, 2), (3, 4)]
        [hourly] = await store.hourly(1, 0)
        assert hourly.samples == 2 and json.loads(hourly.data)["level"]["n"] == 2

        clock = [now]
        parking = Parking(store, lambda: clock[0])
        occupied = IngestBatch(twins={5: TwinUpdate(5, now, "mqtt", online=True, bay_state=1)})
        await store.commit_ingest(occupied)
        await parking.observe(occupied)
        clock[0] += 60
        await parking.observe(occupied)  # nothing changed: no new history point
        freed = IngestBatch(twins={5: TwinUpdate(5, now + 120, "mqtt", bay_state=0)})
        await store.commit_ingest(freed)
        clock[0] += 60
        await parking.observe(freed)
        history = await store.occupancy_history("market", 0)
        assert [(free, occupied_) for _, free, occupied_, _ in history] == [(0, 1), (1, 0)]

    run(store_url, body)


def test_a_version_1_database_is_upgraded_with_every_row(store_url: str) -> None:
    """Version 1 indexed uplinks by (node, kind, at) and (kind, received_at); version 2 finds
    a node's rows by time through uplink_hours, which the upgrade fills from the rows."""
    hour = 3600.0
    rows = [row(1, seq, kind=2 + seq % 2, at=10 * hour + 600 * seq) for seq in range(20)]
    rows += [row(2, seq, at=30 * hour - 60 * seq) for seq in range(5)]  # clock going back

    async def scenario() -> None:
        # made a version 1 database, with rows
        async with opened(store_url) as store, store.db.transaction() as tx:
            for statement in (
                "DROP TABLE uplink_hours", "DROP INDEX uplinks_kind_at",
                "CREATE INDEX uplinks_node_kind ON uplinks (node_id, kind, at)",
                "CREATE INDEX uplinks_kind_time ON uplinks (kind, received_at)",
                "UPDATE schema_version SET version = 1",
            ):
                await tx.execute(statement)
            await tx.executemany(f"INSERT INTO uplinks VALUES ({', '.join(['?'] * 10)})", rows)
        async with opened(store_url) as store:
            assert await store.count_uplinks() == 25
            assert (await store._all("SELECT version FROM schema_version")) == [(2,)]
            assert await store.uplinks(1, limit=100) == [r for r in rows if r.node_id == 1]
            since = 10 * hour + 600 * 13
            assert [r.seq for r in await store.uplinks(1, since=since)] == list(range(13, 20))
            assert [r.seq for r in await store.uplinks(1, kind=3, since=since)] == [13, 15, 17, 19]
            assert [r.seq for r in await store.uplinks(2, since=30 * hour - 180)] == [0, 1, 2, 3]
            marks = await store._all("SELECT hour, boot, seq FROM uplink_hours WHERE node_id = 1 "
                                     "ORDER BY hour")
            assert [(int(h) // 3600, s) for h, _, s in marks] == [
                (10 + seq // 6, seq) for seq in range(0, 20, 6)]
            await store.commit_ingest(IngestBatch(uplinks=[row(1, 20, at=since)]))
            assert [r.seq for r in await store.uplinks(1, since=since)][-1] == 20
        async with opened(store_url) as store:  # and opened again, as it is now
            assert await store.count_uplinks() == 26

    asyncio.run(scenario())


def test_a_node_history_holds_every_row_from_since_whatever_its_clock(store_url: str) -> None:
    hour = 3600.0
    # Counters grow; times mostly too, with a clock that jumped back two hours and a
    # message stored late, its hour's lowest counter by far.
    times = [50 * hour + 900 * i for i in range(12)] + [49 * hour + 60 * i for i in range(6)]
    rows = [row(7, seq, at=at) for seq, at in enumerate(times)]

    async def body(store: Any) -> None:
        await store.commit_ingest(IngestBatch(uplinks=rows[:10] + rows[12:]))
        await store.commit_ingest(IngestBatch(uplinks=rows[10:12]))
        late = row(7, 1, at=52 * hour + 1)  # boot 1 seq 1 again: a duplicate, not stored
        await store.commit_ingest(IngestBatch(uplinks=[late]))
        for since in (0.0, 49 * hour + 120, 50 * hour, 51 * hour + 1, 52 * hour, 60 * hour):
            expected = [r.seq for r in rows if r.at >= since]
            assert [r.seq for r in await store.uplinks(7, since=since)] == expected, since

    run(store_url, body)
