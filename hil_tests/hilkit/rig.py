"""The board under test and what the rig around it can see and do: the `board` fixture.

One interface, two rigs. VirtualRig is a virtual ESP32 (citisense_boards.virtual_board)
on a simulated street: it has every feature. SerialRig is a real board on a serial port
(a device or any pyserial URL): it flashes and talks to the board like a technician
does; what it observes or stimulates beyond that comes from the rig's own front-end
(--rig-adapter) and is declared with --board-features. A test names the features it
needs (`@pytest.mark.requires(...)`) and is skipped, with the reason, on a rig without
them; test code never asks which kind of board it has.

Commissioning is the technician's workflow: `citisense build` and `citisense provision`
(registered with the station's gateway) run as commands; the flash is what `citisense
flash --broker` runs (citisense_tools.flash.flash), with the node's birth watched through
the station's broker and checked, and the console watched so a node that crashes at boot
fails the test at once, with what it printed.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from citisense_boards.street import Street, StreetClock
from citisense_boards.virtual_board import VirtualBoard
from citisense_tools import bundle as bundles
from citisense_tools import cli, commissioning, deploy
from citisense_tools.board_link import SerialLink
from citisense_tools.errors import CommandError
from citisense_tools.flash import flash
from citisense_tools.power_cut_link import PowerCut as PowerCut  # hilkit.rig.PowerCut
from citisense_tools.power_cut_link import PowerCutLink
from citisense_tools.provision import WIFI_PASSWORD_ENV
from hilkit.console import ConsoleTap, open_pty, open_serial
from hilkit.station import Station

# What a rig may offer beyond a serial port, and what each means.
FEATURES = {
    "lamp-capture": "measures the lamp driver's PWM input (duty and frequency)",
    "parking-stimulus": "puts a car over the bay's magnetometer, takes it away, and shifts "
                        "the empty bay's field as a temperature change would",
    "pm-stimulus": "sets the particulate concentration the PM sensor reads",
    "power-cycle": "cuts the board's power and restores it",
    "street-clock": "sets street time and runs it faster than real time; the board's "
                    "sensors follow it (sun, light, temperature)",
}
# The methods of a rig adapter (--rig-adapter) that back each front-end feature.
ADAPTER_METHODS = {
    "lamp-capture": ("lamp_samples",),
    "parking-stimulus": ("park", "leave", "drift"),
    "pm-stimulus": ("set_pm",),
    "power-cycle": ("power_cycle",),
}
FLASH_TIMEOUT_S = 120.0
# A target of advance_to() that street time has passed by less than this while it was
# computed (at most a few real milliseconds, times the street's speed) is no jump at all.
STALE_TARGET_S = 1.0
FULL_SCALE = 65535


class MissingFeature(Exception):
    """A test used a feature it did not declare with @pytest.mark.requires."""


class LampSample(NamedTuple):
    """The lamp driver's input from street time t on; duty_u16 None: not driven."""

    t: float
    duty_u16: int | None
    freq: int


@dataclass(frozen=True)
class Node:
    """A commissioned node: its identity and what it announced."""

    id: int
    role: str
    version: str
    config: dict[str, Any]
    birth: commissioning.Birth


class RigAdapter(Protocol):
    """A real rig's front-end (FPGA meters, coils, a PM chamber, a power switch). Only the
    methods of the features it has need to exist; see ADAPTER_METHODS."""

    def lamp_samples(self) -> list[LampSample]: ...

    def park(self) -> None: ...

    def leave(self) -> None: ...

    def drift(self, celsius: float) -> None: ...

    def set_pm(self, pm25: float, pm10: float) -> None: ...

    def power_cycle(self) -> None: ...


class Quiet:
    def step(self, text: str) -> None:
        print(f"flash: {text}")

    def transfer(self, done: int, total: int) -> None:
        pass


