"""The lighting fail-safe, on the fleet simulator's board with street time hours a minute.

No reboot, disconnect or missing time source may leave a street dark at night: the lamp
follows its stored schedule through a night without link, across a restart, and with
neither time nor link its ambient sensor decides.
"""

from __future__ import annotations

import asyncio
import importlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from citisense_boards.street import Street, StreetClock
from citisense_protocols import messages, topics
from citisense_tools.fleet import Fleet, NodeSpec, local_broker

schedule_module: Any = importlib.import_module("citisense_firmware.schedule")

LAT, LON = 51.05, 3.72  # Ghent: UTC+1 in January
CET = 3600
NODE = 42
MINUTE = 60
# Ticks of a street minute: hours of street time pass in seconds without burning CPU.
FAST_SETTINGS = {"tick_ms": 60000, "sense_ms": 60000, "fade_ms": 0}
# Full at dusk, 70 % from 22:00, 50 % from 00:30, off at dawn; local time is UTC+1.
SCHEDULE = {0: 3, 1: [[messages.AT_DUSK, -15, 100], [messages.AT_TIME, 22 * 60, 70],
                      [messages.AT_TIME, 30, 50], [messages.AT_DAWN, 15, 0]],
            3: [[0, 60]]}
GATEWAY = ("gateway", secrets.token_urlsafe(16))


def local(day: int, hour: int, minute: int = 0) -> float:
    """Unix time of a local (UTC+1) time in January 2026."""
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC).timestamp() - CET


def level_at(history: list[tuple[float, int]], when: float) -> int | None:
    """The lamp's level at street time `when`."""
    level = None
    for at, value in history:
        if at > when:
            break
        level = value
    return level


def node_spec() -> NodeSpec:
    return NodeSpec(NODE, "lighting", secrets.token_bytes(32), secrets.token_urlsafe(16), LAT,
                    LON, FAST_SETTINGS, {"telemetry": 600, "health": 3600})


async def run_until(street: Street, when: float, action: Callable[[], object] | None = None,
                    at: float | None = None) -> None:
    """Let street time reach `when`, doing `action` once street time passes `at`."""
    while street.now() < when:
        if action is not None and at is not None and street.now() >= at:
            action()
            action = None
        await asyncio.sleep(0.005)


@pytest.mark.broker
async def test_a_night_without_link_follows_the_schedule_even_across_a_restart(
        tmp_path: Path) -> None:
    spec = node_spec()
    street = Street(latitude=LAT, longitude=LON,
                    clock=StreetClock(start=local(15, 17, 50), speed=120))
    with local_broker(tmp_path / "broker", [spec], *GATEWAY) as broker:
        async with aiomqtt.Client("127.0.0.1", broker.port, username=GATEWAY[0],
                                  password=GATEWAY[1], identifier="gateway") as gateway:
            await gateway.subscribe(f"citisense/v1/{NODE}/up/#", qos=1)
            fleet = Fleet([spec], f"mqtt://127.0.0.1:{broker.port}", tmp_path / "nodes",
                          street=street, traffic=False, radio=True)
            async with fleet:
                async for message in gateway.messages:
                    assert isinstance(message.payload, bytes)
                    body = messages.decode_signed(spec.key, message.payload)
                    if body[messages.KEY_KIND] == messages.BIRTH:  # it listens: send
                        command = messages.command(NODE, 7, int(street.now()) + 3600, 1,
                                                   messages.OP_SCHEDULE, SCHEDULE)
                        await gateway.publish(topics.topic(NODE, messages.COMMAND),
                                              messages.encode_signed(spec.key, command), qos=1)
                    elif body[messages.KEY_KIND] == messages.ACK:
                        assert body[messages.KEY_DATA] == [7, messages.OK]
                        break
                await run_until(street, local(15, 18))
                fleet.set_link(False)  # 18:00: the radio link is lost for the night
                lost = street.now()
                street.clock.set_speed(4800)
                restarted: list[float] = []

                def restart() -> None:
                    restarted.append(street.now())
                    asyncio.get_running_loop().create_task(
                        fleet.restart(NODE, messages.RESET_EXTERNAL))

                await run_until(street, local(16, 6), restart, at=local(15, 23))
                node = fleet.node(NODE)
                history = fleet.hal(NODE).lamp_history
                assert not node.link_up() and node.time_valid()  # time from the RTC
                assert fleet.boots(NODE) == 2 and node.reset_cause == messages.RESET_EXTERNAL

    schedule = schedule_module.parse(SCHEDULE)
    times = [lost + m * MINUTE for m in range(int((local(16, 6) - lost) / MINUTE))]
    expected = [schedule.level(int(t), LAT, LON) for t in times]
    changes = [t for t, before, after in zip(times[1:], expected, expected[1:], strict=False)
               if before != after]
    assert len(changes) == 2  # 22:00 and 00:30 in this night
    for t, want in zip(times, expected, strict=True):
        # A tick late is right; more slack for a busy test machine at 80 minutes a second.
        if all(abs(t - change) > 15 * MINUTE for change in changes):
            assert level_at(history, t) == want, datetime.fromtimestamp(t + CET, UTC)
    # The restart at 23:00 did not touch the light: no other level until well after it.
    before = level_at(history, restarted[0])
    assert before == 70
    assert all(level == before for at, level in history
               if restarted[0] <= at <= restarted[0] + 30 * MINUTE)


async def test_without_time_or_link_the_ambient_sensor_keeps_the_night_lit(
        tmp_path: Path) -> None:
    street = Street(latitude=LAT, longitude=LON,
                    clock=StreetClock(start=local(15, 15), speed=6000))
    street.wifi.up = False  # no link, so no time source either, from power-on on
    async with Fleet([node_spec()], "mqtt://127.0.0.1:9", tmp_path / "nodes", street=street,
                     traffic=False) as fleet:
        start = street.now()
        await run_until(street, local(16, 9, 30))
        node = fleet.node(NODE)
        assert not node.time_valid() and not node.link_up()
        assert node.role.source == messages.SOURCE_AMBIENT
        history = fleet.hal(NODE).lamp_history
    dark = light = 0
    for minute in range(5, int((local(16, 9, 30) - start) / MINUTE)):
        t = start + minute * MINUTE
        lux = street.lux(t)
        # Margins of a quarter of an hour of twilight around the sensor's thresholds (dark
        # at 30 lx, light at 60 lx): the node senses once a street minute.
        if lux < 3:  # night
            dark += 1
            assert level_at(history, t) == 100, datetime.fromtimestamp(t + CET, UTC)
        elif lux > 1000:  # day
            light += 1
            assert level_at(history, t) == 0, datetime.fromtimestamp(t + CET, UTC)
    assert dark > 600 and light > 60  # the test saw a whole night and some day


async def test_without_time_link_or_light_sensor_the_lamp_stays_on(tmp_path: Path) -> None:
    street = Street(latitude=LAT, longitude=LON,
                    clock=StreetClock(start=local(15, 12), speed=3600))
    street.wifi.up = False
    fleet = Fleet([node_spec()], "mqtt://127.0.0.1:9", tmp_path / "nodes", street=street,
                  traffic=False)
    async with fleet:
        fleet.hal(NODE).broken.add("light")
        await run_until(street, local(15, 13))
        assert fleet.hal(NODE).lamp_level == 100  # noon, but nothing says it is day
        assert fleet.node(NODE).role.source == messages.SOURCE_FAILSAFE
        assert fleet.node(NODE).role.faults.flags & 16  # light sensor fault reported
