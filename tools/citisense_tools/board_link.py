"""Talking to a board's MicroPython REPL: the one small interface flash and doctor use.

A BoardLink runs MicroPython code on the board and returns what it printed. SerialLink
does it over a USB serial port (or the virtual board's pty) with mpremote's transport,
in the raw REPL, so the same code drives a real ESP32 and the virtual board.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import serial.tools.list_ports
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from citisense_tools.errors import CommandError

# USB bridges found on ESP32 boards: Silicon Labs CP210x, WCH CH340/CH9102, FTDI
# (ESP-Prog, Olimex), Espressif's own USB (ESP32-S2/S3/C3).
ESP32_USB_IDS = {
    (0x10C4, 0xEA60), (0x1A86, 0x7523), (0x1A86, 0x55D4), (0x1A86, 0x55D3),
    (0x0403, 0x6001), (0x0403, 0x6010), (0x0403, 0x6015), (0x303A, 0x1001),
}


# Longest silence tolerated within one answer: without it, a board that loses power in
# the middle of a flash would leave the tool waiting forever on a pty.
READ_TIMEOUT = 5.0
RESEND = 0.1  # seconds between Ctrl-C, Ctrl-A while waiting for the REPL


class BoardCodeError(Exception):
    """Code raised an exception on the board; `traceback` is what MicroPython printed."""

    def __init__(self, traceback: str) -> None:
        super().__init__(traceback.strip().splitlines()[-1] if traceback.strip() else "error")
        self.traceback = traceback

    @property
    def filesystem_full(self) -> bool:
        return "ENOSPC" in self.traceback or "Errno 28" in self.traceback


class BoardLink(Protocol):
    name: str  # how messages name the board, e.g. the port

    def exec(self, code: str) -> str:
        """Run `code` on the board; what it printed. BoardCodeError if it raised."""
        ...

    def reset(self) -> None:
        """Hard-reset the board, which starts its application (the link is done)."""
        ...

    def close(self) -> None:
        """Leave the board running its application (the link is done)."""
        ...


def exec_json(link: BoardLink, code: str) -> Any:
    """Run code whose last printed line is JSON; the decoded value."""
    output = link.exec(code)
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise CommandError(f"the board on {link.name} answered nothing to a query")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise CommandError(f"the board on {link.name} gave an unexpected answer: "
                           f"{lines[-1][:200]!r}") from None


def find_port() -> str:
    """The one ESP32-like USB serial port plugged in (for --port auto)."""
    ports = [p for p in serial.tools.list_ports.comports() if (p.vid, p.pid) in ESP32_USB_IDS]
    if not ports:
        raise CommandError("no ESP32 board found on USB: plug it in (a data cable, not a "
                           "charge-only one) or name the port with --port")
    if len(ports) > 1:
        listed = ", ".join(f"{p.device} ({p.description})" for p in ports)
        raise CommandError(f"several boards are plugged in ({listed}): choose one with --port")
    return str(ports[0].device)


def _raw_repl_answers(port: Any, timeout: float) -> bool:
    """Whether MicroPython's raw REPL answers Ctrl-C, Ctrl-A within `timeout` seconds.

    Asked every RESEND seconds: a board that is booting, or resetting in a crash loop,
    takes Ctrl-C only while its main.py runs. Bounded by our clock, not by silence, since
    a board running other firmware may chatter on the line forever (mpremote would wait
    for it to fall silent).
    """
    banner = b"raw REPL; CTRL-B to exit\r\n>"
    saved = port.timeout
    port.timeout = RESEND
    deadline = time.monotonic() + timeout
    seen = b""
    try:
        while time.monotonic() < deadline:
            port.write(b"\r\x03\r\x01")
            seen = (seen + port.read(4096))[-len(banner):]
            if seen == banner:
                return True
        return False
    finally:
        port.timeout = saved


# mpremote prints raw bytes when it fails, to sys.stdout; contextlib.redirect_stdout swaps
# that for the whole process, so links opened from several threads take turns.
_QUIETING = threading.Lock()


class SerialLink:
    """A board on a serial port, in the raw REPL (its application interrupted)."""

    def __init__(self, port: str, baudrate: int = 115200, *,
                 connect_timeout: float = 10.0) -> None:
        self.name = port
        quiet = io.StringIO()  # mpremote prints raw bytes when it fails; we explain instead
        try:
            with _QUIETING, contextlib.redirect_stdout(quiet):
                self._transport = SerialTransport(port, baudrate=baudrate, timeout=READ_TIMEOUT)
        except TransportError as err:
            raise CommandError(f"cannot open {port}: {err} (is the board plugged in? is another "
                               "program, e.g. a serial monitor, using the port?)") from None
        except OSError as err:
            hint = " (add yourself to the dialout group)" if "ermission" in str(err) else ""
            raise CommandError(f"cannot open {port}: {err.strerror or err}{hint}") from None
        self._open = True
        try:
            answered = _raw_repl_answers(self._transport.serial, connect_timeout)
            if answered:
                with _QUIETING, contextlib.redirect_stdout(quiet):
                    self._transport.enter_raw_repl(soft_reset=True)
        except (TransportError, OSError):
            answered = False
        if not answered:
            self._release()
            raise CommandError(
                f"no MicroPython answers on {port}: the board has no MicroPython (write it "
                "with citisense flash --micropython-image FILE), or it is not an ESP32 board, "
                "or a program on it ignores Ctrl-C (press the board's reset button and try "
                "again)")

    def exec(self, code: str) -> str:
        try:
            output: bytes = self._transport.exec(code)
        except TransportExecError as err:
            raise BoardCodeError(str(err.error_output)) from None
        except (TransportError, OSError, struct.error) as err:
            raise CommandError(f"the board on {self.name} stopped answering ({err}): check the "
                               "cable; the board keeps its previous application") from None
        return output.decode("utf-8", "replace")

    def reset(self) -> None:
        if self._open:
            # Typed into the raw REPL without waiting for any answer: the board resets
            # before it could give one, or is already gone.
            with contextlib.suppress(OSError):
                self._transport.serial.write(b"import machine\nmachine.reset()\x04")
                self._transport.serial.flush()
        self._release()

    def close(self) -> None:
        """Restart the board as at power-up: a clean start for its application (a soft
        reboot would keep the chip's peripherals and network as the REPL left them)."""
        self.reset()

    def reset_and_listen(self, done: Callable[[str], bool], timeout: float) -> str | None:
        """Reset as reset() does, then read the board's console until `done(text)` says
        enough was printed, or `timeout` seconds; the text (the link is done). None: the
        console could not be read after the reset (a board's own USB port goes away when
        the chip resets)."""
        if not self._open:
            return None
        port = self._transport.serial
        seen = b""
        try:
            port.write(b"import machine\nmachine.reset()\x04")
            port.flush()
            port.timeout = RESEND
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not done(seen.decode("utf-8", "replace")):
                seen += port.read(4096)
        except OSError:  # pyserial's SerialException is one
            return None
        finally:
            self._release()
        return seen.decode("utf-8", "replace")

    def _release(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(OSError):
                self._transport.close()
