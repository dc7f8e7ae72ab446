# mypy: ignore-errors
# asyncio for the virtual ESP32: the API of MicroPython's asyncio (extmod),
# with a run loop that blocks in select.poll like the one on a real board, so
# asyncio.run(main()) in main.py holds the REPL until it ends or Ctrl-C.
# Submodules load on first use to keep RAM small.
from .core import *  # noqa: F403

__version__ = (3, 0, 0)

_attrs = {
    "wait_for": "funcs",
    "wait_for_ms": "funcs",
    "gather": "funcs",
    "Event": "event",
    "ThreadSafeFlag": "event",
    "Lock": "lock",
    "open_connection": "stream",
    "Stream": "stream",
    "StreamReader": "stream",
    "StreamWriter": "stream",
}


def __getattr__(attr):
    module = _attrs.get(attr)
    if module is None:
        raise AttributeError(attr)
    value = getattr(__import__(module, None, None, True, 1), attr)
    globals()[attr] = value
    return value
