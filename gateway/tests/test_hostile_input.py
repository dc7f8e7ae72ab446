"""Hostile uplinks on every uplink topic: the gateway keeps running, stores none of them,
quarantines and counts each in /metrics by reason."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import pytest
from gwkit import eventually, gateway_overrides, opened, provision, start_mosquitto
from test_gateway_broker import metric

from citisense_gateway import acl, config
from citisense_gateway.mqtt_client import MqttConnection, MqttSettings
from citisense_gateway.service import Gateway
from citisense_gateway.simnode import SAMPLE, SimNode
from citisense_protocols import messages, topics

pytestmark = pytest.mark.broker

LEAVES = list(topics.UPLINK_LEAVES)  # birth, telemetry, event, health, ack, will


def test_hostile_uplinks_are_counted_and_never_stored(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'gw.db'}"

    async def scenario() -> None:
        async with opened(store_url) as store:
            fleet = await provision(store, [(301, "lighting")])
            # A stolen credential with write access to every uplink topic: the worst case,
            # where the gateway's own checks are all that is left.
            attacker_password = acl.new_password()
            attacker = acl.Account("attacker", acl.hash_password(attacker_password), read=(),
                                   write=(f"{topics.PREFIX}+/{topics.UP}/#",))
            broker = start_mosquitto(tmp_path / "mq", fleet, [attacker])
            assert broker.mosquitto is not None
            gateway = Gateway(config.load(environ={}, overrides=gateway_overrides(
                tmp_path, store_url, broker, **{"store.quarantine_limit": 100})))
            await gateway.start()
            port = gateway.metrics_port or 0
            conn = await MqttConnection.connect(MqttSettings(
                "127.0.0.1", broker.port, "attacker", username="attacker",
                password=attacker_password, clean_start=True), lambda c, p: None)
            try:
                node = fleet.nodes[301]
                # Legitimate traffic first: a birth and 70 readings of boot 1.
                # seq 0..4, held back; made before raw telemetry's retention (30 days)
                made = int(time.time()) - 60 * 86400
                early = [node.message(messages.TELEMETRY, SAMPLE["lighting"], ts=made)
                         for _ in range(5)]
                node.seq = 5
                legit = [(topics.topic(301, messages.BIRTH), node.birth())]
                legit += [(topics.topic(301, messages.TELEMETRY), node.telemetry())
                          for _ in range(70)]
                await conn.publish_many(legit)

                async def legit_stored() -> bool:
                    return len(await store.uplinks(301)) == 71

                await eventually(legit_stored)

                hostile, expected = hostile_payloads(node, legit, early)
                reasons = await conn.publish_many(hostile)
                assert all(r < 0x80 for r in reasons)  # the broker let them all through

                async def all_seen() -> bool:
                    await gateway.ingest.flush()
                    total = metric(port, "citisense_ingest_rejected_total")
                    return total + metric(port, "citisense_ingest_duplicates_total") >= len(
                        hostile)

                await eventually(all_seen)
                for reason, count in expected.items():
                    if reason == "duplicate":
                        assert metric(port, "citisense_ingest_duplicates_total") == count
                    else:
                        value = metric(port, "citisense_ingest_rejected_total", reason=reason)
                        assert value == count, reason
                assert len(await store.uplinks(301)) == 71  # nothing hostile stored
                assert await store.count_uplinks() == 71
                # Quarantine keeps the latest refusals only: hostile volume cannot fill a disk.
                assert await store.count_quarantined() == 100
                # Still running, still connected, still storing.
                assert gateway.mqtt.connected.is_set()
                await conn.publish(topics.topic(301, messages.TELEMETRY), node.telemetry())

                async def one_more() -> bool:
                    return len(await store.uplinks(301)) == 72

                await eventually(one_more)
            finally:
                await conn.disconnect()
                await gateway.stop()
                broker.mosquitto.stop()

    asyncio.run(scenario())


def hostile_payloads(node: SimNode, legit: list[tuple[str, bytes]], early: list[bytes]
                     ) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    """(topic, payload) pairs and how many of each rejection reason they must produce."""
    stranger = SimNode(999, secrets.token_bytes(32))  # not registered
    impostor = SimNode(301, secrets.token_bytes(32))  # claims 301 with the wrong key
    impostor.seq = 1000
    valid = node.telemetry()  # boot 1, a fresh counter, never published
    tampered = valid[:-1] + bytes([valid[-1] ^ 1])
    per_leaf = {
        "malformed": [b"", b"\xff\x00garbage", os.urandom(40), b"\x81" * 400 + b"\x00",
                      valid[:-3], b"\x84\x40\xa0\x5b" + b"\xff" * 8,
                      b"\x84\x40\xa1\x01\x04" + valid[3:]],
        "bad-mac": [tampered, impostor.telemetry()],
        "oversize": [os.urandom(509), os.urandom(4096), os.urandom(60_000)],
    }
    hostile: list[tuple[str, bytes]] = []
    expected: dict[str, int] = {}
    for leaf in LEAVES:
        topic = f"{topics.PREFIX}301/up/{leaf}"
        for reason, payloads in per_leaf.items():
            hostile += [(topic, p) for p in payloads]
            expected[reason] = expected.get(reason, 0) + len(payloads)
        hostile.append((f"{topics.PREFIX}999/up/{leaf}", stranger.telemetry()))
        expected["unknown-node"] = expected.get("unknown-node", 0) + 1
    # A flood, to show the quarantine stays bounded.
    hostile += [(topics.topic(301, messages.TELEMETRY), os.urandom(30)) for _ in range(120)]
    expected["malformed"] += 120
    # Topics that are not uplink topics at all.
    for topic in (f"{topics.PREFIX}abc/up/telemetry", f"{topics.PREFIX}0/up/telemetry",
                  f"{topics.PREFIX}301/up/firmware", f"{topics.PREFIX}301/up/telemetry/x"):
        hostile.append((topic, valid))
    expected["topic"] = 4
    # A valid message on the wrong kind's topic.
    hostile.append((topics.topic(301, messages.HEALTH), node.telemetry()))
    expected["topic"] += 1
    # Replays: stored messages again (duplicates, acknowledged, not stored twice), a signed
    # message older than the replay window, never stored and made before retention's horizon
    # (had it been stored, it might have been summarised and deleted), and a stray will.
    hostile += legit[:10]
    expected["duplicate"] = 10
    hostile.append((topics.topic(301, messages.TELEMETRY), early[0]))
    hostile.append((topics.topic(301, messages.WILL), node.message(messages.WILL, None)))
    expected["replay"] = 2
    # Valid CBOR and MAC but outside the catalogue: a command reflected to the uplink and
    # telemetry of another role.
    reflected = messages.encode_signed(node.key, messages.command(301, 1, 0, 0, 8, None))
    hostile.append((topics.topic(301, messages.TELEMETRY), reflected))
    hostile.append((topics.topic(301, messages.TELEMETRY),
                    node.telemetry([0, 0, None, 100, 0])))  # parking data from a lamp
    expected["invalid"] = 2
    return hostile, expected
