"""Listening to the board's console while its application runs: what it printed explains
a failed scenario, and a traceback or a watchdog reset ends a wait at once instead of at
its timeout.

The tap lets go of the port whenever a tool needs the REPL (a flash, a wipe): two readers
on one serial port would each get half of the bytes.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import Any

KEEP = 32 * 1024  # bytes of console output kept
# What a board prints when its application died: a traceback, or the ROM's line after a
# watchdog or panic reset.
CRASHES = ("Traceback (most recent call last)", "rst:0x7 ", "TG0WDT_SYS_RESET",
           "Guru Meditation")

Reader = tuple[Callable[[float], bytes], Callable[[], None]]  # (read(timeout), close())


def open_pty(path: str) -> Reader:
    """A virtual board's console. Opened without pyserial, whose open() flushes the pty's
    input queue."""
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)

    def read(timeout: float) -> bytes:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(fd, 4096)
        except BlockingIOError:
            return b""

    return read, lambda: os.close(fd)


def open_serial(url: str) -> Reader:
    """A real board's console, without touching DTR/RTS (they reset many boards)."""
    import serial

    port: Any = serial.serial_for_url(url, 115200, timeout=0, do_not_open=True)
    port.dtr = False
    port.rts = False
    port.open()

    def read(timeout: float) -> bytes:
        port.timeout = timeout
        data: bytes = port.read(4096)
        return data

    return read, port.close


class ConsoleTap:
    def __init__(self, opener: Callable[[], Reader]) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._text = bytearray()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def attach(self) -> None:
        if self._thread is not None:
            return
        read, close = self._opener()
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, args=(read, close),
                                        name="hil-console", daemon=True)
        self._thread.start()

    def detach(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    @contextlib.contextmanager
    def released(self) -> Any:
        """Let go of the port for the duration (a tool needs the REPL)."""
        attached = self._thread is not None
        self.detach()
        try:
            yield
        finally:
            if attached:
                self.attach()

    def text(self) -> str:
        with self._lock:
            return self._text.decode("utf-8", "replace")

    def mark(self) -> int:
        """A position in the output; crash_since(mark) looks only at what follows."""
        with self._lock:
            return self._total

    def crash_since(self, mark: int) -> str | None:
        """The console output since `mark` if it shows the application dying, else None."""
        with self._lock:
            start = max(0, len(self._text) - (self._total - mark))
            recent = self._text[start:].decode("utf-8", "replace")
        return recent if any(sign in recent for sign in CRASHES) else None

    _total = 0  # bytes seen since the tap was made

    def _listen(self, read: Callable[[float], bytes], close: Callable[[], None]) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = read(0.1)
                except OSError:
                    data = b""
                    self._stop.wait(0.1)  # a board being powered off: try again
                if data:
                    with self._lock:
                        self._text += data
                        self._total += len(data)
                        del self._text[:-KEEP]
        finally:
            with contextlib.suppress(OSError):
                close()
