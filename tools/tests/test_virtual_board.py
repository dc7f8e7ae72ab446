"""citisense flash and doctor against a virtual ESP32: mpremote's serial transport on the
board's pty, machine.reset(), the loader booting from the board's own flash, and a power
cut (the board process killed) in the middle of a flash."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from citisense_boards.virtual_board import VirtualBoard
from citisense_tools import build, cli, doctor, operator_cmds
from citisense_tools import flash as flash_command
from citisense_tools.board_link import SerialLink
from citisense_tools.board_state import probe
from citisense_tools.bundle import Bundle
from citisense_tools.commissioning import Birth, Wait
from citisense_tools.deploy import install
from citisense_tools.errors import CommandError
from citisense_tools.flash import flash
from citisense_tools.node_config import birth_digest
from citisense_tools.power_cut_link import PowerCut, PowerCutLink

pytestmark = pytest.mark.virtual_board


class Quiet:
    def step(self, text: str) -> None:
        pass

    def transfer(self, done: int, total: int) -> None:
        pass


class Console:
    """Listens to the board's console. Opened without pyserial, whose open() flushes the
    pty's input queue: it would eat the prompt mpremote is waiting for."""

    def __init__(self, port: str) -> None:
        self.fd = os.open(port, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)

    def read(self, wait: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], wait)
        return os.read(self.fd, 4096) if ready else b""

    def drain(self) -> None:
        while self.read(0.05):
            pass

    def close(self) -> None:
        os.close(self.fd)


@contextmanager
def console(port: str) -> Iterator[Console]:
    listening = Console(port)
    try:
        yield listening
    finally:
        listening.close()


def read_births(listening: Console, timeout: float) -> list[dict[str, Any]]:
    """Birth lines the stand-in application prints on the console, until one arrives."""
    deadline = time.monotonic() + timeout
    text = b""
    while b"BIRTH " not in text and time.monotonic() < deadline:
        text += listening.read(0.1)
    while b"\n" not in text[text.rfind(b"BIRTH "):] and time.monotonic() < deadline:
        text += listening.read(0.1)  # the rest of the line
    return [json.loads(line[len("BIRTH "):]) for line in text.decode(errors="replace")
            .splitlines() if line.startswith("BIRTH ")]


class ConsoleBirths:
    """Births as the stand-in application prints them on the board's console."""

    def __init__(self, port: str) -> None:
        self.port = port

    @contextmanager
    def watch(self, node: int, key: bytes | None) -> Iterator[Wait]:
        with console(self.port) as listening:
            def wait(timeout: float) -> Birth | None:
                for said in read_births(listening, timeout):
                    loc = said["loc"]
                    return Birth(node=said["node"], fw=said["fw"], role=said["role"],
                                 board=said["board"], cfg=birth_digest(said["config"]),
                                 reset=1, loc=None if loc is None else tuple(loc),
                                 verified=False)
                return None

            yield wait


@pytest.fixture
def board() -> Iterator[VirtualBoard]:
    with VirtualBoard("tools-test", role="lighting") as started:
        yield started


@pytest.fixture
def config(tmp_path: Path, node_config: Callable[..., dict[str, object]]) -> Path:
    path = tmp_path / "node-42.json"
    path.write_text(json.dumps(node_config(board="virtual-esp32")))
    return path


def test_doctor_reads_a_fresh_virtual_board(board: VirtualBoard, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "REGISTRARS", [doctor.register])
    assert cli.main(["doctor", "--port", board.repl_port]) == 0
    text = capsys.readouterr().out
    assert "Virtual ESP32 (citisense) with ESP32" in text
    assert "micropython  1.29.0 (.mpy v6.3)" in text
    assert "reset cause  power-on" in text
    assert "no complete application" in text and "no config" in text
    # Nothing to restart: it says the node stays offline, not that anything runs.
    assert text.rstrip().splitlines()[-1] == (
        "after check  the board was reset after the check; it has no citisense loader, so no "
        "application runs: the node is offline until citisense flash installs one")


def test_flash_commissions_a_virtual_board(
        board: VirtualBoard, make_bundle: Callable[..., Bundle], config: Path) -> None:
    bundle = make_bundle("1.0.0", board="virtual-esp32")
    link = SerialLink(board.repl_port)
    birth = flash(link, bundle, Quiet(), config=config.read_bytes(),
                  births=ConsoleBirths(board.repl_port), timeout=20)
    assert birth is not None and (birth.node, birth.fw) == (42, "1.0.0")
    assert [e.cause for e in board.events() if e.kind == "reset"] == ["SOFT"]  # machine.reset()
    # The new application survives a power cut: it is in the board's flash.
    with console(board.repl_port) as listening:
        listening.drain()
        board.power_cycle()
        assert [b["fw"] for b in read_births(listening, 60)] == ["1.0.0"]


