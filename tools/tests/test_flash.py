"""citisense flash: refusals in a technician's words, and the whole flash + commissioning
run against the real MicroPython VM, with births read from what the application prints."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import serial.tools.list_ports

from citisense_boards import definitions
from citisense_tools import board_link, cli, esptool_cmd, operator_cmds
from citisense_tools import flash as flash_command
from citisense_tools.board_state import BoardState, SlotState, probe
from citisense_tools.bundle import Bundle
from citisense_tools.commissioning import Birth, Wait
from citisense_tools.errors import CommandError
from citisense_tools.flash import ConsoleProgress, flash, preflight
from citisense_tools.node_config import birth_digest


class Quiet:
    def step(self, text: str) -> None:
        pass

    def transfer(self, done: int, total: int) -> None:
        pass


class BootBirths:
    """Births as the stand-in application prints them when the VM link boots it."""

    def __init__(self, link: Any, change: Callable[[Birth], Birth] = lambda b: b) -> None:
        self.link = link
        self.change = change
        self.watched: list[int] = []

    @contextmanager
    def watch(self, node: int, key: bytes | None) -> Iterator[Wait]:
        self.watched.append(node)

        def wait(timeout: float) -> Birth | None:
            for said in self.link.births():
                if said["node"] == node:
                    loc = said["loc"]
                    return self.change(Birth(
                        node=node, fw=said["fw"], role=said["role"], board=said["board"],
                        cfg=birth_digest(said["config"]), reset=1,
                        loc=None if loc is None else tuple(loc), verified=key is not None))
            return None

        yield wait


def state(**changes: Any) -> BoardState:
    """A board with MicroPython 1.29 on an ESP32, nothing installed, no config."""
    base = BoardState(
        micropython=(1, 29, 0), mpy=0x306 | (10 << 10), machine="Generic ESP32 module with ESP32",
        platform="esp32", uid="246f28aabbcc", fs_block=4096, fs_free=1_900_000,
        fs_total=2_000_000, romfs_bytes=0x50000, ram_free=100_000, ram_used=10_000,
        reset_cause="PWRON_RESET",
        loader=False, pointer=None, slots={n: SlotState(n, False, False) for n in "ab"},
        boots=None, root_sha256={})
    return dataclasses.replace(base, **changes)


@pytest.mark.micropython
def test_flash_installs_and_commissions_the_node(
        vm_link: Any, make_bundle: Callable[..., Bundle], config_bytes: bytes) -> None:
    births = BootBirths(vm_link)
    birth = flash(vm_link, make_bundle("1.0.0"), Quiet(), config=config_bytes, births=births)
    assert birth is not None
    assert (birth.node, birth.fw, birth.role, birth.board) == (42, "1.0.0", "lighting",
                                                               "esp32-devkitc")
    assert birth.loc == (520907000, 51214000)
    # Re-flash without the config file: the board's own config says who it must be.
    again = flash(vm_link, make_bundle("1.1.0"), Quiet(), births=births)
    assert again is not None and again.fw == "1.1.0" and births.watched == [42, 42]


@pytest.mark.micropython
def test_a_node_that_comes_up_different_is_reported(
        vm_link: Any, make_bundle: Callable[..., Bundle], config_bytes: bytes) -> None:
    def fell_back(birth: Birth) -> Birth:
        return dataclasses.replace(birth, fw="0.9.0", loc=(0, 0), cfg="00" * 8)

    with pytest.raises(CommandError) as failed:
        flash(vm_link, make_bundle("1.0.0"), Quiet(), config=config_bytes,
              births=BootBirths(vm_link, fell_back))
    text = str(failed.value)
    assert text.startswith("not the expected node: it runs firmware 0.9.0, not 1.0.0")
    assert "location 0.0000000, 0.0000000, not 52.0907000, 5.1214000" in text
    assert "its config hash is 0000000000000000, not" in text


@pytest.mark.micropython
def test_a_node_that_stays_silent_is_reported(
        vm_link: Any, make_bundle: Callable[..., Bundle], node_config: Any) -> None:
    config = json.dumps(node_config(node=7)).encode()

    class Silent(BootBirths):
        @contextmanager
        def watch(self, node: int, key: bytes | None) -> Iterator[Wait]:
            yield lambda timeout: None

    with pytest.raises(CommandError, match="no birth message from node 7 within 5 s"):
        flash(vm_link, make_bundle("1.0.0"), Quiet(), config=config, births=Silent(vm_link),
              timeout=5)


@pytest.mark.micropython
def test_another_nodes_config_needs_new_identity(
        vm_link: Any, make_bundle: Callable[..., Bundle], config_bytes: bytes,
        node_config: Any) -> None:
    flash(vm_link, make_bundle("1.0.0"), Quiet(), config=config_bytes)
    other = json.dumps(node_config(node=43)).encode()
    with pytest.raises(CommandError, match=r"this board is node 42, the config file is for "
                                           r"node 43\. Pass --new-identity"):
        flash(vm_link, make_bundle("1.0.0"), Quiet(), config=other)
    birth = flash(vm_link, make_bundle("1.0.0"), Quiet(), config=other, new_identity=True,
                  births=BootBirths(vm_link))
    assert birth is not None and birth.node == 43


def _devkitc(bundle: Bundle) -> dict[str, Any]:
    return definitions.load(bundle.board)


@pytest.mark.parametrize(("board", "complaint"), [
    (state(micropython=(1, 28, 0)), "MicroPython version mismatch: the board runs MicroPython "
                                    "1.28.0, the bundle is built for 1.29"),
    (state(mpy=0x206), "loads .mpy v6.2, the bundle has .mpy v6.3"),
    (state(machine="Generic ESP32S3 module with ESP32S3"), "wrong board: it says it is"),
    (state(), "this board has no config"),
    (state(config_sha8="00" * 8, config={"node": 9, "board": "olimex-esp32-poe",
                                         "role": "lighting"}),
     "wrong board: this board is provisioned for board olimex-esp32-poe"),
    (state(config_sha8="00" * 8, config={"node": 9, "board": "esp32-devkitc",
                                         "role": "parking"}),
     "this board is provisioned for the parking role, the bundle is for lighting"),
])
def test_preflight_refuses_what_would_not_run(make_bundle: Callable[..., Bundle],
                                              board: BoardState, complaint: str) -> None:
    bundle = make_bundle("1.0.0")
    with pytest.raises(CommandError) as refused:
        preflight(board, bundle, _devkitc(bundle), None)
    assert complaint in str(refused.value)


def test_preflight_checks_the_config_file_too(make_bundle: Callable[..., Bundle],
                                              node_config: Any) -> None:
    bundle = make_bundle("1.0.0")
    with pytest.raises(CommandError, match="the config file is for board virtual-esp32"):
        preflight(state(), bundle, _devkitc(bundle), node_config(board="virtual-esp32"))
    preflight(state(), bundle, _devkitc(bundle), node_config())


def test_console_progress_without_a_terminal_prints_quarters() -> None:
    out = io.StringIO()
    progress = ConsoleProgress(out)
    progress.step("writing")
    for done in range(0, 10_241, 512):
        progress.transfer(done, 10_240)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1] writing"
    assert [line.split("(")[1] for line in lines[1:]] == ["0%)", "25%)", "50%)", "75%)",
                                                          "100%)"]


class _Port:
    def __init__(self, device: str, vid: int | None, pid: int | None) -> None:
        self.device, self.vid, self.pid = device, vid, pid
        self.description = f"USB device {device}"


@pytest.mark.parametrize(("ports", "outcome"), [
    ([], "no ESP32 board found on USB"),
    ([_Port("/dev/ttyS0", None, None), _Port("/dev/ttyUSB0", 0x10C4, 0xEA60)], "/dev/ttyUSB0"),
    ([_Port("/dev/ttyUSB0", 0x10C4, 0xEA60), _Port("/dev/ttyACM0", 0x1A86, 0x55D4)],
     "several boards are plugged in"),
])
def test_port_auto_finds_the_one_esp32(monkeypatch: pytest.MonkeyPatch, ports: list[_Port],
                                       outcome: str) -> None:
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: ports)
    if outcome.startswith("/dev/"):
        assert board_link.find_port() == outcome
    else:
        with pytest.raises(CommandError, match=outcome):
            board_link.find_port()


@pytest.fixture
def nobody_logged_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No login, no token, no broker in the environment; only the flash command."""
    monkeypatch.setenv(operator_cmds.CONFIG_ENV, str(tmp_path / "no-login.json"))
    for name in (operator_cmds.TOKEN_ENV, operator_cmds.URL_ENV, flash_command.BROKER_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "REGISTRARS", [flash_command.register])


