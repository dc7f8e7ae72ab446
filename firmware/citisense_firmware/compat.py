"""The one shim for MicroPython-isms, so every other module imports under CPython too.

`const` folds at compile time on MicroPython and is the identity on CPython.
`ticks_ms`/`ticks_add`/`ticks_diff` follow MicroPython's wrapping millisecond ticks
(period 2**30): compare ticks only through `ticks_diff`, never with `<`.
`unload` forgets a module on a board.
"""

import sys

_BOARD = sys.implementation.name == "micropython"

try:
    from micropython import const
except ImportError:

    def const(value: int) -> int:
        return value


try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms
except ImportError:
    import time

    _TICKS_MASK = const((1 << 30) - 1)
    _TICKS_HALF = const(1 << 29)

    def ticks_ms() -> int:
        return int(time.monotonic() * 1000) & _TICKS_MASK

    def ticks_add(ticks: int, delta: int) -> int:
        return (ticks + delta) & _TICKS_MASK

    def ticks_diff(end: int, start: int) -> int:
        """Signed distance end - start, correct across one wrap of the tick counter."""
        return ((end - start + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF

    def sleep_ms(ms: int) -> None:
        time.sleep(ms / 1000)


def unload(name: str) -> None:
    """Forget module `name` (a dotted name) on a board, so that its functions and data go
    back to the heap: code needed a few times a day need not stay loaded. Under CPython
    (fleet simulator, tests) the module stays: importing it again costs time there."""
    if _BOARD:
        sys.modules.pop(name, None)
        dot = name.rfind(".")
        parent = sys.modules.get(name[:dot])
        if parent is not None and hasattr(parent, name[dot + 1:]):
            delattr(parent, name[dot + 1:])  # the import also bound it in its package
