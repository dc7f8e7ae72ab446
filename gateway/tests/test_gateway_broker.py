"""The gateway with a real broker (Mosquitto, MQTT 5, shared subscription; or the embedded
amqtt broker, MQTT 3.1.1) and a real store (SQLite; PostgreSQL), driven by simulated nodes."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from gwkit import (
    Broker,
    Fleet,
    eventually,
    gateway_overrides,
    opened,
    provision,
    start_mosquitto,
)
from prometheus_client.parser import text_string_to_metric_families

from citisense_gateway import config, schedules
from citisense_gateway.ingest_workers import IngestWorkers
from citisense_gateway.mqtt_client import MqttConnection, MqttSettings
from citisense_gateway.service import Gateway
from citisense_gateway.store.base import Store
from citisense_protocols import messages, topics

MOSQUITTO = pytest.param("mosquitto", marks=pytest.mark.broker)  # the embedded one needs none
NIGHT = {"timezone": "Europe/Amsterdam",
         "steps": [{"at": "dusk", "level": 100}, {"at": "23:00", "level": 50},
                   {"at": "dawn", "level": 0}]}


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples in the gateway's /metrics that carry `labels`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def start_gateway(tmp_path: Path, store_url: str, broker: Broker | None) -> Gateway:
    gateway = Gateway(config.load(environ={},
                                  overrides=gateway_overrides(tmp_path, store_url, broker)))
    await gateway.start()
    assert gateway.mqtt.connected.is_set()
    return gateway


def address(gateway: Gateway, broker: Broker | None) -> tuple[str, int, int]:
    if broker is not None:
        return broker.host, broker.port, broker.version
    return "127.0.0.1", gateway.config.embedded_broker.port, 4


async def stored(store: Store, node: int, kind: int | None = None) -> int:
    return len(await store.uplinks(node, kind=kind))


@pytest.mark.parametrize("broker_kind", [MOSQUITTO, "embedded"])
def test_ingest_commands_and_schedules(tmp_path: Path, store_url: str, broker_kind: str) -> None:
    async def scenario() -> None:
        async with opened(store_url) as store:
            fleet = await provision(store, [(101, "lighting"), (102, "parking")])
            broker = start_mosquitto(tmp_path / "mq", fleet) if broker_kind == "mosquitto" else None
            gateway = await start_gateway(tmp_path, store_url, broker)
            host, port, version = address(gateway, broker)
            lamp = fleet.nodes[101]
            try:
                await lamp.connect(host, port, fleet.passwords[101], version)
                await ingest_and_deduplicate(gateway, store, fleet)
                await command_round_trip(gateway, store, fleet)
                await schedule_push(gateway, store, fleet)
            finally:
                await lamp.close()
                await gateway.stop()
                if broker and broker.mosquitto:
                    broker.mosquitto.stop()

    asyncio.run(scenario())


async def ingest_and_deduplicate(gateway: Gateway, store: Store, fleet: Fleet) -> None:
    lamp = fleet.nodes[101]
    assert await lamp.send_birth() == 0
    reading = lamp.telemetry([55, 0, 300, 1000, 4, 0])
    for _ in range(3):  # a node retrying: at-least-once on the wire
        await lamp.publish(messages.TELEMETRY, reading)
    await eventually(lambda: _count_is(store, 101, 2))
    await gateway.ingest.flush()
    rows = await store.uplinks(101, kind=messages.TELEMETRY)
    assert [json.loads(r.data) for r in rows] == [[55, 0, 300, 1000, 4, 0]]
    twin = await store.twin(101)
    assert twin.online and twin.firmware == "1.0.0" and twin.via == "mqtt"
    assert gateway.metrics_port is not None
    assert metric(gateway.metrics_port, "citisense_ingest_duplicates_total") == 2
    assert metric(gateway.metrics_port, "citisense_ingest_stored_total") == 2
    assert await store.count_quarantined() == 0


async def _count_is(store: Store, node: int, n: int) -> bool:
    return await stored(store, node) == n


async def command_round_trip(gateway: Gateway, store: Store, fleet: Fleet) -> None:
    lamp = fleet.nodes[101]
    first = await gateway.commands.issue([101], messages.OP_DIM, [40, 600], user="alice")
    again = await gateway.commands.issue([101], messages.OP_DIM, [40, 600], user="alice")
    assert [c.command_id for c in again] == [c.command_id for c in first]  # idempotent
    command_id = first[0].command_id

    async def acked() -> bool:
        return (await store.get_command(command_id)).state == "acked"

    await eventually(acked)
    assert lamp.dim == (40, 600)
    assert [c[messages.KEY_ID] for c in lamp.commands] == [command_id]  # executed once
    done = await store.get_command(command_id)
    assert done.result == messages.OK and done.attempts >= 1 and done.created_by == "alice"

    async def timed() -> bool:  # observed right after the commit that stored the ack
        return metric(gateway.metrics_port or 0, "citisense_command_latency_seconds_count") >= 1

    await eventually(timed)
    assert any(e.action == "command.issue" and e.user == "alice"
               for e in await store.audit_log())


async def schedule_push(gateway: Gateway, store: Store, fleet: Fleet) -> None:
    lamp = fleet.nodes[101]
    rec = schedules.record("night", NIGHT, await store.next_schedule_version(), "bob")
    await store.add_schedule(rec)
    await gateway.reconciler.assign_schedule("night", [101], "bob")

    async def runs(version: int) -> bool:
        twin = await store.twin(101)
        return lamp.schedule_version == version and twin.reported_schedule == version

    await eventually(lambda: runs(rec.version))
    rollout = await gateway.reconciler.rollout("night")
    assert [(e.node_id, e.desired, e.state) for e in rollout] == [(101, rec.version, "running")]

    # The lamp is replaced by a blank one: its birth reports no schedule; the gateway
    # sees the drift and pushes the desired version again.
    lamp.schedule_version = 0
    lamp.boot += 1
    lamp.seq = 0
    lamp.done.clear()
    await lamp.send_birth()
    await eventually(lambda: runs(rec.version))
    assert (await store.twin(101)).boot == lamp.boot

    # A new version of the same schedule rolls out the same way.
    v2 = schedules.record("night", {**NIGHT, "failsafe": 80},
                          await store.next_schedule_version(), "bob")
    await store.add_schedule(v2)
    await gateway.reconciler.assign_schedule("night", [101], "bob")
    await eventually(lambda: runs(v2.version))
    assert v2.version > rec.version


@pytest.mark.parametrize("broker_kind", [MOSQUITTO, "embedded"])
def test_acl_confines_a_node_to_its_subtree(tmp_path: Path, broker_kind: str) -> None:
    store_url = f"sqlite:///{tmp_path / 'gw.db'}"

    async def scenario() -> None:
        async with opened(store_url) as store:
            fleet = await provision(store, [(201, "lighting"), (202, "lighting")])
            broker = start_mosquitto(tmp_path / "mq", fleet) if broker_kind == "mosquitto" else None
            gateway = await start_gateway(tmp_path, store_url, broker)
            host, port, version = address(gateway, broker)
            rogue = fleet.nodes[201]
            victim = fleet.nodes[202]
            try:
                await rogue.connect(host, port, fleet.passwords[201], version)
                await victim.connect(host, port, fleet.passwords[202], version)
                assert rogue.conn is not None
                # Publishing into another node's subtree, even a validly signed message:
                forged = victim.telemetry()
                reason = await rogue.conn.publish(topics.topic(202, messages.TELEMETRY), forged)
                if version == 5:
                    assert reason == 0x87  # MQTT 5 tells the publisher: not authorised
                # Listening to another node's commands and to the fleet's uplink: the broker
                # may grant the filter (Mosquitto checks each delivery) but delivers nothing.
                await rogue.conn.subscribe([(topics.node_filter(202), 1),
                                            (f"{topics.PREFIX}+/{topics.UP}/#", 1)])
                assert await rogue.send_birth() == 0
                assert await victim.send_birth() == 0
                issued = await gateway.commands.issue([202], messages.OP_IDENTIFY, 5,
                                                      user="carol")

                async def victim_acked() -> bool:
                    command = await store.get_command(issued[0].command_id)
                    return command.state == "acked"

                await eventually(victim_acked)
                await gateway.ingest.flush()
                assert [c[messages.KEY_OP] for c in victim.commands] == [messages.OP_IDENTIFY]
                assert rogue.commands == [] and rogue.refused == 0  # received nothing at all
                assert await stored(store, 202, messages.TELEMETRY) == 0  # forgery never arrived
                assert await stored(store, 201) == 1 and await stored(store, 202) == 2
                assert await store.count_quarantined() == 0
                # A wrong password is refused outright.
                with pytest.raises(Exception, match="refused"):
                    await MqttConnection.connect(MqttSettings(
                        host, port, "intruder", username="202", password="guess",
                        version=version), lambda c, p: None)
            finally:
                await rogue.close()
                await victim.close()
                await gateway.stop()
                if broker and broker.mosquitto:
                    broker.mosquitto.stop()

    asyncio.run(scenario())


@pytest.mark.broker
@pytest.mark.postgres
def test_two_gateways_split_one_stream(tmp_path: Path, pg_url: str) -> None:
    """Scale-out: two instances on one shared subscription and one PostgreSQL database."""

    async def scenario() -> None:
        async with opened(pg_url) as store:
            fleet = await provision(store, [(600 + i, "air") for i in range(10)])
            broker = start_mosquitto(tmp_path / "mq", fleet)
            assert broker.mosquitto is not None
            gateways: list[Gateway] = []
            conns = []
            try:  # everything started is stopped, even when a gateway fails to start
                for _ in range(2):
                    gateways.append(await start_gateway(tmp_path, pg_url, broker))
                for node in fleet.nodes.values():
                    await node.connect(broker.host, broker.port, fleet.passwords[node.node_id])
                    conns.append(node)
                for _ in range(100):
                    for node in fleet.nodes.values():
                        await node.publish(messages.TELEMETRY, node.telemetry())

                async def all_stored() -> bool:
                    return await store.count_uplinks() == 1000

                await eventually(all_stored)
                for g in gateways:
                    await g.ingest.flush()
                shares = [metric(g.metrics_port or 0, "citisense_ingest_stored_total")
                          for g in gateways]
                assert sum(shares) == 1000 and min(shares) > 0  # both took part
                assert sum(metric(g.metrics_port or 0, "citisense_ingest_duplicates_total")
                           for g in gateways) == 0
            finally:
                for node in conns:
                    await node.close()
                for g in gateways:
                    await g.stop()
                broker.mosquitto.stop()

    asyncio.run(scenario())


@pytest.mark.broker
def test_ingest_workers_share_the_stream_and_report_to_the_gateway(tmp_path: Path,
                                                                   store_url: str) -> None:
    """ingest.workers = 2: two processes store the stream once; the gateway process gets
    their counts (metrics) and what its observers need (routes, command acks, parking)."""

    async def scenario() -> None:
        async with opened(store_url) as store:
            fleet = await provision(store, [(101, "lighting"), (102, "parking")]
                                    + [(300 + i, "air") for i in range(8)])
            broker = start_mosquitto(tmp_path / "mq", fleet)
            assert broker.mosquitto is not None
            gateway = Gateway(config.load(environ={}, overrides=gateway_overrides(
                tmp_path, store_url, broker, **{"ingest.workers": 2})))
            await gateway.start()
            nodes = list(fleet.nodes.values())
            try:
                assert gateway.mqtt.connected.is_set()
                assert gateway.metrics_port is not None
                assert metric(gateway.metrics_port, "citisense_mqtt_connected") == 1
                for node in nodes:
                    await node.connect(broker.host, broker.port, fleet.passwords[node.node_id])
                    assert await node.send_birth() == 0
                sent = len(nodes)
                for _ in range(30):
                    for node in nodes:
                        await node.publish(messages.TELEMETRY, node.telemetry())
                        sent += 1
                retried = fleet.nodes[101].telemetry()
                for _ in range(3):  # a retrying node: the workers store it once
                    await fleet.nodes[101].publish(messages.TELEMETRY, retried)
                sent += 3

                async def settled() -> bool:
                    return gateway.committed == sent

                await eventually(settled)
                distinct = sent - 2
                assert await store.count_uplinks() == distinct
                assert await store.count_quarantined() == 0
                port = gateway.metrics_port
                assert metric(port, "citisense_ingest_stored_total") == distinct
                assert metric(port, "citisense_ingest_duplicates_total") == 2
                assert metric(port, "citisense_ingest_received_total") == sent
                assert (await store.twin(102)).bay_state == 1  # SAMPLE parking: occupied
                await command_round_trip(gateway, store, fleet)  # the ack came via a worker

                # A worker that dies is started again; the broker redelivers what it held.
                assert isinstance(gateway.mqtt, IngestWorkers)
                gateway.mqtt.processes[1].kill()
                expected = await store.count_uplinks() + len(nodes)
                for node in nodes:
                    await node.publish(messages.TELEMETRY, node.telemetry())

                async def all_stored() -> bool:
                    return await store.count_uplinks() == expected

                await eventually(all_stored, timeout=30)
                await eventually(lambda: asyncio.sleep(0, gateway.mqtt.connected.is_set()))
            finally:
                for node in nodes:
                    await node.close()
                await gateway.stop()
                broker.mosquitto.stop()
        assert gateway.mqtt.connected.is_set() is False

    asyncio.run(scenario())


@pytest.mark.broker
def test_settings_are_confirmed_and_pushed_again_after_drift(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'gw.db'}"

    async def scenario() -> None:
        async with opened(store_url) as store:
            fleet = await provision(store, [(701, "air")])
            broker = start_mosquitto(tmp_path / "mq", fleet)
            assert broker.mosquitto is not None
            gateway = await start_gateway(tmp_path, store_url, broker)
            sensor = fleet.nodes[701]
            try:
                await sensor.connect(broker.host, broker.port, fleet.passwords[701])
                settings = {"telemetry_s": 60}
                await gateway.reconciler.assign_config(settings, [701], "fay")

                async def applied() -> bool:
                    return sensor.config_hash != b"\x01" * 8

                await eventually(applied)
                wanted = sensor.config_hash.hex()
                await sensor.send_birth()  # reports the new configuration hash

                async def confirmed() -> bool:
                    return (await store.twin(701)).confirmed_config == wanted

                await eventually(confirmed)
                # The sensor is reset to factory settings: its birth shows another hash.
                sensor.config_hash = b"\x01" * 8
                sensor.done.clear()
                await sensor.send_birth()

                async def pushed_again() -> bool:
                    latest = (await store.commands(701))[0]
                    return latest.note == "config drift" and latest.state == "acked"

                await eventually(pushed_again)
                assert sensor.config_hash.hex() == wanted

                # The ack is stored with the batch, the reconciler sees it right after the
                # commit: from then on nothing is confirmed until a birth shows the hash.
                async def awaiting_birth() -> bool:
                    return (await store.twin(701)).confirmed_config == ""

                await eventually(awaiting_birth)
                await asyncio.sleep(0.5)  # and it stays so without a birth
                assert (await store.twin(701)).confirmed_config == ""
                await sensor.send_birth()
                await eventually(confirmed)
                ops = [c[messages.KEY_OP] for c in sensor.commands]
                assert ops == [messages.OP_SET_CONFIG, messages.OP_SET_CONFIG]
            finally:
                await sensor.close()
                await gateway.stop()
                broker.mosquitto.stop()

    asyncio.run(scenario())

