"""The HIL suite's pytest plugin: one set of board-level scenarios, on a virtual ESP32 by
default or on a real board with --board-port.

    pytest hil_tests                                    virtual boards (every feature)
    pytest hil_tests --board-port /dev/ttyUSB0 --board-definition esp32-devkitc \\
        --broker-host 192.168.4.2 --wifi-ssid rig-ap --board-features power-cycle

Fixtures: `board` (hilkit.rig.Rig: commission, deploy, power cycle, lamp capture, parking
and PM stimuli, street time) and `station` (hilkit.station.Station: the broker, gateway
and registry the node talks to). A test declares what its rig must offer with
`@pytest.mark.requires("lamp-capture", ...)` and is skipped, with the reason, on a rig
without it. See README.md, "Running the HIL suite on a real board".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the scenarios import hilkit

from hilkit.rig import FEATURES, Rig, SerialRig, VirtualRig, load_adapter
from hilkit.station import Station

from citisense_boards import mpvm
from citisense_boards.street import Street, StreetClock

# Street time on a virtual board runs this much faster than real time, unless a test
# sets its own speed: scenarios are written in street seconds.
VIRTUAL_SPEED = 10.0
# The heap of a virtual board: an ESP32 without PSRAM's, unless HIL_HEAP (bytes) says
# otherwise, e.g. to find how much a failing scenario needs.
VIRTUAL_HEAP = int(os.environ.get("HIL_HEAP", mpvm.ESP32_HEAP_BYTES))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("citisense HIL", "board-level scenarios on a virtual or real board")
    group.addoption("--board-port", metavar="PORT",
                    help="run the HIL scenarios on the real board on this serial port (a "
                         "device such as /dev/ttyUSB0 or a pyserial URL such as "
                         "rfc2217://rig:4000); default: virtual boards")
    group.addoption("--board-definition", default="esp32-devkitc", metavar="NAME",
                    help="board definition of the real board (default: %(default)s)")
    group.addoption("--board-features", default="", metavar="LIST",
                    help="comma-separated features the real rig has: "
                         + ", ".join(f for f in FEATURES if f != "street-clock"))
    group.addoption("--rig-adapter", metavar="MODULE:FACTORY",
                    help="the rig's front-end: a factory returning an object with the "
                         "methods of its features (hilkit.rig.RigAdapter)")
    group.addoption("--broker-host", metavar="ADDRESS",
                    help="the address of this machine as the real board reaches it: the "
                         "station's broker listens there")
    group.addoption("--wifi-ssid", metavar="SSID",
                    help="Wi-Fi network of the real board (password from "
                         "$CITISENSE_WIFI_PASSWORD)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requires(*features): the rig features a HIL scenario needs "
                   f"({', '.join(FEATURES)}); skipped on a rig without them")
    if config.getoption("board_port"):
        declared = _declared(config)
        adapter = _adapter(config)
        problems = SerialRig.check_features(declared, adapter)
        if not config.getoption("broker_host"):
            problems.append("--broker-host: the address the board reaches this machine at")
        if problems:
            raise pytest.UsageError("HIL rig: " + "; ".join(problems))


def _declared(config: pytest.Config) -> frozenset[str]:
    text: str = config.getoption("board_features") or ""
    return frozenset(f.strip() for f in text.split(",") if f.strip())


_ADAPTER = pytest.StashKey[object]()


def _adapter(config: pytest.Config) -> object | None:
    """The rig's front-end, made once per session."""
    spec: str | None = config.getoption("rig_adapter")
    if not spec:
        return None
    if _ADAPTER not in config.stash:
        config.stash[_ADAPTER] = load_adapter(spec)()
    return config.stash[_ADAPTER]


def _rig_features(config: pytest.Config) -> frozenset[str]:
    if config.getoption("board_port"):
        return _declared(config)
    return VirtualRig.features


@pytest.fixture(scope="session")
def firmware_builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundles made by `citisense build`, shared by the session's scenarios."""
    return tmp_path_factory.mktemp("firmware")


@pytest.fixture
def board(request: pytest.FixtureRequest, tmp_path: Path,
          firmware_builds: Path) -> Iterator[Rig]:
    """The board under test, with its station running; skips the test if the rig lacks a
    feature it declared with @pytest.mark.requires."""
    config = request.config
    needed = {f for mark in request.node.iter_markers("requires") for f in mark.args}
    unknown = needed - set(FEATURES)
    if unknown:
        pytest.fail(f"unknown rig features {sorted(unknown)}: known are {', '.join(FEATURES)}")
    missing = sorted(needed - _rig_features(config))
    if missing:
        pytest.skip("the rig lacks " + "; ".join(f"{f} (a rig that {FEATURES[f]})"
                                                 for f in missing))
    port: str | None = config.getoption("board_port")
    rig: Rig
    if port is None:
        street = Street(clock=StreetClock(speed=VIRTUAL_SPEED))
        station = Station(tmp_path / "station", street.clock).start()
        try:
            rig = VirtualRig(station, street, firmware_builds, tmp_path / "board",
                             heap_bytes=VIRTUAL_HEAP)
        except BaseException:
            station.close()
            raise
    else:
        host: str = config.getoption("broker_host")
        station = Station(tmp_path / "station", StreetClock(), bind="0.0.0.0",
                          node_host=host).start()
        street = Street()
        rig = SerialRig(station, firmware_builds, port=port,
                        board_definition=config.getoption("board_definition"),
                        declared=_declared(config), adapter=_adapter(config),
                        lat=street.latitude, lon=street.longitude,
                        wifi_ssid=config.getoption("wifi_ssid"))
    try:
        yield rig
    finally:
        try:
            board = getattr(rig, "board", None)
            if board is not None and board.log():  # e.g. where a watchdog reset caught the CPU
                print("---- virtual board log ----\n" + "\n".join(board.log()[-20:]))
            tail = rig.console.text()[-12000:]
            if tail:  # shown with a failed test's captured output
                print(f"---- board console (last {len(tail)} characters) ----\n{tail}")
            rig.close()
        finally:
            station.close()


@pytest.fixture
def station(board: Rig) -> Station:
    """The broker, gateway and node registry the board talks to."""
    return board.station


def pytest_report_header(config: pytest.Config) -> str | None:
    port = config.getoption("board_port")
    if port is None:
        return None
    features = ", ".join(sorted(_declared(config))) or "none"
    return f"HIL: real board on {port} ({config.getoption('board_definition')}); rig " \
           f"features: {features}; station broker at {config.getoption('broker_host')}"

