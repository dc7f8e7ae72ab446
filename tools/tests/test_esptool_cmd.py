"""Writing MicroPython with esptool: the image is checked and the command lines built,
up to the point where a chip would be needed (none is here; esptool need not exist)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from citisense_boards import definitions
from citisense_tools import cli, esptool_cmd, flash
from citisense_tools.errors import CommandError

ESPTOOL = ["esptool"]


def image(tmp_path: Path, chip_id: int = 0x0000, magic: int = 0xE9) -> Path:
    """The head of an ESP-IDF image: magic, segments, flash mode/size, entry, extended
    header with the chip id at bytes 12-13."""
    head = bytes([magic, 3, 2, 0x20]) + (0x40080000).to_bytes(4, "little")
    extended = bytes([0xEE, 0, 0, 0]) + chip_id.to_bytes(2, "little") + bytes(10)
    path = tmp_path / "ESP32_GENERIC-v1.29.0.bin"
    path.write_bytes(head + extended + bytes(1000))
    return path


def test_write_command_for_an_esp32_board(tmp_path: Path) -> None:
    bin_file = image(tmp_path)
    board = definitions.load("olimex-esp32-poe")
    assert esptool_cmd.write_commands(bin_file, "/dev/ttyUSB0", board, program=ESPTOOL) == [
        ["esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800",
         "write_flash", "-z", "0x1000", str(bin_file)],
    ]


def test_erase_comes_first_when_asked(tmp_path: Path) -> None:
    commands = esptool_cmd.write_commands(image(tmp_path), "COM3", definitions.load(
        "esp32-devkitc"), erase=True, baud=115200, program=ESPTOOL)
    assert commands[0] == ["esptool", "--chip", "esp32", "--port", "COM3", "erase_flash"]
    assert commands[1][5:8] == ["--baud", "115200", "write_flash"]


@pytest.mark.parametrize(("chip_id", "magic", "complaint"), [
    (0x0009, 0xE9, "built for esp32s3, but the board is an esp32"),
    (0x0005, 0xE9, "built for esp32c3"),
    (0x0000, 0x7F, "not an ESP32 firmware image"),
])
def test_an_image_for_another_chip_or_no_image_is_refused(
        tmp_path: Path, chip_id: int, magic: int, complaint: str) -> None:
    with pytest.raises(CommandError, match=complaint):
        esptool_cmd.write_commands(image(tmp_path, chip_id, magic), "/dev/ttyUSB0",
                                   definitions.load("esp32-devkitc"), program=ESPTOOL)


def test_the_virtual_board_takes_no_image(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="takes no MicroPython image"):
        esptool_cmd.write_commands(image(tmp_path), "/dev/pts/3",
                                   definitions.load("virtual-esp32"), program=ESPTOOL)


def test_missing_esptool_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(CommandError, match="pip install esptool"):
        esptool_cmd.esptool_program()


def test_cli_dry_run_shows_the_commands_without_esptool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(cli, "REGISTRARS", [flash.register])
    bin_file = image(tmp_path)
    assert cli.main(["flash", "--micropython-image", str(bin_file), "--board", "esp32-devkitc",
                     "--port", "/dev/ttyUSB0", "--erase", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == [
        "$ esptool.py --chip esp32 --port /dev/ttyUSB0 erase_flash",
        f"$ esptool.py --chip esp32 --port /dev/ttyUSB0 --baud 460800 write_flash -z 0x1000 "
        f"{bin_file}",
        "dry run: nothing was written",
    ]
    assert "loses" in out[0] or "wipes" in out[0]  # the erase warning comes first
