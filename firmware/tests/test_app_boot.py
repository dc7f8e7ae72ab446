"""Booting the node app: no config, a crash loop, a stuck task.

On the fleet simulator's board (street time 60 times faster than real time), without a
broker: these are the node's own defences.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from citisense_boards.street import Street, StreetClock
from citisense_protocols import cbor, messages
from citisense_tools.fleet import Fleet, NodeSpec, config_doc, node_folder
from citisense_tools.fleet_hal import StreetHal

app: Any = importlib.import_module("citisense_firmware.app")
config: Any = importlib.import_module("citisense_firmware.config")

NIGHT = datetime(2026, 1, 15, 21, 0, tzinfo=UTC).timestamp()
LAT, LON = 51.05, 3.72
NO_BROKER = "mqtt://127.0.0.1:9"


def dark_street(speed: float = 60) -> Street:
    street = Street(latitude=LAT, longitude=LON, clock=StreetClock(start=NIGHT, speed=speed))
    street.wifi.up = False
    return street


def spec(**settings: int) -> NodeSpec:
    return NodeSpec(7, "lighting", secrets.token_bytes(32), secrets.token_urlsafe(16), LAT, LON,
                    settings, {"telemetry": 600, "health": 900})


async def until(condition: Callable[[], object], timeout: float = 10) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize(("content", "reason"), [
    (None, "missing"),
    (b"{\"node\": 7, \"ro", "corrupt: not JSON"),
    (b"{\"node\": 7}", "invalid: role"),
])
async def test_without_a_usable_config_the_node_reports_and_keeps_the_lamp_safe(
        tmp_path: Path, content: bytes | None, reason: str) -> None:
    street = dark_street()
    hal = StreetHal(street, "lighting", "bay")
    if content is not None:
        (tmp_path / "config.json").write_bytes(content)
    task = asyncio.create_task(app.Node(hal, str(tmp_path), "t", "lighting").run())
    try:
        await until(lambda: (tmp_path / "state" / "fault").exists())
        assert (tmp_path / "state" / "fault").read_text().startswith(reason)
        await until(lambda: hal.lamp_level == 100)  # dark: on, without any config
        feeds = hal.feeds
        await asyncio.sleep(0.2)
        assert hal.feeds > feeds and not task.done()  # alive and feeding its watchdog
        # A technician writes a config: the node comes up on its own, the fault is gone.
        doc = config_doc(spec(), "127.0.0.1", 9)
        (tmp_path / "config.json").write_text(json.dumps(doc))
        await until(lambda: not (tmp_path / "state" / "fault").exists())
        await until(lambda: list((tmp_path / "state").glob("boot.*")))  # booted
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_after_a_crash_loop_safe_mode_ignores_the_stored_schedule(tmp_path: Path) -> None:
    node_spec = spec()
    root = node_folder(tmp_path, node_spec.node_id)
    # Three boots that never proved themselves, and a schedule that may be the culprit.
    config.Counter(str(root / "state" / "guard")).set(config.SAFE_MODE_AFTER)
    schedule = {0: 9, 1: [[messages.AT_TIME, 0, 20]]}
    config.DurableRecord(str(root / "state" / "schedule")).save(cbor.dumps(schedule))
    street = dark_street(speed=120)
    async with Fleet([node_spec], NO_BROKER, tmp_path, street=street, traffic=False) as fleet:
        await until(lambda: fleet.node(7) is not None and fleet.node(7).role is not None)
        node = fleet.node(7)
        assert node.safe_mode and node.role.schedule is None and node.role.version == 9
        assert node.birth()[6] == 9  # the gateway still sees which schedule is stored
        await until(lambda: fleet.hal(7).lamp_level == 100)  # ambient fail-safe, not 20 %
        # Up long enough with every task alive: the boot proved itself.
        await until(lambda: config.Counter(str(root / "state" / "guard")).value == 0)
        assert node.clock.uptime() >= app.FIT_AFTER_S


async def test_a_stuck_task_starves_the_watchdog_and_the_board_resets(tmp_path: Path) -> None:
    street = dark_street()
    async with Fleet([spec()], NO_BROKER, tmp_path, street=street, traffic=False) as fleet:
        await until(lambda: fleet.node(7) is not None and fleet.node(7).role is not None)
        hal = fleet.hal(7)
        hal.watchdog_start(300)  # real milliseconds: the test need not wait 30 s
        await asyncio.sleep(0.5)
        assert fleet.boots(7) == 1  # healthy: fed in time

        def stuck() -> None:
            raise RuntimeError("sensor driver hangs")

        fleet.node(7).role.sense = stuck
        await until(lambda: fleet.boots(7) == 2)
        await until(lambda: fleet.node(7).role is not None)
        assert fleet.node(7).reset_cause == messages.RESET_WATCHDOG
