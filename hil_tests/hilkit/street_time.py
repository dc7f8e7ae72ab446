"""Local time on the rig's street (Ghent, the virtual street's default place)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

ZONE = "Europe/Brussels"


def local_day(unix: float) -> dt.date:
    return dt.datetime.fromtimestamp(unix, ZoneInfo(ZONE)).date()


def at(day: dt.date, hour: int, minute: int = 0) -> float:
    """Unix time of a local clock time on `day`."""
    return dt.datetime.combine(day, dt.time(hour, minute), ZoneInfo(ZONE)).timestamp()


def next_at(now: float, hour: int, minute: int = 0) -> float:
    """The first local `hour:minute` at least ten minutes after `now`."""
    day = local_day(now)
    when = at(day, hour, minute)
    if when < now + 600:
        when = at(day + dt.timedelta(days=1), hour, minute)
    return when
