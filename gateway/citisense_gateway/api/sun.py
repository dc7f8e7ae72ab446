"""Dusk and dawn of a night at a place, from the firmware's own sun-time function.

The preview chart marks them; they are the instants a lamp's dusk and dawn steps are
anchored to (sun's upper limb on the horizon), so chart and lamp agree to the second.
"""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Any
from zoneinfo import ZoneInfo

_sun: Any = importlib.import_module("citisense_firmware.suntimes")


def _event(day: int, lat: float, lon: float, rising: bool) -> float | None:
    at = int(_sun.sun_event(day, lat, lon, _sun.ZENITH_SUNRISE, rising))
    return None if at in (_sun.NEVER_RISES, _sun.NEVER_SETS) else float(at)


def night(date: dt.date, zone: str, lat: float, lon: float) -> tuple[float | None, float | None]:
    """(sunset of `date`, sunrise of the next morning) in Unix seconds; None in polar
    day or night."""
    noon = dt.datetime.combine(date, dt.time(12), ZoneInfo(zone)).timestamp()
    day = int(_sun.solar_day(int(noon), lon))
    return _event(day, lat, lon, False), _event(day + 1, lat, lon, True)
