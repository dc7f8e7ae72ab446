"""The firmware's pure logic, run by the gateway so previews and indexes match the nodes.

citisense_firmware is MicroPython code (no typing module, bare `tuple` annotations), kept
out of this package's strict type checking by importing it here, once, and wrapping the
few functions the gateway calls in typed signatures.
"""

from __future__ import annotations

import importlib
from typing import Any

_schedule: Any = importlib.import_module("citisense_firmware.schedule")
_eaqi: Any = importlib.import_module("citisense_firmware.eaqi")

EAQI_NAMES: tuple[str, ...] = tuple(_eaqi.NAMES)


def parse_schedule(wire: dict[int, Any]) -> Any:
    """The firmware's parsed schedule; ValueError (ScheduleError) if the node would refuse it."""
    return _schedule.parse(wire)


def schedule_level(parsed: Any, unix: int, lat: float, lon: float) -> int:
    """The level a lamp at (lat, lon) running `parsed` targets at `unix`."""
    return int(parsed.level(unix, lat, lon))


def eaqi_index(pm25: float | None, pm10: float | None, no2: float | None
               ) -> tuple[int, str | None]:
    level, driver = _eaqi.index(pm25, pm10, no2)
    return int(level), driver
