"""Writing a MicroPython image with esptool: check the image, build the command lines.

The image is checked before anything touches the board: an ESP32 image starts with the
magic byte 0xE9 and names its chip in the extended header (esptool's image format,
bytes 12-13, little endian), so an image for another chip is refused here instead of
bricking a board on a pole.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from citisense_tools.errors import CommandError

IMAGE_MAGIC = 0xE9
CHIP_IDS = {  # esptool chip name -> image header chip id
    "esp32": 0x0000, "esp32s2": 0x0002, "esp32c3": 0x0005, "esp32s3": 0x0009,
    "esp32c2": 0x000C, "esp32c6": 0x000D, "esp32h2": 0x0010,
}
DEFAULT_BAUD = 460800


def check_image(image: Path, chip: str) -> None:
    """Refuse a file that is not a MicroPython image for `chip` (esptool's chip name)."""
    try:
        with image.open("rb") as f:
            head = f.read(16)
    except OSError as err:
        raise CommandError(f"cannot read the image {image}: {err.strerror or err}") from None
    if len(head) < 16 or head[0] != IMAGE_MAGIC:
        raise CommandError(f"{image} is not an ESP32 firmware image (.bin): download the .bin "
                           "file for the board from micropython.org/download")
    chip_id = int.from_bytes(head[12:14], "little")
    if chip_id != CHIP_IDS[chip]:
        other = next((name for name, cid in CHIP_IDS.items() if cid == chip_id), f"id {chip_id}")
        raise CommandError(f"{image} is built for {other}, but the board is an {chip}: "
                           "download the image for the right chip")


def esptool_program() -> list[str]:
    """How to run esptool here; CommandError if it is not installed."""
    if importlib.util.find_spec("esptool") is not None:
        return [sys.executable, "-m", "esptool"]
    for name in ("esptool", "esptool.py"):
        found = shutil.which(name)
        if found:
            return [found]
    raise CommandError("esptool is not installed: pip install esptool")


def write_commands(image: Path, port: str, board: dict[str, Any], *, erase: bool = False,
                   baud: int = DEFAULT_BAUD, program: list[str] | None = None) -> list[list[str]]:
    """The esptool command lines that write `image` to the board on `port`."""
    spec = board.get("image")
    if not spec:
        raise CommandError(f"board {board['name']} takes no MicroPython image (it brings its "
                           "own MicroPython)")
    chip = str(spec["esptool_chip"])
    check_image(image, chip)
    program = program or esptool_program()
    base = [*program, "--chip", chip, "--port", port]
    commands = []
    if erase:
        commands.append([*base, "erase_flash"])
    commands.append([*base, "--baud", str(baud), "write_flash", "-z",
                     f"0x{int(spec['offset']):x}", str(image)])
    return commands


def show(command: list[str]) -> str:
    return "$ " + shlex.join(command)


def run_commands(commands: list[list[str]]) -> None:
    for command in commands:
        print(show(command), flush=True)
        try:
            result = subprocess.run(command, check=False)
        except OSError as err:
            raise CommandError(f"cannot run esptool: {err.strerror or err}") from None
        if result.returncode != 0:
            raise CommandError(
                f"esptool failed (exit {result.returncode}): hold the board's BOOT button "
                "while esptool connects, check the port and the cable, and try again; the "
                "board keeps whatever it had if the write did not start"
            )
