"""Virtual ESP32 boards for `citisense demo`: the real firmware, installed as a technician
installs it.

Each board is a citisense_boards.virtual_board.VirtualBoard (the MicroPython VM with
simulated peripherals). Its node is registered in the gateway's store before the gateway
starts (the embedded broker takes its accounts from the registry at start) and gets the
config file `citisense provision` writes (key, broker account, location, Wi-Fi), plus
report intervals for a demo and, for air quality, its NO2 cell's calibration. Once the
gateway is up, the bundle made by `citisense build` (citisense_tools.build.build, one per
role, kept under the demo folder) and the config are flashed over the board's serial
port with citisense_tools.flash.flash, which resets the board: it boots the application
from its ROMFS slot, joins the street's access point and connects to the demo's broker.

The boards live on a street of their own whose clock runs at real time (SPEED): the
firmware's watchdog runs in street time, and at the fleet's 60x its 30 s would be half a
real second, too short for the VM on a busy machine. A flash is a technician at the
pole: real time too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import select
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from citisense_boards.mpvm import MicroPythonUnavailable, find_micropython_mjs
from citisense_boards.street import Street, StreetClock, Wifi
from citisense_boards.virtual_board import VirtualBoard
from citisense_gateway import acl, registry
from citisense_gateway.store import Store
from citisense_tools import build as builder
from citisense_tools import bundle as bundles
from citisense_tools import node_config, provision
from citisense_tools.board_link import SerialLink
from citisense_tools.errors import CommandError
from citisense_tools.flash import flash
from citisense_tools.fleet import AIR_SETTINGS, SPACING_DEG
from citisense_tools.fleet_street import Traffic
from citisense_tools.registration import Identity

BOARD = "virtual-esp32"
# Parking and air first; lighting too (no night schedule is assigned in the demo: see
# hil_tests/conftest.py on schedules at night on a 110 KiB virtual board).
ROLES = ("parking", "air", "lighting")
MAX_BOARDS = 8  # each board is a MicroPython VM process of its own
SPEED = 1.0  # street seconds per real second on the boards' street
# A reading a minute and a health report every five: a board shows up in the store soon.
INTERVALS = {"telemetry": 60, "health": 300}
WIFI_SSID = "citisense-demo"
ZONE = "demo"
STREET = "Virtual boards"
ORIGIN = (51.0495, 3.7205)  # beside the simulated street
BOOT_TIMEOUT_S = 30.0
AT_ONCE = 2  # boards booted and flashed at the same time (a 2-core machine)


@dataclass
class DemoBoard:
    """One virtual board of the demo: its node, its files and where it stands."""

    name: str
    role: str
    node_id: int
    folder: Path
    config: Path
    board: VirtualBoard | None = None
    console: ConsoleLog | None = None
    state: str = "waiting"  # waiting, booting, flashing, running, failed, stopped
    problem: str = ""
    boots: int = 0  # hard boots once the application was started
    told: int = 0  # unexpected resets already reported
    version: str = ""  # the firmware flashed

    @property
    def unexpected_resets(self) -> int:
        board = self.board
        if board is None or self.state != "running":
            return 0
        return max(0, board.boot_count() - self.boots)


class ConsoleLog(threading.Thread):
    """Copies a board's console (the application's prints) to a file.

    Opened without pyserial, which would flush what the board printed before."""

    def __init__(self, port: str, path: Path) -> None:
        super().__init__(name=f"console {port}", daemon=True)
        self.fd = os.open(port, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        self.path = path
        self._finish = threading.Event()

    def run(self) -> None:
        with self.path.open("ab") as out:
            try:
                while not self._finish.is_set():
                    ready, _, _ = select.select([self.fd], [], [], 0.5)
                    if ready:
                        data = os.read(self.fd, 4096)
                        if not data:
                            break
                        out.write(data)
                        out.flush()
            except OSError:
                pass  # the board is gone
            finally:
                os.close(self.fd)

    def stop(self) -> None:
        self._finish.set()
        self.join()


class _LogProgress:
    """flash's progress, written to the board's flash.log."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def step(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=self.out, flush=True)

    def transfer(self, done: int, total: int) -> None:
        if done == total:
            print(f"    {total / 1024:.1f} KiB written", file=self.out, flush=True)


