"""The HAL of a simulated node: the firmware's Hal interface over a simulated street.

The HAL interface of citisense_firmware.hal (the firmware calls it by name), backed by
citisense_boards.street: time is the street clock (which may run faster than real time),
readings are the street's light, cars, weather and air as each sensor reports them,
with noise. Outputs (lamp, bay light, fan, status LED) are recorded with street times so
tests and demos can see what a node did. Faults are injected through `broken`.

The firmware's modules are loaded by name: they are MicroPython code, typed for the
board rather than for mypy.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import random
import time
from typing import Any

from citisense_boards.street import Street
from citisense_protocols import messages

_hal: Any = importlib.import_module("citisense_firmware.hal")
_lamp: Any = importlib.import_module("citisense_firmware.lamp")

TICKS_MASK = (1 << 30) - 1
ESP32_HEAP_BYTES = 110 * 1024


class Reset(Exception):
    """Raised by a simulated board's reset(): its runner starts the app again."""


ROLE_PARTS: dict[str, tuple[str, ...]] = {
    "lighting": (_hal.LAMP, _hal.POWER, _hal.LIGHT, _hal.STATUS_LED),
    "parking": (_hal.MAGNETOMETER, _hal.INDICATOR, _hal.STATUS_LED),
    "air": (_hal.PM, _hal.CLIMATE, _hal.NO2, _hal.STATUS_LED),
}
# Peak heap of a node of each role, code executed in place from ROMFS, as measured on the
# MicroPython VM (python -m citisense_tools.bench_node_memory): health messages report it.
ROLE_HEAP_BYTES = {"lighting": 67_000, "parking": 60_000, "air": 56_000}
# Sensor front ends, as on the virtual board: NO2 cell 500 mV + 4 mV per ug/m3.
NO2_ZERO_V = 0.5
NO2_V_PER_UGM3 = 0.004
PM_SETTLE_S = 30.0  # the fan needs this long after waking before readings are right


class Ticker:
    """One timer for many sleeping nodes: wake-ups rounded up to `resolution` real seconds.

    asyncio.sleep costs each wake-up a timer handle and a heap operation whose comparisons
    run in Python; a city of nodes sleeping a second at a time spends most of its CPU
    there. Here the nodes due in the same slot share one timer: about a fifth of the cost,
    for wake-ups up to `resolution` late. Sleeps shorter than `precise` real seconds (a
    street running many times faster than real time) keep asyncio.sleep.
    """

    def __init__(self, resolution: float = 0.01, precise: float = 0.2) -> None:
        self.resolution = resolution
        self.precise = precise
        self._slots: dict[int, list[asyncio.Future[None]]] = {}

    async def sleep(self, seconds: float) -> None:
        if seconds < self.precise:
            await asyncio.sleep(seconds)
            return
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + seconds) / self.resolution)
        sleepers = self._slots.get(slot)
        if sleepers is None:
            sleepers = self._slots[slot] = []
            loop.call_at(slot * self.resolution, self._wake, slot)
        future = loop.create_future()
        sleepers.append(future)
        await future

    def _wake(self, slot: int) -> None:
        for future in self._slots.pop(slot):
            if not future.done():  # a cancelled sleeper (a node powered off) is skipped
                future.set_result(None)


class Shared:
    """What the boards of one simulated fleet share, to spare the CPU: one Ticker for their
    sleeps, and the street's daylight (the same along the street), worked out once per
    street second instead of once per board and reading."""

    def __init__(self, street: Street) -> None:
        self.street = street
        self.ticker = Ticker()
        self._second = -1
        self._lux = 0.0

    def lux(self) -> float:
        second = int(self.street.now())
        if second != self._second:
            self._second, self._lux = second, self.street.lux(second)
        return self._lux


class _Memory:
    def __init__(self, allocated: int) -> None:
        self.allocated = allocated

    def mem_alloc(self) -> int:
        return self.allocated

    def mem_free(self) -> int:
        return ESP32_HEAP_BYTES - self.allocated


