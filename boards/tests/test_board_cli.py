"""`citisense board start` and a board running firmware from main.py."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from citisense_boards.virtual_board import VirtualBoard

pytestmark = [pytest.mark.virtual_board, pytest.mark.micropython]

Mpremote = Callable[..., subprocess.CompletedProcess[str]]


def test_board_start_prints_the_repl_port_first_and_stops_on_ctrl_c(
    mpremote_on: Mpremote, tmp_path: Path
) -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "citisense_boards.board_cli", "board", "start",
         "--role", "parking", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert cli.stdout is not None
        port = cli.stdout.readline().strip()
        assert stat.S_ISCHR(os.stat(port).st_mode)
        out = mpremote_on(port, "exec", "open('hello.txt', 'w').write('hi')\nprint('up')")
        assert out.stdout.strip() == "up"
    finally:
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=20)
    assert cli.returncode == 0, err
    assert (tmp_path / "flash" / "hello.txt").read_text() == "hi"  # --dir keeps the flash


FIRMWARE = """
import asyncio, network
from machine import PWM, Pin

async def blink(lamp):
    level = 0
    while True:
        level = 65535 - level
        lamp.duty_u16(level)
        await asyncio.sleep_ms(100)

async def main():
    lamp = PWM(Pin(25), freq=1000, duty_u16=0)
    await blink(lamp)

asyncio.run(main())
"""


def test_mpremote_interrupts_firmware_running_forever_in_main(
    mpremote_on: Mpremote, tmp_path: Path
) -> None:
    (tmp_path / "flash").mkdir()
    (tmp_path / "flash" / "main.py").write_text(FIRMWARE)
    with VirtualBoard("looping", role="lighting", directory=tmp_path) as board:
        assert board.wait_for(lambda: len(board.lamp_history()) >= 5, timeout=10)
        # Like on a USB board: mpremote's Ctrl-C stops main.py, then it has the REPL.
        assert mpremote_on(board.repl_port, "eval", "1 + 1").stdout.strip() == "2"
        blinks = len(board.lamp_history())
        assert board.lamp_history()[-1].duty_u16 == 0  # the soft reset stopped the PWM
        # A hard reset starts the firmware again.
        mpremote_on(board.repl_port, "reset")
        assert board.wait_for(lambda: len(board.lamp_history()) >= blinks + 5, timeout=10)