@pytest.mark.usefixtures("nobody_logged_in")
@pytest.mark.parametrize("with_image", [False, True])
def test_cli_flash_refuses_when_nothing_would_watch_the_birth(
        make_bundle: Callable[..., Bundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], with_image: bool) -> None:
    touched: list[str] = []
    monkeypatch.setattr(flash_command, "SerialLink", lambda port: touched.append(port))
    monkeypatch.setattr(esptool_cmd, "run_commands", lambda commands: touched.append("esptool"))
    image = tmp_path / "micropython.bin"
    image.write_bytes(b"\xe9" + bytes(4095))
    argv = ["flash", "--bundle", str(make_bundle("1.0.0").root), "--port", "/dev/ttyUSB0"]
    if with_image:
        argv += ["--micropython-image", str(image)]
    assert cli.main(argv) == 2
    said = capsys.readouterr()
    assert said.out == "" and touched == []  # neither MicroPython nor the bundle written
    assert said.err.startswith("citisense flash: not flashing: nothing would check that the "
                               "node comes online")
    for way_out in ("citisense login", "--broker mqtt://", "--no-watch",
                    "The board was not touched."):
        assert way_out in said.err


def test_cli_flash_dry_run_of_a_bundle_touches_nothing(
        make_bundle: Callable[..., Bundle], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    touched: list[str] = []
    monkeypatch.setattr(flash_command, "SerialLink", lambda port: touched.append(port))
    argv = ["flash", "--bundle", str(make_bundle("1.0.0").root), "--port", "/dev/ttyUSB0",
            "--no-watch", "--dry-run"]
    assert cli.main(argv) == 2
    assert touched == [] and "The board was not touched." in capsys.readouterr().err


@pytest.mark.micropython
@pytest.mark.usefixtures("nobody_logged_in")
def test_cli_flash_no_watch_installs_and_says_what_it_did_not_check(
        vm_link: Any, make_bundle: Callable[..., Bundle], config_bytes: bytes, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node-42.json"
    config.write_bytes(config_bytes)
    monkeypatch.setattr(flash_command, "SerialLink", lambda port: vm_link)
    assert cli.main(["flash", "--bundle", str(make_bundle("1.0.0").root), "--config",
                     str(config), "--port", "/dev/ttyUSB0", "--no-watch"]) == 0
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith("flashed citisense 1.0.0 (lighting on esp32-devkitc) and reset the "
                           "board, NOT commissioned (--no-watch).")
    assert "Verified: the board's MicroPython, chip and config match the bundle" in last
    assert "Not verified: that the application starts, and that the node connects" in last
    assert "commissioned node" not in last
    # It did flash: the board boots the new application.
    assert probe(vm_link).slots["a"].version == "1.0.0"
    assert [b["fw"] for b in vm_link.births()] == ["1.0.0"]
