"""Virtual boards for the board tests, and the real mpremote to talk to them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from citisense_boards.virtual_board import VirtualBoard

Completed = subprocess.CompletedProcess[str]
Mpremote = Callable[..., Completed]


def run_mpremote(port: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """mpremote as a technician runs it: a separate process on the serial port."""
    return subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", port, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def mpremote_on() -> Mpremote:
    """mpremote on any port: mpremote_on(port, *args)."""
    return run_mpremote


@pytest.fixture(scope="module")
def board() -> Iterator[VirtualBoard]:
    """One board with every sensor, shared by a test module."""
    with VirtualBoard("shared", role="all") as b:
        yield b


@pytest.fixture
def mpremote(board: VirtualBoard) -> Mpremote:
    """mpremote connected to the module's board; fails the test if mpremote fails."""

    def run(*args: str, check: bool = True, timeout: float = 60) -> Completed:
        done = run_mpremote(board.repl_port, *args, timeout=timeout)
        if check and done.returncode != 0:
            pytest.fail(f"mpremote {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    return run