class Rig:
    """The board fixture: one board, the station it talks to, and the rig's features."""

    board_definition: str
    features: frozenset[str]
    console: ConsoleTap

    def __init__(self, station: Station, clock: StreetClock, builds: Path, *,
                 lat: float, lon: float) -> None:
        self.station = station
        self.clock = clock
        self.builds = builds
        self.lat = lat
        self.lon = lon
        self.node: Node | None = None

    # ---- street time ---------------------------------------------------------------
    def now(self) -> float:
        """Street time, Unix seconds (what the gateway tells the node)."""
        return self.clock.now()

    def wait(self, street_s: float) -> None:
        """Let `street_s` street seconds pass."""
        time.sleep(street_s / self.clock.speed)

    def set_speed(self, speed: float) -> None:
        self.require("street-clock")
        self.clock.set_speed(speed)
        self._clock_moved()

    def advance(self, street_s: float) -> None:
        """Jump street time forward, as after a long sleep. Backwards only before
        commissioning (e.g. to set the street's date); after it, ValueError: the board's
        ticks count street time from its last reset, so a running node would see them go
        back (its watchdog bites). The commissioning flash resets the board: its ticks
        start again from there."""
        self.require("street-clock")
        if street_s < 0 and self.node is not None:
            if street_s > -STALE_TARGET_S:
                return  # the target passed while it was computed: no jump
            now = self.now()
            raise ValueError(
                f"street time cannot jump backwards once a node is commissioned: it is "
                f"{_stamp(now)}, the jump asked for {_stamp(now + street_s)} "
                f"({street_s:+.0f} s); the board's ticks would go back and its watchdog "
                "would reset it")
        self.clock.advance(street_s)
        self._clock_moved()

    def advance_to(self, unix: float) -> None:
        """Jump street time to `unix` (Unix seconds); see advance()."""
        self.advance(unix - self.now())

    # ---- commissioning -------------------------------------------------------------
    def commission(self, role: str, *, version: str = "1.0.0",
                   settings: dict[str, Any] | None = None, time_sync: bool = True) -> Node:
        """Build, provision and flash a node of `role` as a technician does, wait for its
        birth (checked against its config, as `citisense flash` checks it), and give it
        the street's time through the gateway."""
        bundle = self.build(role, version)
        config_path = self._provision(role, settings or {})
        doc = json.loads(config_path.read_text())
        with self.console.released():
            self._prepare_board()
        birth = self._flash(bundle, config=config_path.read_bytes())
        self.station.wait_until(lambda: bool(self.station.births(doc["node"])), 60,
                                "birth stored by the gateway (the flash saw one)")
        self.node = Node(doc["node"], role, version, doc, birth)
        if time_sync:
            self.station.run_command(self.station.time_sync(self.node.id))
        return self.node

    def deploy(self, version: str, *, power_cut_after: int | None = None
               ) -> commissioning.Birth:
        """Flash another version of the node's firmware (its config stays) and wait for the
        birth. power_cut_after=N: the power goes after N exchanges with the board
        (PowerCut raised), leaving the rest of the flash undone."""
        node = self._commissioned()
        return self._flash(self.build(node.role, version), power_cut_after=power_cut_after)

    def _flash(self, bundle: bundles.Bundle, *, config: bytes | None = None,
               power_cut_after: int | None = None) -> commissioning.Birth:
        """What `citisense flash --bundle B [--config C] --port P --broker URL` runs, with a
        birth wait that gives up as soon as the console shows the application dying."""
        with self._flashing(), self.console.released():
            link = SerialLink(self.port)
            try:
                birth = flash(PowerCutLink(link, power_cut_after, self.power_cycle), bundle,
                              Quiet(), config=config, births=_WatchedBirths(self),
                              timeout=FLASH_TIMEOUT_S)
            except CommandError as err:
                link.close()
                raise AssertionError(f"citisense flash: {err}\n{self._console_tail()}"
                                     ) from None
        self.console.attach()
        assert birth is not None
        print(f"flash: commissioned {commissioning.describe(birth)}")
        return birth

    def _console_tail(self) -> str:
        text = self.console.text()[-3000:]
        return f"board console:\n{text}" if text else "(the board printed nothing)"

    def build(self, role: str, version: str) -> bundles.Bundle:
        out = self.builds / f"{version}-{role}-{self.board_definition}"
        if not (out / bundles.MANIFEST).is_file():
            self._citisense("build", "--role", role, "--board", self.board_definition,
                            "--version", version, "--out", str(out))
        return bundles.read_bundle(out)

    # ---- the board -------------------------------------------------------------------
    port: str

    def power_cycle(self) -> None:
        """Power off and on; flash is kept, RAM and RTC memory are lost."""
        raise MissingFeature("power-cycle")

    def halt_application(self) -> None:
        """Stop the application where it is, as a hang would: Ctrl-C on the console. Only
        the watchdog brings the board back."""
        with self.console.released():
            import serial

            port: Any = serial.serial_for_url(self.port, 115200, timeout=1, do_not_open=True)
            port.dtr = port.rts = False  # they reset many boards
            port.open()
            try:
                port.write(b"\x03\x03")
                port.flush()
            finally:
                port.close()

    # ---- front-end features ------------------------------------------------------------
    def lamp_samples(self) -> list[LampSample]:
        raise MissingFeature("lamp-capture")

    def park(self) -> None:
        raise MissingFeature("parking-stimulus")

    def leave(self) -> None:
        raise MissingFeature("parking-stimulus")

    def drift(self, celsius: float) -> None:
        """Shift the empty bay's field as a sensor temperature change of `celsius` would."""
        raise MissingFeature("parking-stimulus")

    def set_pm(self, pm25: float, pm10: float) -> None:
        raise MissingFeature("pm-stimulus")

    def lamp_level(self) -> float | None:
        """The lamp level now, percent of full scale; None while the pin is not driven."""
        samples = self.lamp_samples()
        if not samples or samples[-1].duty_u16 is None:
            return None
        return samples[-1].duty_u16 * 100 / FULL_SCALE

    def wait_lamp(self, level: float, street_s: float) -> None:
        """Wait until the lamp is at `level` percent (within 1 %)."""
        def there() -> bool:
            now = self.lamp_level()
            return now is not None and abs(now - level) <= 1

        self.station.wait_until(there, street_s, f"lamp at {level} %")

    # ---- checks --------------------------------------------------------------------------
    def require(self, feature: str) -> None:
        if feature not in self.features:
            raise MissingFeature(f"{feature}: declare it with @pytest.mark.requires")

    def close(self) -> None:
        pass

    # ---- plumbing --------------------------------------------------------------------------
    def _commissioned(self) -> Node:
        if self.node is None:
            raise AssertionError("commission() the board first")
        return self.node

    def _clock_moved(self) -> None:
        pass

    def _prepare_board(self) -> None:
        """Make the board a blank one before a commissioning."""

    @contextlib.contextmanager
    def _flashing(self) -> Iterator[None]:
        yield

    def _wifi_args(self) -> list[str]:
        return []

    def _provision(self, role: str, settings: dict[str, Any]) -> Path:
        out = self.station.directory / f"node-{role}-{time.monotonic_ns()}.json"
        self._citisense(
            "provision", "--role", role, "--board", self.board_definition,
            "--lat", str(self.lat), "--lon", str(self.lon), "--street", "hil", "--zone", "rig",
            "--broker-host", self.station.node_host, "--broker-port",
            str(self.station.node_port), "--store", self.station.store_url, "--user", "hil",
            "--out", str(out), *self._wifi_args())
        if settings:  # the site's settings, laid over the file as the node lays them
            doc = json.loads(out.read_text())
            doc["settings"] = settings
            out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        doc = json.loads(out.read_text())
        self.station.allow(doc["node"])
        return out

    def _citisense(self, *argv: str) -> str:
        """Run a citisense command in-process; its output (AssertionError if it failed)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(argv))
        text = out.getvalue() + err.getvalue()
        print(f"$ citisense {' '.join(argv)}\n{text}")
        assert code == 0, f"citisense {argv[0]} failed ({code}):\n{text}"
        return text


class _WatchedBirths:
    """The station's births (`citisense flash --broker`), watched with the console: a
    traceback or a watchdog reset instead of a birth fails at once, with what it said."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    @contextlib.contextmanager
    def watch(self, node: int, key: bytes | None) -> Iterator[commissioning.Wait]:
        with self.rig.station.birth_source.watch(node, key) as wait:
            def watched(timeout: float) -> commissioning.Birth | None:
                console = self.rig.console
                console.attach()  # the flash has let go of the port: it reset the board
                mark = console.mark()
                deadline = time.monotonic() + timeout
                while (left := deadline - time.monotonic()) > 0:
                    birth = wait(min(1.0, left))
                    if birth is not None:
                        return birth
                    crash = console.crash_since(mark)
                    if crash is not None:
                        raise AssertionError(f"node {node} crashed instead of announcing "
                                             f"itself; board console:\n{crash[-3000:]}")
                return None

            yield watched


