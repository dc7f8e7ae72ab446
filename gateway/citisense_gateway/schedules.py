"""Lighting schedules: operators' named definitions, compiled to the wire schedule object.

An operator writes (JSON or TOML):
    {"timezone": "Europe/Amsterdam", "failsafe": 100,
     "steps": [{"at": "dusk", "level": 100}, {"at": "23:30", "level": 40},
               {"at": "dawn", "offset": -15, "level": 0}],
     "exceptions": [{"first": "2026-12-24", "last": "2026-12-26", "days": "all",
                     "priority": 10, "steps": [...]}]}
Errors name the path and the rule: `steps[1].at: expected "dusk", "dawn" or HH:MM, got
"25:00"`. Saving a definition makes a new version; versions are numbered across all
schedules, so a node moved from one schedule to another never sees a version go down
(nodes refuse a version not above their active one). The local-time offsets (tz) are
computed at save time for the next transitions of the zone.
A preview evaluates the firmware's own schedule function for a place and a night.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from citisense_gateway import firmware_logic
from citisense_gateway.commands import CommandError, check_args
from citisense_gateway.store.base import ScheduleRecord
from citisense_protocols import messages

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
KEYS = {"timezone", "failsafe", "steps", "exceptions"}
STEP_KEYS = {"at", "offset", "level"}
EXCEPTION_KEYS = {"first", "last", "days", "priority", "steps"}


class ScheduleError(ValueError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ScheduleError("name", f"expected 1..64 of a-z 0-9 . _ - (starting with a letter "
                                    f"or digit), got {name!r}")


def _int(value: object, lo: int, hi: int, path: str) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ScheduleError(path, f"expected an integer in {lo}..{hi}, got {value!r}")
    return value


def _keys(obj: object, allowed: set[str], required: set[str], path: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ScheduleError(path, f"expected a table/object, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            raise ScheduleError(f"{path}.{key}".lstrip("."),
                                f"unknown key; expected one of {', '.join(sorted(allowed))}")
    for key in required:
        if key not in obj:
            raise ScheduleError(f"{path}.{key}".lstrip("."), "missing")
    return obj


def _steps(obj: object, path: str) -> list[list[int]]:
    if not isinstance(obj, list) or not 1 <= len(obj) <= messages.MAX_STEPS:
        raise ScheduleError(path, f"expected a list of 1..{messages.MAX_STEPS} steps")
    steps = []
    for i, step in enumerate(obj):
        here = f"{path}[{i}]"
        s = _keys(step, STEP_KEYS, {"at", "level"}, here)
        level = _int(s["level"], 0, 100, f"{here}.level")
        at = s["at"]
        if at in ("dusk", "dawn"):
            anchor = messages.AT_DUSK if at == "dusk" else messages.AT_DAWN
            offset = _int(s.get("offset", 0), -720, 720, f"{here}.offset")
        elif isinstance(at, str) and (m := _CLOCK.match(at)):
            if "offset" in s:
                raise ScheduleError(f"{here}.offset", "only dusk and dawn steps take an offset")
            anchor, offset = messages.AT_TIME, int(m.group(1)) * 60 + int(m.group(2))
        else:
            raise ScheduleError(f"{here}.at", f'expected "dusk", "dawn" or HH:MM, got {at!r}')
        steps.append([anchor, offset, level])
    return steps


def _date(value: object, path: str) -> int:
    try:
        day = dt.date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        day = None
    if day is None or day.year < 2000:
        raise ScheduleError(path, f"expected a date YYYY-MM-DD from 2000 on, got {value!r}")
    return day.year * 10000 + day.month * 100 + day.day


def _days(value: object, path: str) -> int:
    if value == "all":
        return 127
    if not isinstance(value, list) or not value or any(d not in DAYS for d in value):
        raise ScheduleError(path, f'expected "all" or a list of {", ".join(DAYS)}')
    return sum(1 << DAYS.index(d) for d in set(value))


def tz_entries(zone: str, now: float) -> list[list[int]]:
    """[from, offset minutes] now and at the zone's next transitions (4 entries at most)."""
    try:
        tzinfo = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ScheduleError("timezone", f"unknown time zone {zone!r}") from err

    def offset(t: float) -> int:
        delta = dt.datetime.fromtimestamp(t, tzinfo).utcoffset()
        return int(delta.total_seconds() // 60) if delta else 0

    start = int(now)
    entries = [[start, offset(start)]]
    t = start
    while len(entries) < messages.MAX_TZ and t < start + 3 * 366 * 86400:
        nxt = t + 86400
        if offset(nxt) != entries[-1][1]:
            lo, hi = t, nxt  # find the transition second
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset(mid) == entries[-1][1]:
                    lo = mid
                else:
                    hi = mid
            entries.append([hi, offset(hi)])
        t = nxt
    for entry in entries:
        if not -720 <= entry[1] <= 840:
            raise ScheduleError("timezone", f"offset {entry[1]} min is outside -720..840")
    return entries


def compile_schedule(source: object, version: int, now: float) -> dict[int, Any]:
    """The wire schedule object of an operator's definition; ScheduleError names the fault."""
    src = _keys(source, KEYS, {"steps"}, "")
    wire: dict[int, Any] = {0: version, 1: _steps(src["steps"], "steps")}
    if "exceptions" in src:
        items = src["exceptions"]
        if not isinstance(items, list) or not 1 <= len(items) <= messages.MAX_EXCEPTIONS:
            raise ScheduleError("exceptions",
                                f"expected a list of 1..{messages.MAX_EXCEPTIONS} exceptions")
        exceptions = []
        for i, item in enumerate(items):
            here = f"exceptions[{i}]"
            e = _keys(item, EXCEPTION_KEYS, {"first", "last", "steps"}, here)
            first = _date(e["first"], f"{here}.first")
            last = _date(e["last"], f"{here}.last")
            if last < first:
                raise ScheduleError(f"{here}.last", "is before first")
            exceptions.append([first, last, _days(e.get("days", "all"), f"{here}.days"),
                               _int(e.get("priority", 0), 0, 255, f"{here}.priority"),
                               _steps(e["steps"], f"{here}.steps")])
        wire[2] = exceptions
    if "timezone" in src:
        if not isinstance(src["timezone"], str):
            raise ScheduleError("timezone", "expected a zone name such as Europe/Amsterdam")
        wire[3] = tz_entries(src["timezone"], now)
    if "failsafe" in src:
        wire[4] = _int(src["failsafe"], 0, 100, "failsafe")
    try:  # the contract's validator and the firmware's parser must both accept it
        check_args(messages.OP_SCHEDULE, wire)
        firmware_logic.parse_schedule(wire)
    except (CommandError, ValueError) as err:
        raise ScheduleError("", str(err)) from err
    return wire


def record(name: str, source: object, version: int, user: str, now: float | None = None
           ) -> ScheduleRecord:
    check_name(name)
    when = time.time() if now is None else now
    wire = compile_schedule(source, version, when)
    body = json.dumps({"source": source, "wire": wire}, sort_keys=True)
    return ScheduleRecord(name, version, body, when, user)


def wire_of(rec: ScheduleRecord) -> dict[int, Any]:
    wire = json.loads(rec.body)["wire"]
    return {int(k): v for k, v in wire.items()}


@dataclass(frozen=True)
class Change:
    at: int  # Unix time
    level: int


def preview(wire: dict[int, Any], lat: float, lon: float, night: dt.date,
            zone: str = "UTC") -> list[Change]:
    """What a lamp at (lat, lon) does from noon of `night` to noon the next day (local time),
    evaluated minute by minute with the firmware's own function: the level at noon, then
    every change."""
    parsed = firmware_logic.parse_schedule(wire)
    start = dt.datetime.combine(night, dt.time(12), ZoneInfo(zone)).timestamp()
    changes: list[Change] = []
    for minute in range(24 * 60 + 1):
        t = int(start) + minute * 60
        level = firmware_logic.schedule_level(parsed, t, lat, lon)
        if not changes or changes[-1].level != level:
            changes.append(Change(t, level))
    return changes