class StreetHal:
    """One node's board on the street. `bay` names its parking bay (parking role)."""

    def __init__(self, street: Street, role: str, bay: str, seed: int = 0,
                 rated_dw: int = 1000, standby_dw: int = 10, ntp: bool = True,
                 shared: Shared | None = None) -> None:
        self.street = street
        self.shared = shared
        self.role = role
        self.parts = ROLE_PARTS[role]
        self.bay = bay
        self.rated_dw = rated_dw
        self.standby_dw = standby_dw
        self.ntp = ntp
        self.broken: set[str] = set()  # parts that fail; "lamp" also: the lamp is out
        self.cause = messages.RESET_POWER_ON  # what reset_cause() reports at the next boot
        self.lamp_level: int | None = None
        self.lamp_history: list[tuple[float, int]] = []  # (street time, level) at each change
        self.indicator_history: list[tuple[float, int]] = []
        self.fan = False
        self.led = False
        self._rng = random.Random(seed)
        self._epoch = street.now()
        self._rtc_offset: float | None = None  # RTC minus street time; None: never set
        self._woke_at = 0.0
        self._watchdog_s: float | None = None
        self._fed = 0.0
        self.feeds = 0
        self.memory_bytes = ROLE_HEAP_BYTES[role]

    def has(self, part: str) -> bool:
        return part in self.parts

    # -- time ---------------------------------------------------------------------------

    def ticks_ms(self) -> int:
        return int((self.street.now() - self._epoch) * 1000) & TICKS_MASK

    async def sleep_ms(self, ms: int) -> None:
        seconds = ms / 1000 / self.street.clock.speed
        if self.shared is None:
            await asyncio.sleep(seconds)
        else:
            await self.shared.ticker.sleep(seconds)

    def rtc_time(self) -> int | None:
        if self._rtc_offset is None:
            return None
        return int(self.street.now() + self._rtc_offset)

    def set_rtc(self, unix: int) -> None:
        self._rtc_offset = unix - self.street.now()

    async def network_time(self, host: object) -> int | None:
        return int(self.street.now()) if self.ntp and self.street.wifi.up else None

    def power_cycle(self) -> None:
        """Power off and on: the RTC forgets the time (no backup battery)."""
        self._rtc_offset = None
        self.cause = messages.RESET_POWER_ON
        self.lamp_level = None

    # -- reset and watchdog -------------------------------------------------------------

    def reset_cause(self) -> int:
        return self.cause

    def reset(self) -> None:
        self.cause = messages.RESET_SOFT
        raise Reset()

    def watchdog_start(self, timeout_ms: int) -> None:
        # Real time: the watchdog guards against a stuck event loop, whatever the street does.
        self._watchdog_s = timeout_ms / 1000
        self._fed = time.monotonic()

    def watchdog_feed(self) -> None:
        self._fed = time.monotonic()
        self.feeds += 1

    def watchdog_expired(self) -> bool:
        return self._watchdog_s is not None and time.monotonic() - self._fed > self._watchdog_s

    def collect_garbage(self) -> None:
        pass  # CPython collects on its own; a full collection per node would cost the fleet

    def memory(self) -> _Memory:
        return _Memory(self.memory_bytes)

    def _noise(self, spread: float) -> float:
        return self._rng.gauss(0.0, spread)

    # -- lighting -----------------------------------------------------------------------

    def lamp_output(self, level: int) -> None:
        if level != self.lamp_level:
            self.lamp_history.append((self.street.now(), level))
        self.lamp_level = level

    def lamp_feedback(self) -> tuple[int | None, int]:
        if "power" in self.broken:
            return None, 0
        level = self.lamp_level or 0
        if "lamp" in self.broken:
            level = 0
        power: int = _lamp.expected_power(level, self.rated_dw, self.standby_dw)
        return max(0, round(power * (1 + self._noise(0.01)))), 0

    def ambient_lux(self) -> float | None:
        if "light" in self.broken:
            return None
        lux = self.street.lux() if self.shared is None else self.shared.lux()
        return max(0.0, lux * (1 + self._noise(0.02)))

    # -- parking ------------------------------------------------------------------------

    def magnetic_field(self) -> tuple[int, int, int] | None:
        if "magnetometer" in self.broken:
            return None
        ut = self.street.magnetic_field(self.bay, self.street.celsius())
        return (round(ut[0] * 1000 + self._noise(40)), round(ut[1] * 1000 + self._noise(40)),
                round(ut[2] * 1000 + self._noise(40)))

    def indicator(self, show: int) -> None:
        self.indicator_history.append((self.street.now(), show))

    # -- air quality --------------------------------------------------------------------

    def pm_power(self, on: bool) -> None:
        if on and not self.fan:
            self._woke_at = self.street.now()
        self.fan = on

    def pm_reading(self) -> tuple[float, float] | None:
        if not self.fan or "pm" in self.broken:
            return None
        air = self.street.air
        settled = 1.0 if self.street.now() - self._woke_at >= PM_SETTLE_S else 0.6
        return (max(0.0, air.pm25 * settled * (1 + self._noise(0.05))),
                max(0.0, air.pm10 * settled * (1 + self._noise(0.05))))

    def climate(self) -> tuple[float, float, float] | None:
        if "climate" in self.broken:
            return None
        air = self.street.air
        return (self.street.celsius() + self._noise(0.1),
                min(100.0, max(0.0, air.humidity + self._noise(0.5))),
                air.pressure_hpa + self._noise(0.2))

    def no2_volts(self) -> tuple[float, None] | None:
        if "no2" in self.broken:
            return None
        volts = NO2_ZERO_V + NO2_V_PER_UGM3 * self.street.air.no2 + self._noise(0.003)
        return min(3.3, max(0.0, volts)), None

    # -- status and network -------------------------------------------------------------

    def status_led(self, on: bool) -> None:
        self.led = on

    async def network_up(self, wifi: object) -> bool:
        return self.street.wifi.up

    def rssi(self) -> int | None:
        return max(-127, min(0, round(self.street.wifi.rssi + self._noise(2))))

    def serial_link(self, baud: int) -> tuple[object, object]:
        raise OSError("simulated nodes talk MQTT")
