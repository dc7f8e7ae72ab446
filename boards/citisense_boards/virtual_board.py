"""A virtual ESP32 board: the real MicroPython VM behind a serial port.

The board runs the official MicroPython WebAssembly port in a Node process
(board_host.mjs). Its REPL and its uplink UART appear on pseudo-terminals, so
mpremote, pyserial and the gateway use it like a board on a USB cable. Its
filesystem is a host directory that outlives resets. Its sensors and lamp
face a simulated street (street.py) that tests control.

    with VirtualBoard(role="lighting") as board:
        subprocess.run(["mpremote", "connect", board.repl_port, "exec", "print(1)"])
        board.street.clock.set_speed(60)
        board.lamp_history()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from citisense_boards import sensors, wiring
from citisense_boards.definitions.virtual_esp32 import BOARD as VIRTUAL_ESP32
from citisense_boards.mpvm import ESP32_HEAP_BYTES, MicroPythonUnavailable, find_micropython_mjs
from citisense_boards.rom_image import build_rom_image
from citisense_boards.street import Street

HOST_SCRIPT = Path(__file__).with_name("board_host.mjs")
REFRESH_S = 0.25  # how often the street updates the board's sensors (real time)
RTC_EPOCH_MS = 946_684_800_000  # 2000-01-01: an ESP32's clock after power-on
MAX_TTY_BACKLOG = 256 * 1024
ROMFS_PARTITION_BYTES = VIRTUAL_ESP32["romfs"]


class BoardError(RuntimeError):
    """The virtual board failed (it did not boot, or its process died)."""


@dataclass(frozen=True)
class LampSample:
    """The lamp driver's input from time t (street Unix seconds) on.

    duty_u16 is None while the pin is not driven (during a reset): the driver
    then falls back to its own default level. freq is the PWM frequency in Hz
    (0 while not driven).
    """

    t: float
    duty_u16: int | None
    freq: int = 0


@dataclass(frozen=True)
class BoardEvent:
    """A boot or a reset, at street time t."""

    t: float
    kind: str  # "boot", "soft-boot" or "reset"
    cause: str = ""


class _Pty:
    """A pseudo-terminal pair in raw mode; the board keeps the master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no ONLCR: bytes pass unchanged
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


class _Relay(threading.Thread):
    """Copies bytes between the ptys and the board process's sockets."""

    def __init__(self, pairs: list[tuple[_Pty, socket.socket]]) -> None:
        super().__init__(daemon=True, name="board-relay")
        self._pairs = pairs
        self._stop_r, self._stop_w = os.pipe()

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self.join()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._stop_r, selectors.EVENT_READ)
        backlog = [bytearray() for _ in self._pairs]
        for i, (pty, sock) in enumerate(self._pairs):
            sel.register(pty.master, selectors.EVENT_READ, ("pty", i))
            sel.register(sock, selectors.EVENT_READ, ("sock", i))
        while True:
            for key, events in sel.select():
                if key.fd == self._stop_r:
                    return
                side, i = key.data
                pty, sock = self._pairs[i]
                if side == "sock":
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        return  # the board process is gone
                    if len(backlog[i]) < MAX_TTY_BACKLOG:  # nobody reads: drop, like a UART
                        backlog[i] += data
                elif events & selectors.EVENT_READ:
                    try:
                        sock.sendall(os.read(pty.master, 4096))
                    except BlockingIOError:
                        pass
                    except OSError:
                        return  # the board process is gone
                if backlog[i]:
                    with contextlib.suppress(BlockingIOError):
                        del backlog[i][: os.write(pty.master, backlog[i])]
                writable = selectors.EVENT_WRITE if backlog[i] else 0
                sel.modify(pty.master, selectors.EVENT_READ | writable, ("pty", i))


