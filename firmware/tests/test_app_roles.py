"""Each role's app under CPython against a real Mosquitto: what it sends, what it obeys.

The nodes are the firmware app itself on the fleet simulator's board (street time 30 to
40 times faster than real time); a gateway stand-in subscribes with the gateway account,
checks every uplink (MAC, catalogue, topic, CDDL) and sends signed commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pycddl
import pytest

from citisense_boards.street import Street, StreetClock
from citisense_protocols import mac, messages, topics
from citisense_tools import node_config
from citisense_tools.fleet import AIR_SETTINGS, Fleet, NodeSpec, local_broker

pytestmark = pytest.mark.broker

CDDL = (Path(__file__).parents[2] / "protocols" / "messages.cddl").read_text()
# As in protocols/tests: pycddl 0.6 mis-validates `.cbor` inside an array, so the COSE
# structure and the body are checked separately.
BODY_SCHEMA = pycddl.Schema("citisense-body = body\n" + CDDL)
COSE_SCHEMA = pycddl.Schema("citisense-message = message\n"
                            + CDDL.replace("payload: bstr .cbor body", "payload: bstr"))
GATEWAY_USER = "gateway"
GATEWAY_PASSWORD = secrets.token_urlsafe(16)
TIMEOUT = 20.0
# 2026-01-15 19:00 UTC in Ghent: dark, after dusk.
EVENING = datetime(2026, 1, 15, 19, 0, tzinfo=UTC).timestamp()
LAT, LON = 51.05, 3.72


class Gateway:
    """Stands in for the gateway: collects and checks uplinks, sends signed commands."""

    def __init__(self, client: aiomqtt.Client, specs: list[NodeSpec], fleet: Fleet) -> None:
        self.client = client
        self.keys = {spec.node_id: spec.key for spec in specs}
        self.fleet = fleet
        self.uplinks: list[dict[int, Any]] = []
        self.counter = 0
        self.sent: dict[int, bytes] = {}  # command id -> the message

    async def collect(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            payload = message.payload
            node, _ = topics.parse(str(message.topic))
            COSE_SCHEMA.validate_cbor(payload)
            BODY_SCHEMA.validate_cbor(mac.unwrap(payload)[0])
            body = messages.decode_signed(self.keys[node], payload)
            topics.check(str(message.topic), body)
            self.uplinks.append(body)

    def of(self, node: int, kind: int) -> list[Any]:
        """The data of every uplink of `kind` from `node`, in arrival order."""
        return [body[messages.KEY_DATA] for body in self.uplinks
                if body[messages.KEY_NODE] == node and body[messages.KEY_KIND] == kind]

    async def until(self, condition: Callable[[], object], timeout: float = TIMEOUT) -> None:
        async def poll() -> None:
            while not condition():
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), timeout)

    async def send(self, node: int, op: int, args: object, *, cid: int | None = None,
                   expiry: float | None = None, raw: bytes | None = None) -> int:
        """Publish a signed command; returns its id."""
        if raw is None:
            self.counter += 1
            cid = self.counter + 1000 if cid is None else cid
            exp = int(self.fleet.street.now() + 3600 if expiry is None else expiry)
            body = messages.command(node, cid, exp, self.counter, op, args)
            raw = messages.encode_signed(self.keys[node], body)
            self.sent[cid] = raw
        await self.client.publish(topics.topic(node, messages.COMMAND), raw, qos=1)
        assert cid is not None
        return cid

    async def ack(self, node: int, cid: int) -> int:
        """The result the node acknowledged command `cid` with."""
        def answered() -> list[int]:
            return [r for c, r in self.of(node, messages.ACK) if c == cid]

        await self.until(answered)
        return answered()[0]

    async def command(self, node: int, op: int, args: object, **kwargs: Any) -> int:
        return await self.ack(node, await self.send(node, op, args, **kwargs))


def spec(node_id: int, role: str, **settings: int) -> NodeSpec:
    base: dict[str, int] = {"tick_ms": 500, "fade_ms": 1000} if role == "lighting" else {}
    if role == "air":
        base.update(AIR_SETTINGS)
    base.update(settings)
    return NodeSpec(node_id, role, secrets.token_bytes(32), secrets.token_urlsafe(16), LAT, LON,
                    base, {"telemetry": 10, "health": 60})


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, specs: list[NodeSpec], speed: float,
              start: float = EVENING) -> AsyncIterator[Gateway]:
    street = Street(latitude=LAT, longitude=LON, clock=StreetClock(start=start, speed=speed))
    with local_broker(tmp_path / "broker", specs, GATEWAY_USER, GATEWAY_PASSWORD) as broker:
        async with aiomqtt.Client("127.0.0.1", broker.port, username=GATEWAY_USER,
                                  password=GATEWAY_PASSWORD, identifier="gateway") as client:
            await client.subscribe(topics.gateway_filter().split("/", 2)[2], qos=1)
            fleet = Fleet(specs, f"mqtt://127.0.0.1:{broker.port}", tmp_path / "nodes",
                          street=street, traffic=False)
            gateway = Gateway(client, specs, fleet)
            collector = asyncio.create_task(gateway.collect())
            try:
                async with fleet:
                    yield gateway
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector  # raises what failed a check of an uplink


async def test_lighting_node_reports_and_obeys(tmp_path: Path) -> None:
    node = spec(101, "lighting")
    async with rig(tmp_path, [node], speed=30) as gw:
        fleet = gw.fleet
        hal = fleet.hal(101)
        await gw.until(lambda: gw.of(101, messages.BIRTH) and gw.of(101, messages.TELEMETRY))
        birth = gw.of(101, messages.BIRTH)[0]
        assert birth[1] == messages.LIGHTING and birth[2] == "fleet-sim"
        doc = node_config.parse_config((tmp_path / "nodes/node-101/config.json").read_bytes())
        assert birth[3] == bytes.fromhex(node_config.birth_digest(doc))
        assert birth[4] == messages.RESET_POWER_ON and birth[6] == 0  # no schedule yet
        assert birth[5] == [510500000, 37200000]
        # Dark, no schedule: the ambient sensor keeps it at the fail-safe level.
        await gw.until(lambda: gw.of(101, messages.TELEMETRY)[-1][1] == messages.SOURCE_AMBIENT)
        assert gw.of(101, messages.TELEMETRY)[-1][0] == 100 and hal.lamp_level == 100

        assert await gw.command(101, messages.OP_DIM, [30, 600]) == messages.OK
        await gw.until(lambda: hal.lamp_level == 30)
        await gw.until(lambda: gw.of(101, messages.TELEMETRY)[-1][:2] == [30, 1])

        schedule = {0: 5, 1: [[messages.AT_TIME, 0, 40]]}
        assert await gw.command(101, messages.OP_SCHEDULE, schedule) == messages.OK
        assert await gw.command(101, messages.OP_SCHEDULE, schedule) == messages.STALE
        assert hal.lamp_level == 30  # the override still holds
        assert await gw.command(101, messages.OP_DIM, [0, 0]) == messages.OK  # ends it
        await gw.until(lambda: hal.lamp_level == 40)

        mark = len(hal.lamp_history)
        assert await gw.command(101, messages.OP_IDENTIFY, 3) == messages.OK
        await gw.until(lambda: {0, 100} <= {level for _, level in hal.lamp_history[mark:]})
        await gw.until(lambda: hal.lamp_level == 40)

        assert await gw.command(101, messages.OP_SET_CONFIG, {"telemetry_s": 20}) == messages.OK
        assert fleet.node(101).telemetry_s() == 20
        for bad in ({"telemetry_s": 5}, {"no_such_setting": 1}, {"ntp_host": 3}):
            assert await gw.command(101, messages.OP_SET_CONFIG, bad) == messages.BAD_ARGS
        now = int(fleet.street.now())
        assert (await gw.command(101, messages.OP_RESERVE, [now, now + 60])
                == messages.UNSUPPORTED)
        assert (await gw.command(101, messages.OP_DIM, [10, 60], expiry=now - 1)
                == messages.EXPIRED)
        assert await gw.command(101, messages.OP_TIME_SYNC, now) == messages.OK

        # A replayed command (same counter) is dropped, never acked twice.
        acks = len(gw.of(101, messages.ACK))
        rejected = fleet.node(101).downlink.rejected
        dim = await gw.send(101, messages.OP_DIM, [60, 60])
        assert await gw.ack(101, dim) == messages.OK
        await gw.send(101, messages.OP_DIM, [60, 60], cid=dim, raw=gw.sent[dim])
        await gw.until(lambda: fleet.node(101).downlink.rejected == rejected + 1)
        assert len(gw.of(101, messages.ACK)) == acks + 1

        # A commanded reboot: acked, then a new boot whose birth says why and keeps the
        # schedule; the override ended with the reboot, the lamp goes straight to 40.
        boot = gw.uplinks[-1][messages.KEY_BOOT]
        before = fleet.boots(101)
        assert await gw.command(101, messages.OP_REBOOT, None) == messages.OK
        await gw.until(lambda: len(gw.of(101, messages.BIRTH)) >= 2)
        reborn = [b for b in gw.uplinks if b[messages.KEY_KIND] == messages.BIRTH][-1]
        assert reborn[messages.KEY_BOOT] == boot + 1 and fleet.boots(101) == before + 1
        assert reborn[messages.KEY_DATA][4] == messages.RESET_COMMANDED
        assert reborn[messages.KEY_DATA][6] == 5
        await gw.until(lambda: hal.lamp_level == 40)

        def health() -> list[dict[int, Any]]:
            return [b[messages.KEY_DATA] for b in gw.uplinks if b[messages.KEY_KIND]
                    == messages.HEALTH and b[messages.KEY_BOOT] == boot + 1]

        await gw.until(health)
        assert health()[0][8] == fleet.fw and health()[0][3] == messages.RESET_COMMANDED


async def test_parking_node_reports_its_bay_and_obeys(tmp_path: Path) -> None:
    async with rig(tmp_path, [spec(201, "parking")], speed=30) as gw:
        fleet = gw.fleet
        hal = fleet.hal(201)
        street = fleet.street
        # Calibration over the empty bay, then the bay is reported free.
        await gw.until(lambda: any(t[0] == messages.BAY_FREE and t[4] == 0
                                   for t in gw.of(201, messages.TELEMETRY)))
        assert hal.indicator_history[-1][1] == messages.INDICATOR_FREE

        street.park(hal.bay)
        await gw.until(lambda: gw.of(201, messages.EVENT))
        assert gw.of(201, messages.EVENT)[0][0] == messages.EV_BAY_OCCUPIED
        await gw.until(lambda: gw.of(201, messages.TELEMETRY)[-1][0] == messages.BAY_OCCUPIED)
        assert hal.indicator_history[-1][1] == messages.INDICATOR_OCCUPIED
        assert (await gw.command(201, messages.OP_RECALIBRATE, messages.SENSOR_MAGNETOMETER)
                == messages.FAILED)  # not over a parked car

        now = int(street.now())
        assert await gw.command(201, messages.OP_RESERVE, [now, now + 7200]) == messages.OK
        await gw.until(lambda: gw.of(201, messages.TELEMETRY)[-1][4]
                       & messages.PARKING_RESERVED_TAKEN)
        street.leave(hal.bay)
        await gw.until(lambda: any(e[0] == messages.EV_BAY_FREE
                                   for e in gw.of(201, messages.EVENT)))
        freed = next(e for e in gw.of(201, messages.EVENT) if e[0] == messages.EV_BAY_FREE)
        assert freed[1] > 0  # seconds the bay was taken
        await gw.until(lambda: hal.indicator_history[-1][1] == messages.INDICATOR_RESERVED)
        assert await gw.command(201, messages.OP_RELEASE, None) == messages.OK
        assert hal.indicator_history[-1][1] == messages.INDICATOR_FREE

        assert (await gw.command(201, messages.OP_RECALIBRATE, messages.SENSOR_MAGNETOMETER)
                == messages.OK)
        assert (await gw.command(201, messages.OP_RECALIBRATE, messages.SENSOR_NO2)
                == messages.BAD_ARGS)
        assert await gw.command(201, messages.OP_DIM, [10, 10]) == messages.UNSUPPORTED
        assert await gw.command(201, messages.OP_SET_CONFIG, {"enter_nt": 3000}) == messages.OK
        assert fleet.node(201).role.detector.enter_nt == 3000


async def test_air_node_reports_flagged_measurements(tmp_path: Path) -> None:
    async with rig(tmp_path, [spec(301, "air", pm_period_s=60)], speed=40) as gw:
        fleet = gw.fleet
        air = fleet.street.air
        air.humidity, air.pm25, air.pm10, air.no2 = 60.0, 12.0, 20.0, 35.0

        def measured() -> list[Any] | None:
            done = [t for t in gw.of(301, messages.TELEMETRY) if t[0] is not None]
            return done[-1] if done else None

        await gw.until(measured)
        pm25, pm10, no2, temp, rh, pressure, flags = measured() or []
        assert abs(pm25 - 120) <= 20 and abs(pm10 - 200) <= 30  # 0.1 ug/m3
        assert abs(no2 - 350) <= 30  # the calibration sheet of the simulated cell
        assert abs(rh - 600) <= 20 and pressure is not None and temp is not None
        assert flags == messages.AIR_WARMUP  # the NO2 cell's first hour

        fleet.hal(301).broken.add("pm")
        await gw.until(lambda: [messages.EV_SENSOR_FAULT, messages.SENSOR_PM]
                       in gw.of(301, messages.EVENT))
        await gw.until(lambda: gw.of(301, messages.TELEMETRY)[-1][6] & messages.AIR_SENSOR_FAULT)
        assert gw.of(301, messages.TELEMETRY)[-1][0] is None
        fleet.hal(301).broken.clear()
        await gw.until(lambda: [messages.EV_SENSOR_OK, messages.SENSOR_PM]
                       in gw.of(301, messages.EVENT))

        assert await gw.command(301, messages.OP_SET_CONFIG, {"pm_period_s": 120}) == messages.OK
        assert fleet.node(301).role.cycle.period_s == 120
        assert await gw.command(301, messages.OP_RECALIBRATE, 3) == messages.UNSUPPORTED
        assert await gw.command(301, messages.OP_IDENTIFY, 2) == messages.OK
