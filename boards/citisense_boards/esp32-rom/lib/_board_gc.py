# mypy: ignore-errors
# gc for the virtual board: collect() really collects, mid-program, as on a board
# (the port alone would defer it until control returns to the JS event loop), and
# the heap figures leave out what the board's own modules take.
import gc as _gc

import _vboard
from micropython import const

# The port adds what it could still grow by (128 MiB); the board's heap cannot grow.
_MAX_NEW_SPLIT = const(128 * 1024 * 1024)

disable = _gc.disable
enable = _gc.enable
isenabled = _gc.isenabled
threshold = _gc.threshold

# Heap that firmware on an ESP32 does not pay for: the board's modules (C or
# frozen there) and the ballast that fills the rest of their reserve.
_rom = 0
_ballast = None


def set_rom(allocated, ballast):
    global _rom, _ballast
    _rom, _ballast = allocated, ballast


def mem_alloc():
    return _gc.mem_alloc() - _rom


def mem_free():
    return _gc.mem_free() - _MAX_NEW_SPLIT


def collect():
    _gc.collect()  # marks the collection as pending
    _vboard.collect()