class VirtualBoard:
    """A virtual ESP32 on a street; a context manager that starts and stops it."""

    def __init__(
        self,
        name: str = "board",
        *,
        role: str = "all",
        street: Street | None = None,
        heap_bytes: int = ESP32_HEAP_BYTES,
        directory: Path | None = None,
        rtc_synced: bool = True,
    ) -> None:
        if role not in wiring.ROLES:
            raise ValueError(f"unknown role {role!r}: choose one of {', '.join(wiring.ROLES)}")
        self.name = name
        self.role = role
        self.street = street or Street()
        self.heap_bytes = heap_bytes
        self.rtc_synced = rtc_synced
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix=f"board-{name}-"))
        self.flash_dir = self.directory / "flash"
        self.bay = name
        self.unique_id = bytes.fromhex("240ac4") + hashlib.sha256(name.encode()).digest()[:3]
        self._parts = wiring.ROLES[role]
        self._rng = random.Random(name)
        self._lock = threading.Condition()
        self._send_lock = threading.Lock()
        self._sensors_lock = threading.RLock()  # sensor models: refresher vs event reader
        self._lamp: list[LampSample] = []
        self._pins: dict[int, list[tuple[float, int | None]]] = {}
        self._events: list[BoardEvent] = []
        self._log: list[str] = []
        self._ptys: list[_Pty] = []
        self._proc: subprocess.Popen[str] | None = None
        self._relay: _Relay | None = None
        self._reader: threading.Thread | None = None
        self._refresher: threading.Thread | None = None
        self._running = False
        self._sent: dict[str, object] = {}
        self._powered_at = 0.0
        # The RTC chip runs on its backup battery: it outlives the board's power cycles.
        self._rtc = sensors.PCF8563(self.street.now) if "rtc" in self._parts else None
        self._rtc_set = rtc_synced  # the ESP32's own RTC; a power cut resets it to 2000
        self.start_seconds: float | None = None  # power-on to a booted VM, in real seconds

    # ---- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 20.0) -> VirtualBoard:
        """Power the board on and wait until MicroPython has booted."""
        self.launch()
        try:
            self.wait_for_boot(1, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> None:
        """Power the board on without waiting for it to boot."""
        if self._running:
            raise BoardError(f"board {self.name} is already running")
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self._ptys = [_Pty(), _Pty()]
        self._running = True
        self._spawn()
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)
        self._refresher.start()

    def stop(self) -> None:
        """Power the board off, for good."""
        if not self._running:
            return
        self._running = False
        self._kill()
        if self._refresher:
            self._refresher.join()
        for pty in self._ptys:
            pty.close()
        self._ptys = []
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def power_cycle(self, timeout: float = 20.0) -> None:
        """Cut the power and turn it back on: RAM, RTC memory and the ESP32's clock are lost
        (it restarts at 2000-01-01), flash and the battery-backed RTC chip are kept."""
        booted = self.boot_count()
        self._kill()
        self._rtc_set = False
        self._spawn()
        self.wait_for_boot(booted + 1, timeout)

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- what tests look at ---------------------------------------------------
    @property
    def repl_port(self) -> str:
        """The serial port of the REPL, for mpremote (/dev/pts/N)."""
        return self._ptys[0].path

    @property
    def pid(self) -> int:
        """The board process (one Node process: the board and its CPU thread)."""
        if self._proc is None:
            raise BoardError(f"board {self.name} is off")
        return self._proc.pid

    @property
    def uart_port(self) -> str:
        """The serial port of the uplink UART (the RS-485 side, for a gateway)."""
        return self._ptys[1].path

    def lamp_history(self) -> list[LampSample]:
        """Every change of the lamp driver's PWM input since power-on."""
        with self._lock:
            return list(self._lamp)

    def pin_history(self, pin: int) -> list[tuple[float, int | None]]:
        """Level changes of a digital output: (street time, 0, 1 or None when released)."""
        with self._lock:
            return list(self._pins.get(pin, []))

    def events(self) -> list[BoardEvent]:
        """Boots and resets since power-on."""
        with self._lock:
            return list(self._events)

    def log(self) -> list[str]:
        """Problems the board process reported (a healthy board has none)."""
        with self._lock:
            return list(self._log)

    def boot_count(self) -> int:
        """Hard boots so far: power-on and every reset (soft reboots not counted)."""
        with self._lock:
            return sum(1 for e in self._events if e.kind == "boot")

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until predicate() holds: checked whenever the board reports something
        and every 50 ms (for conditions outside the board, like files in its flash)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
            return True

    def wait_for_boot(self, count: int, timeout: float = 20.0) -> None:
        """Wait for the count-th hard boot: the VM is up (boot.py and main.py start then)."""
        if not self.wait_for(lambda: self.boot_count() >= count or self._proc_dead(), timeout):
            raise BoardError(f"board {self.name} did not boot within {timeout} s; {self._tail()}")
        if self.boot_count() < count:
            raise BoardError(f"board {self.name} process died; {self._tail()}")

    def set_input(self, pin: int, level: int | None) -> None:
        """Drive a digital input from outside (None lets it float)."""
        self._send({"op": "digital", "pin": pin, "level": -1 if level is None else level})

    # ---- the board process --------------------------------------------------
    def _spawn(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise MicroPythonUnavailable("node is not installed: apt-get install nodejs")
        with self._sensors_lock:
            self._devices = self._make_devices()
            self._sent = {}
        self._powered_at = time.monotonic()
        self.start_seconds = None
        links = [socket.socketpair() for _ in self._ptys]
        log = (self.directory / "board.log").open("a")
        proc = subprocess.Popen(
            [node, str(HOST_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            pass_fds=[theirs.fileno() for _, theirs in links],
        )
        log.close()
        # The configuration is the first line the host reads: only then may the sensor
        # refreshers (other threads) reach the new process through _send.
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(self._config(links[0][1].fileno(), links[1][1].fileno()))
                         + "\n")
        proc.stdin.flush()
        self._proc = proc
        for _, theirs in links:
            theirs.close()
        pairs = [(pty, ours) for pty, (ours, _) in zip(self._ptys, links, strict=True)]
        self._relay = _Relay(pairs)
        self._relay.start()
        self._reader = threading.Thread(target=self._read_events, args=(self._proc.stdout,))
        self._reader.daemon = True
        self._reader.start()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            assert self._proc.stdin is not None
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        if self._reader is not None:
            self._reader.join()
        if self._relay is not None:
            self._relay.stop()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def _proc_dead(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def _tail(self) -> str:
        log = self.directory / "board.log"
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        return f"board log: {text or '(empty)'}; events: {self.log()[-5:]}"

    def _send(self, op: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with self._send_lock, contextlib.suppress(BrokenPipeError, ValueError, OSError):
            proc.stdin.write(json.dumps(op) + "\n")
            proc.stdin.flush()

    def _config(self, console_fd: int, uplink_fd: int) -> dict[str, Any]:
        street_ms = self.street.now() * 1000
        buses = [d for d in self._devices.values() if isinstance(d, _I2CDevice)]
        uarts: list[dict[str, object]] = [
            {"endpoint": "uplink", "tx": wiring.UPLINK_UART_TX_PIN, "rx": wiring.UPLINK_UART_RX_PIN,
             "baud": None},
        ]
        if "pm" in self._devices:
            uarts.append({"endpoint": "pm", "tx": wiring.PM_UART_TX_PIN,
                          "rx": wiring.PM_UART_RX_PIN, "baud": sensors.SDS011.BAUD})
        return {
            "mjsPath": str(find_micropython_mjs()),
            "romfsPath": str(build_rom_image()),
            "heapBytes": self.heap_bytes,
            "limitHeap": True,
            "flashDir": str(self.flash_dir),
            "nvsPath": str(self.directory / "nvs.json"),
            "partitionPath": str(self.directory / "romfs.bin"),
            "partitionBytes": ROMFS_PARTITION_BYTES,
            "uniqueId": self.unique_id.hex(),
            "wiring": {
                "i2c": [{"scl": wiring.I2C_SCL_PIN, "sda": wiring.I2C_SDA_PIN,
                         "devices": [d.wiring() for d in buses]}],
                "uarts": uarts,
            },
            "i2cImages": [{"slot": d.slot, "hex": d.model.registers().hex()} for d in buses],
            "analog": {},
            "digital": {},
            "clock": self.street.clock.anchor(),
            "wifi": self.street.wifi.as_dict(),
            "rtcOffsetMs": 0 if self._rtc_set else RTC_EPOCH_MS - street_ms,
            "resetCause": "PWRON",
            "consoleFd": console_fd,
            "uplinkFd": uplink_fd,
        }

    def _make_devices(self) -> dict[str, Any]:
        """Fresh sensor models: a power cycle resets them too."""
        devices: dict[str, Any] = {}
        if "bme280" in self._parts:
            devices["bme280"] = _I2CDevice(wiring.BME280_ADDR, len(devices), sensors.BME280())
        if "magnetometer" in self._parts:
            devices["magnetometer"] = _I2CDevice(wiring.QMC5883L_ADDR, len(devices),
                                                 sensors.QMC5883L())
        if self._rtc is not None:
            devices["rtc"] = _I2CDevice(wiring.PCF8563_ADDR, len(devices), self._rtc)
        if "pm" in self._parts:
            devices["pm"] = sensors.SDS011(woke_at=self.street.now())
        return devices

    # ---- events from the board ---------------------------------------------
    def _read_events(self, stdout: IO[str]) -> None:
        for line in stdout:
            try:
                self._on_event(json.loads(line))
            except Exception as e:  # keep reading: one bad event must not deafen the board
                with self._lock:
                    self._log.append(f"event {line.strip()!r} failed: {e!r}")
        with self._lock:
            self._lock.notify_all()

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev["ev"]
        with self._sensors_lock:
            if kind == "uart" and ev["endpoint"] == "pm":
                self._pm_bytes(bytes.fromhex(ev["hex"]))
            elif kind == "i2c_write":
                self._i2c_write(ev["slot"], ev["reg"], bytes.fromhex(ev["hex"]))
        with self._lock:
            if kind == "boot":
                if self.start_seconds is None:
                    self.start_seconds = time.monotonic() - self._powered_at
                boot = "soft-boot" if ev["soft"] else "boot"
                self._events.append(BoardEvent(ev["t"] / 1000, boot))
            elif kind == "reset":
                self._events.append(BoardEvent(ev["t"] / 1000, "reset", ev["cause"]))
            elif kind == "pwm" and ev["pin"] == wiring.LAMP_PWM_PIN and "lamp" in self._parts:
                self._lamp.append(LampSample(ev["t"] / 1000, ev["duty"], ev["freq"]))
            elif kind == "pin":
                self._pins.setdefault(ev["pin"], []).append((ev["t"] / 1000, ev["value"]))
            elif kind in ("log", "fatal"):
                self._log.append(f"{kind}: {ev['message']}")
            self._lock.notify_all()

    def _pm_bytes(self, data: bytes) -> None:
        sds: sensors.SDS011 = self._devices["pm"]
        air = self.street.air
        reply = sds.receive(data, self.street.now(), air.pm25, air.pm10)
        if reply:
            self._send({"op": "uart", "endpoint": "pm", "hex": reply.hex()})

    def _i2c_write(self, slot: int, reg: int, data: bytes) -> None:
        for key, device in self._devices.items():
            if isinstance(device, _I2CDevice) and device.slot == slot:
                device.model.on_write(reg, data)
                self._sent.pop(key, None)  # answer with fresh data (and clear "busy")
        self._refresh()

    # ---- the street, as the sensors see it -------------------------------------
    def sync(self) -> None:
        """Push the street's state to the board now, not at the next refresh.

        Call it after moving the street (advancing the clock, parking a car) so what the
        board reads next is the new state, whatever the machine's load.
        """
        with self._sensors_lock:
            self._refresh()

    def _refresh_loop(self) -> None:
        while self._running:
            with self._sensors_lock:
                self._refresh()
            time.sleep(REFRESH_S)

    def _push(self, key: str, op: dict[str, Any]) -> None:
        """Send a sensor update unless the board already has it."""
        if self._sent.get(key) != op:
            self._sent[key] = op
            self._send(op)

    def _refresh(self) -> None:
        street, rng, now = self.street, self._rng, self.street.now()
        celsius = street.celsius(now)
        self._push("clock", {"op": "clock", **street.clock.anchor()})
        self._push("wifi", {"op": "wifi", "wifi": street.wifi.as_dict()})
        if "light" in self._parts:
            uv = sensors.LIGHT_SENSOR.microvolts(street.lux(now), rng)
            self._push("light", {"op": "analog", "pin": wiring.LIGHT_ADC_PIN, "uv": uv})
        if "no2" in self._parts:
            uv = sensors.NO2_SENSOR.microvolts(street.air.no2, rng)
            self._push("no2", {"op": "analog", "pin": wiring.NO2_ADC_PIN, "uv": uv})
        bme = self._devices.get("bme280")
        if bme is not None:
            data = bme.model.data_registers(
                celsius + rng.gauss(0, 0.05),
                street.air.pressure_hpa * 100 + rng.gauss(0, 2),
                min(100.0, max(0.0, street.air.humidity + rng.gauss(0, 0.3))),
            )
            self._push("bme280-data", bme.op(sensors.BME280.REG_DATA, data))
            self._push("bme280", bme.op(sensors.BME280.REG_STATUS, bytes(1)))  # data ready
        mag = self._devices.get("magnetometer")
        if mag is not None:
            field = street.magnetic_field(self.bay, celsius)
            regs = mag.model.data_registers(tuple(v + rng.gauss(0, 0.15) for v in field), celsius)
            if regs is not None:
                self._push("magnetometer", mag.op(sensors.QMC5883L.REG_DATA, regs))
        rtc = self._devices.get("rtc")
        if rtc is not None:
            self._push("rtc", rtc.op(sensors.PCF8563.REG_TIME, rtc.model.time_registers()))
        sds = self._devices.get("pm")
        if sds is not None:
            air = street.air
            frame = sds.report(now, air.pm25 * rng.uniform(0.95, 1.05),
                               air.pm10 * rng.uniform(0.95, 1.05))
            if frame:
                self._send({"op": "uart", "endpoint": "pm", "hex": frame.hex()})


@dataclass
class _I2CDevice:
    addr: int
    slot: int
    model: Any

    def op(self, reg: int, data: bytes) -> dict[str, Any]:
        return {"op": "i2c", "slot": self.slot, "reg": reg, "hex": data.hex()}

    def wiring(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"addr": self.addr, "slot": self.slot}
        busy = getattr(self.model, "BUSY", None)
        if busy is not None:
            entry["busy"] = busy
        return entry


class Fleet:
    """Boards on one street, powered on together (they boot in parallel)."""

    def __init__(
        self,
        count: int,
        *,
        street: Street | None = None,
        role: str = "all",
        prefix: str = "node",
        base_dir: Path | None = None,
        heap_bytes: int = ESP32_HEAP_BYTES,
    ) -> None:
        self.street = street or Street()
        self.boards = [
            VirtualBoard(
                f"{prefix}-{i}",
                role=role,
                street=self.street,
                heap_bytes=heap_bytes,
                directory=None if base_dir is None else base_dir / f"{prefix}-{i}",
            )
            for i in range(count)
        ]

    def start(self, timeout: float = 120.0) -> Fleet:
        try:
            for board in self.boards:
                board.launch()
            for board in self.boards:
                board.wait_for_boot(1, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for board in self.boards:
            board.stop()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