def test_cli_flash_then_doctor(board: VirtualBoard, make_bundle: Callable[..., Bundle],
                               config: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle("1.0.0", board="virtual-esp32")
    monkeypatch.setattr(cli, "REGISTRARS", [flash_command.register, doctor.register])
    monkeypatch.setenv(operator_cmds.CONFIG_ENV, str(config.parent / "no-login.json"))
    for name in (operator_cmds.TOKEN_ENV, flash_command.BROKER_ENV):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["flash", "--bundle", str(bundle.root), "--config", str(config),
                     "--port", board.repl_port, "--no-watch"]) == 0
    flashed = capsys.readouterr().out
    assert "[1] reading the board on" in flashed and "switching to slot a" in flashed
    assert "NOT commissioned (--no-watch)" in flashed.rstrip().splitlines()[-1]
    assert cli.main(["doctor", "--port", board.repl_port]) == 0
    text = capsys.readouterr().out
    assert "slot a       citisense 1.0.0, lighting on virtual-esp32, flash #1" in text
    assert "node 42, lighting on virtual-esp32" in text and "problems     none" in text
    assert json.loads(config.read_text())["key"] not in text
    # The check stopped the application; doctor reset the board and saw the loader start
    # the application again (its line comes right before the application's main()).
    assert text.rstrip().splitlines()[-1] == (
        "after check  the application was stopped for the check and restarted: 1.0.0 from "
        "slot a")
    board.wait_for_boot(3)  # power-on, after the flash, after the doctor
    assert [e.cause for e in board.events() if e.kind == "reset"] == ["SOFT", "SOFT"]


def test_a_board_without_micropython_is_named() -> None:
    # A board running other firmware: it chatters on its console but has no REPL.
    master, slave = pty.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def chatter() -> None:
        while not stop.wait(0.02):
            with contextlib.suppress(OSError):
                os.write(master, b"sensor reading 42\r\n")

    talker = threading.Thread(target=chatter, daemon=True)
    talker.start()
    try:
        with pytest.raises(CommandError, match="no MicroPython answers on"):
            SerialLink(os.ttyname(slave), connect_timeout=1.0)
    finally:
        stop.set()
        talker.join()
        os.close(master)
        os.close(slave)


def test_the_real_firmware_is_flashed_and_started(
        board: VirtualBoard, config: Path, tmp_path: Path) -> None:
    # Twice: with both slots holding the whole firmware, the board's heap (an ESP32's
    # without PSRAM) must still suffice for the flash and for the loader at boot.
    for version, slot in (("1.0.0", "a"), ("1.0.1", "b")):
        firmware = build.build("lighting", "virtual-esp32", tmp_path / version, version=version)
        started = f"citisense: {version} from slot {slot}".encode()
        with console(board.repl_port) as listening:
            flash(SerialLink(board.repl_port), firmware, Quiet(), config=config.read_bytes())
            deadline = time.monotonic() + 20
            said = b""
            while started not in said and time.monotonic() < deadline:
                said += listening.read(0.1)
        assert started in said, said


@pytest.mark.parametrize("budget", [3, 8, 13, 18])  # image, image, manifest, pointer
def test_a_power_cut_during_a_flash_keeps_a_working_board(
        board: VirtualBoard, make_bundle: Callable[..., Bundle], config: Path,
        budget: int) -> None:
    link = SerialLink(board.repl_port)
    install(link, make_bundle("1.0.0", board="virtual-esp32"), probe(link), Quiet(),
            config=config.read_bytes())
    plug = PowerCutLink(link, budget, board.power_cycle)  # lets go of the port, kills the board
    with console(board.repl_port) as listening:
        with pytest.raises(PowerCut):
            install(plug, make_bundle("2.0.0", board="virtual-esp32"), probe(link), Quiet(),
                    chunk=256)
        versions = [b["fw"] for b in read_births(listening, 60)]  # returns at the first
    assert versions in (["1.0.0"], ["2.0.0"])
    # And the next flash goes through.
    again = SerialLink(board.repl_port)
    install(again, make_bundle("2.0.0", board="virtual-esp32"), probe(again), Quiet())
    assert probe(again).slots[probe(again).boots or "?"].version == "2.0.0"
    again.close()
