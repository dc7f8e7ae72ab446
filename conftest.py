"""Fixtures shared by every test tier.

A tier whose component is missing fails with a message naming what to install;
only the `hil` tier (a real board on a serial port) may skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from citisense_boards.mpvm import MicroPythonVM

REPO = Path(__file__).resolve().parent
PROTOCOL_PACKAGE = REPO / "protocols" / "citisense_protocols"


@pytest.fixture(scope="session")
def micropython_vm() -> Iterator[MicroPythonVM]:
    """One Node process hosting the MicroPython VM for the whole session."""
    with MicroPythonVM() as vm:
        yield vm


@pytest.fixture
def mp(micropython_vm: MicroPythonVM) -> MicroPythonVM:
    """A freshly reset MicroPython VM with the protocol package in /lib."""
    micropython_vm.reset()
    micropython_vm.install_package(PROTOCOL_PACKAGE)
    return micropython_vm