class VirtualRig(Rig):
    """A virtual ESP32 on a simulated street, wired for every role: every feature."""

    board_definition = "virtual-esp32"
    features = frozenset(FEATURES)

    def __init__(self, station: Station, street: Street, builds: Path, directory: Path,
                 *, heap_bytes: int) -> None:
        super().__init__(station, street.clock, builds, lat=street.latitude,
                         lon=street.longitude)
        self.street = street
        self.board = VirtualBoard("hil-pole", role="all", street=street, heap_bytes=heap_bytes,
                                  directory=directory)
        self.board.start()
        self.port = self.board.repl_port
        self.console = ConsoleTap(lambda: open_pty(self.port))
        self._running = threading.Event()
        self._running.set()
        self._refresher = threading.Thread(target=self._refresh, name="hil-sensors", daemon=True)
        self._refresher.start()

    def close(self) -> None:
        self.console.detach()
        self._running.clear()
        self._refresher.join()
        self.board.stop()

    def _refresh(self) -> None:
        # The virtual board refreshes its sensors four times a real second; on a street
        # running faster than that, the firmware would read the same registers several
        # times (a magnetometer read each street second would look stuck). Refresh at
        # street rate: twice per street second.
        while self._running.is_set():
            self.board.sync()
            time.sleep(min(0.25, 0.5 / self.clock.speed))

    def power_cycle(self) -> None:
        self.board.power_cycle()

    def lamp_samples(self) -> list[LampSample]:
        return [LampSample(s.t, s.duty_u16, int(s.freq)) for s in self.board.lamp_history()]

    def park(self) -> None:
        self.street.park(self.board.bay)
        self.board.sync()

    def leave(self) -> None:
        self.street.leave(self.board.bay)
        self.board.sync()

    def drift(self, celsius: float) -> None:
        self.street.air.mean_celsius += celsius
        self.board.sync()

    def set_pm(self, pm25: float, pm10: float) -> None:
        self.street.air.pm25, self.street.air.pm10 = pm25, pm10
        self.board.sync()

    def _clock_moved(self) -> None:
        self.board.sync()

    @contextlib.contextmanager
    def _flashing(self) -> Iterator[None]:
        # A flash is a technician at the pole, in real time: a sped-up street would make
        # the running application's watchdog (street time) bite in the middle of it.
        speed = self.clock.speed
        if speed != 1:
            self.clock.set_speed(1)
            self.board.sync()
        try:
            yield
        finally:
            if speed != 1:
                self.clock.set_speed(speed)
                self.board.sync()

    def _wifi_args(self) -> list[str]:
        # The street's access point takes any password.
        return ["--wifi-ssid", "hil-street"]

    def _citisense(self, *argv: str) -> str:
        with _env(WIFI_PASSWORD_ENV, "street"):
            return super()._citisense(*argv)