def unavailable() -> str | None:
    """Why virtual boards cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs)"
    try:
        find_micropython_mjs()
    except MicroPythonUnavailable as err:
        return str(err)
    return None


def check_count(count: int) -> None:
    if not 0 <= count <= MAX_BOARDS:
        raise CommandError(f"--boards {count}: give 0 to {MAX_BOARDS} (each virtual board is a "
                           "MicroPython VM process of its own)")


class Bench:
    """The demo's virtual boards and the street they stand on."""

    def __init__(self, directory: Path, count: int) -> None:
        check_count(count)
        self.directory = directory
        self.count = count
        self.wifi_password = acl.new_password()
        self.street = Street(clock=StreetClock(speed=SPEED),
                             wifi=Wifi(ssid=WIFI_SSID, password=self.wifi_password))
        self.boards: list[DemoBoard] = []
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._traffic: asyncio.Task[None] | None = None
        self._power = threading.Lock()  # one power-off at a time, whoever asks

    # ---- before the gateway starts ------------------------------------------------------
    async def provision(self, store: Store, host: str, port: int) -> None:
        """Register the boards' nodes (after the fleet's) and write their config files."""
        first = 1 + max((node.node_id for node in await store.nodes()), default=0)
        for index, role in zip(range(self.count), itertools.cycle(ROLES), strict=False):
            node_id = first + index
            lat = round(ORIGIN[0] + SPACING_DEG * index, 7)
            made = await registry.provision(
                store, node_id, role, user="citisense demo", zone=ZONE, street=STREET,
                lat=lat, lon=ORIGIN[1], label=f"{role} {node_id}, virtual ESP32 (real firmware)")
            identity = Identity(made.node.node_id, made.mac_key, acl.node_user(node_id),
                                made.broker_password)
            name = f"demo-{role}-{node_id}"
            folder = self.directory / name
            folder.mkdir(parents=True)
            config = folder / f"node-{node_id}.json"
            provision.write_secret_file(
                config, node_config.encode(self.config_doc(identity, role, lat, host, port)))
            self.boards.append(DemoBoard(name, role, node_id, folder, config))

    def config_doc(self, identity: Identity, role: str, lat: float, host: str,
                   port: int) -> dict[str, object]:
        """What `citisense provision --board virtual-esp32 --wifi-ssid ...` writes, with
        the intervals and settings a site would lay over it."""
        args = argparse.Namespace(
            role=role, board=BOARD, lat=lat, lon=ORIGIN[1], street=STREET, zone=ZONE,
            serial=False, baud=115200, broker_host=host, broker_port=port,
            wifi_ssid=WIFI_SSID)
        doc = provision.config_doc(identity, args, self.wifi_password)
        doc["intervals"] = dict(INTERVALS)
        if role == "air":
            doc["settings"] = dict(AIR_SETTINGS)
        problem = node_config.problem(doc)
        if problem:
            raise CommandError(f"board node {identity.node_id}: the firmware would refuse its "
                               f"config: {problem}")
        return doc

    @property
    def node_ids(self) -> list[int]:
        return [b.node_id for b in self.boards]

    def roles_text(self) -> str:
        return ", ".join(b.role for b in self.boards)

    # ---- once the gateway is up -----------------------------------------------------------
    def start(self, say: Callable[[str], None]) -> None:
        """Boot and flash the boards in the background; `say` reports each one."""
        self._task = asyncio.create_task(self._bring_up(say), name="demo boards")

    async def _bring_up(self, say: Callable[[str], None]) -> None:
        bundles_by_role: dict[str, bundles.Bundle] = {}
        try:
            for role in dict.fromkeys(b.role for b in self.boards):
                out = self.directory / "firmware" / f"{role}-{BOARD}"
                out.parent.mkdir(parents=True, exist_ok=True)
                bundles_by_role[role] = await asyncio.to_thread(builder.build, role, BOARD, out)
        except CommandError as err:
            for b in self.boards:
                b.state, b.problem = "failed", f"citisense build: {err}"
            say(f"boards: the firmware does not build: {err}")
            return
        gate = asyncio.Semaphore(AT_ONCE)

        async def one(b: DemoBoard) -> None:
            async with gate:
                if self._stopping:
                    return
                started = time.monotonic()
                try:
                    await asyncio.to_thread(self._install, b, bundles_by_role[b.role])
                except Exception as err:  # a board that fails must not stop the demo
                    if self._stopping:
                        return
                    b.state, b.problem = "failed", str(err) or type(err).__name__
                    say(f"board {b.name}: failed: {b.problem} (see {b.folder})")
                    await asyncio.to_thread(self._power_off, b)
                    return
                if not self._stopping:
                    say(f"board {b.name}: node {b.node_id} ({b.role}), firmware {b.version} "
                        f"flashed over {b.board.repl_port if b.board else '?'} and started "
                        f"in {time.monotonic() - started:.0f} s; console in "
                        f"{b.folder / 'console.log'}")

        await asyncio.gather(*(one(b) for b in self.boards))
        parking = [b.name for b in self.boards if b.role == "parking" and b.state == "running"]
        if not self._stopping and any(b.state == "running" for b in self.boards):
            # Cars come and go and the air changes, minute by minute of the boards' street.
            self._traffic = asyncio.create_task(Traffic(self.street, parking).run(),
                                                name="board street")

    def _install(self, b: DemoBoard, bundle: bundles.Bundle) -> None:
        """Power the board on, flash bundle and config, wait for the application's boot
        (in a thread: the board and the link are blocking)."""
        b.state = "booting"
        board = VirtualBoard(b.name, role=b.role, street=self.street,
                             directory=b.folder / "board")
        b.board = board
        if self._stopping:
            return
        board.start(timeout=BOOT_TIMEOUT_S)
        if self._stopping:
            return
        b.state = "flashing"
        booted = board.boot_count()
        with (b.folder / "flash.log").open("w") as log:
            link = SerialLink(board.repl_port)
            try:
                flash(link, bundle, _LogProgress(log), config=b.config.read_bytes())
            except BaseException:
                link.close()
                raise
        # flash() ended with a reset: the loader boots the application from its slot.
        board.wait_for_boot(booted + 1, BOOT_TIMEOUT_S)
        if self._stopping:
            return
        b.boots = board.boot_count()
        b.version = bundle.version
        b.console = ConsoleLog(board.repl_port, b.folder / "console.log")
        b.console.start()
        b.state = "running"

    def _power_off(self, b: DemoBoard) -> None:
        with self._power:
            if b.console is not None:
                b.console.stop()
                b.console = None
            if b.board is not None:
                b.board.stop()

    # ---- status and stop ---------------------------------------------------------------
    def news(self) -> list[str]:
        """A line for each board that reset by itself since the last call (a firmware
        fault, the watchdog): what it printed before is in its console.log."""
        lines = []
        for b in self.boards:
            resets = b.unexpected_resets
            if resets > b.told and b.board is not None:
                b.told = resets
                causes = [e.cause for e in b.board.events() if e.kind == "reset"]
                cause = {"WDT": "watchdog", "SOFT": "machine.reset()"}.get(
                    causes[-1] if causes else "", "power")
                lines.append(f"board {b.name}: reset by itself ({cause}; {resets} since its "
                             f"flash): see {b.folder / 'console.log'}")
        return lines

    def notes(self) -> str:
        """What is not plain running, for the status line ("" when all run)."""
        states: dict[str, int] = {}
        for b in self.boards:
            if b.state != "running":
                states[b.state] = states.get(b.state, 0) + 1
        parts = [f"{n} {state}" for state, n in states.items()]
        resets = sum(b.unexpected_resets for b in self.boards)
        if resets:
            parts.append(f"{resets} unexpected reset{'s' if resets > 1 else ''}")
        return f" ({', '.join(parts)})" if parts else ""

    async def stop(self) -> None:
        """Power every board off (also one still being flashed) and wait for the rest."""
        self._stopping = True
        if self._traffic is not None:
            self._traffic.cancel()
            await asyncio.gather(self._traffic, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(self._power_off, b) for b in self.boards))
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        # A board powered on while the first pass ran is off now too.
        await asyncio.gather(*(asyncio.to_thread(self._power_off, b) for b in self.boards))
        for b in self.boards:
            b.state = "stopped"