class SerialRig(Rig):
    """A real board on a serial port, with the rig's front-end (if any) for the rest."""

    def __init__(self, station: Station, builds: Path, *, port: str, board_definition: str,
                 declared: frozenset[str], adapter: object | None, lat: float, lon: float,
                 wifi_ssid: str | None) -> None:
        super().__init__(station, StreetClock(), builds, lat=lat, lon=lon)
        self.port = port
        self.board_definition = board_definition
        self.adapter = adapter
        self.wifi_ssid = wifi_ssid
        self.features = frozenset(declared)
        self.console = ConsoleTap(lambda: open_serial(port))

    def close(self) -> None:
        self.console.detach()

    @staticmethod
    def check_features(declared: frozenset[str], adapter: object | None) -> list[str]:
        """Problems with the declared features: unknown, or not backed by the adapter."""
        problems = []
        for feature in sorted(declared):
            if feature not in FEATURES:
                problems.append(f"unknown feature {feature!r} (known: {', '.join(FEATURES)})")
            elif feature == "street-clock":
                problems.append("street-clock: a real board runs on real time")
            else:
                missing = [m for m in ADAPTER_METHODS[feature] if not hasattr(adapter, m)]
                if missing:
                    problems.append(f"{feature} needs a --rig-adapter with "
                                    f"{', '.join(missing)}()")
        return problems

    def power_cycle(self) -> None:
        self.require("power-cycle")
        self._adapter().power_cycle()

    def lamp_samples(self) -> list[LampSample]:
        self.require("lamp-capture")
        return list(self._adapter().lamp_samples())

    def park(self) -> None:
        self.require("parking-stimulus")
        self._adapter().park()

    def leave(self) -> None:
        self.require("parking-stimulus")
        self._adapter().leave()

    def drift(self, celsius: float) -> None:
        self.require("parking-stimulus")
        self._adapter().drift(celsius)

    def set_pm(self, pm25: float, pm10: float) -> None:
        self.require("pm-stimulus")
        self._adapter().set_pm(pm25, pm10)

    def _adapter(self) -> Any:
        assert self.adapter is not None
        return self.adapter

    def _prepare_board(self) -> None:
        # Each test provisions a new node: the previous one's records (downlink counter,
        # queue, schedule, baseline) and config must go, or they would confuse the new one.
        link = SerialLink(self.port)
        try:
            link.exec(_WIPE)
        finally:
            link.close()

    def _wifi_args(self) -> list[str]:
        if self.wifi_ssid is None:
            return []
        if WIFI_PASSWORD_ENV not in os.environ:
            raise AssertionError(f"set ${WIFI_PASSWORD_ENV} to the rig's Wi-Fi password")
        return ["--wifi-ssid", self.wifi_ssid]


_WIPE = deploy.BOARD_REMOVE + """
for _p in ('/state', '/queue', '/config.json'):
    _rm(_p)
"""


def _stamp(unix: float) -> str:
    """Street time in a message: UTC, to the second, with the Unix seconds."""
    when = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return f"{when:%Y-%m-%d %H:%M:%S} UTC ({unix:.0f})"


def load_adapter(spec: str) -> Callable[[], object]:
    """'package.module:factory' -> the factory (called with no arguments)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--rig-adapter {spec!r}: expected package.module:factory")
    factory: Callable[[], object] = getattr(importlib.import_module(module), name)
    return factory


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    saved = os.environ.get(name)
    os.environ.setdefault(name, value)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
