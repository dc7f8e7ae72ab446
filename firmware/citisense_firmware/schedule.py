"""Lighting schedules: dim steps anchored to clock time, dusk or dawn; dated exceptions.

The schedule object is the argument of the `schedule` command (opcode 2, `schedule` in
protocols/messages.cddl), a CBOR map parsed once by `parse` and evaluated by `level`:

    {0: version,             1..2**32-1, reported in the birth message
     1: steps,               the default day profile: [step, ...], 1..8 steps
     ? 2: exceptions,        [[first, last, weekdays, priority, steps], ...], 1..4
     ? 3: tz,                [[from, offset], ...], 1..4, `from` strictly increasing
     ? 4: failsafe}          percent for when the schedule cannot be followed (100)

    step = [0, minute, level]   at `minute` (0..1439) after local midnight
         | [1, offset, level]   at sunset + offset minutes (-720..720)
         | [2, offset, level]   at sunrise + offset minutes (-720..720)
    exception: first/last are local dates yyyymmdd (inclusive); weekdays a bitmask,
         bit 0 Monday .. bit 6 Sunday; the highest priority wins, ties go to the
         first listed; its steps replace the default profile on those days.
    tz: the UTC offset in minutes from Unix time `from` on; before the first entry the
         first offset holds; absent: UTC. The gateway sends the DST transitions ahead.

Resolution. Each local day D takes one profile (the winning exception's or the default)
and resolves its steps to instants: a clock step at local midnight of D plus its minute,
a sun step at D's sunset or sunrise (sun centre 90.789 deg from the zenith: upper limb
plus refraction, as astral computes it) plus its offset. The level at time t is that of
the latest resolved step at or before t over days D-2..D+1 (offsets reach 12 h, so the
evening's steps carry over midnight); on equal instants the later day wins, then a
dusk step, then the later-listed step.

Guard: when the winning step's profile has sun steps and the latest sun step at or
before t has level 0, the level is 0: a "05:00 -> 100 %" clock step never lights a
summer morning after dawn.

Polar days are resolved as the limit of ordinary ones, so nothing jumps on the day the
sun stops setting or rising. Without a sunset (midnight sun), sunset and the next
sunrise fall together at solar midnight, and the sunrise wins the tie: dark only if
offsets open a window around midnight. Without a sunrise (polar night), sunrise and
sunset fall together at solar noon, and the sunset wins: lit all day unless offsets
open a window around noon. Real events are clamped to their own side of those
midnights, so a grazing sunset can never follow the next day's sunrise.
"""

from citisense_firmware.civil import date_number, weekday
from citisense_firmware.compat import const
from citisense_firmware.suntimes import (
    NEVER_RISES,
    NEVER_SETS,
    ZENITH_SUNRISE,
    solar_day,
    solar_noon,
    sun_event,
)

AT_TIME = const(0)
AT_DUSK = const(1)
AT_DAWN = const(2)

MAX_STEPS = const(8)
MAX_EXCEPTIONS = const(4)
MAX_TZ = const(4)
DEFAULT_FAILSAFE = const(100)

_KEYS = (0, 1, 2, 3, 4)
_OFFSET_RANGES = ((0, 1439), (-720, 720), (-720, 720))
_CACHE_SIZE = const(24)  # a level() call resolves some 14 sun times, a few more in odd zones
# A parsed step is one small int (no heap object): anchor in bits 0-1, offset + 720 in
# bits 2-13, level in bits 14-20. A full schedule's steps take some 600 bytes, not 2 KB.
_ANCHOR = const(3)


class ScheduleError(ValueError):
    """A schedule object that does not follow the documented structure."""


def _int(value: object, low: int, high: int, where: str) -> int:
    # bool is an int subclass on both interpreters; CBOR true/false is not a number here.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ScheduleError(where + " must be an integer in " + str(low) + ".." + str(high))
    return value


def _array(value: object, low: int, high: int, where: str) -> list:
    if not isinstance(value, (list, tuple)) or not low <= len(value) <= high:
        raise ScheduleError(where + " must be an array of " + str(low) + ".." + str(high))
    return list(value)


def _date(value: object, low: int, where: str) -> int:
    date = _int(value, low, 99991231, where)
    if not 1 <= date // 100 % 100 <= 12 or not 1 <= date % 100 <= 31:
        raise ScheduleError(where + " must be a date YYYYMMDD")
    return date


def _steps(value: object, where: str) -> tuple:
    steps = []
    for index, step in enumerate(_array(value, 1, MAX_STEPS, where)):
        here = where + "[" + str(index) + "]"
        anchor, offset, level = _array(step, 3, 3, here)
        anchor = _int(anchor, AT_TIME, AT_DAWN, here + ".anchor")
        low, high = _OFFSET_RANGES[anchor]
        offset = _int(offset, low, high, here + ".offset")
        steps.append(anchor | (offset + 720) << 2 | _int(level, 0, 100, here + ".level") << 14)
    return tuple(steps)


def parse(obj: object) -> "Schedule":
    """Validate a decoded schedule object and return a Schedule; raise ScheduleError."""
    if not isinstance(obj, dict):
        raise ScheduleError("schedule must be a map")
    for key in obj:
        if key not in _KEYS:
            raise ScheduleError("schedule has an unknown key " + repr(key))
    if 0 not in obj or 1 not in obj:
        raise ScheduleError("schedule needs version (0) and steps (1)")
    version = _int(obj[0], 1, 0xFFFFFFFF, "version")
    steps = _steps(obj[1], "steps")
    exceptions = []
    if 2 in obj:
        for index, item in enumerate(_array(obj[2], 1, MAX_EXCEPTIONS, "exceptions")):
            here = "exceptions[" + str(index) + "]"
            first, last, weekdays, priority, profile = _array(item, 5, 5, here)
            first = _date(first, 20000101, here + ".first")
            last = _date(last, first, here + ".last")
            exceptions.append((
                first,
                last,
                _int(weekdays, 1, 127, here + ".weekdays"),
                _int(priority, 0, 255, here + ".priority"),
                _steps(profile, here + ".steps"),
            ))
    # Highest priority first; ties keep the list order (MicroPython's sort is not
    # stable, hence the index in the key).
    order = sorted(range(len(exceptions)), key=lambda i: (-exceptions[i][3], i))
    zones = []
    if 3 in obj:
        previous = -1
        for index, item in enumerate(_array(obj[3], 1, MAX_TZ, "tz")):
            here = "tz[" + str(index) + "]"
            start, offset = _array(item, 2, 2, here)
            start = _int(start, previous + 1, 0xFFFFFFFF, here + ".from")
            zones.append((start, _int(offset, -720, 840, here + ".offset") * 60))
            previous = start
    failsafe = _int(obj.get(4, DEFAULT_FAILSAFE), 0, 100, "failsafe")
    return Schedule(version, steps, tuple(exceptions[i] for i in order), tuple(zones), failsafe)


class Schedule:
    """A validated schedule; `level` is a pure function of time and place."""

    def __init__(self, version: int, steps: tuple, exceptions: tuple, zones: tuple,
                 failsafe: int) -> None:
        self.version = version
        self.steps = steps
        self.exceptions = exceptions  # (first, last, weekdays, priority, steps), best first
        self.zones = zones  # (from, offset seconds)
        self.failsafe = failsafe
        self._sun = {}  # memo of _memo(): sun times of days at _place
        self._place = None

    def utc_offset(self, unix: int) -> int:
        """Seconds east of UTC in force at a Unix time."""
        offset = self.zones[0][1] if self.zones else 0
        for start, zone_offset in self.zones:
            if start > unix:
                break
            offset = zone_offset
        return offset

    def profile(self, day: int) -> tuple:
        """The steps in force on a local day (days since 1970-01-01 in local time)."""
        date = date_number(day)
        for first, last, weekdays, _priority, steps in self.exceptions:
            if first <= date <= last and weekdays >> weekday(day) & 1:
                return steps
        return self.steps

    def _memo(self, day: int, anchor: int, latitude: float, longitude: float) -> int:
        # Small ints only (a 2026 Unix time or a float would be a heap object each): the
        # key packs day and anchor, the value is seconds after the day before's midnight,
        # and the memo holds one place (a node has one).
        if self._place != (latitude, longitude):
            self._place = (latitude, longitude)
            self._sun = {}
        key = day * 4 + anchor + 1
        found = self._sun.get(key)
        if found is not None:
            return found if found < 0 else (day - 1) * 86400 + found
        if anchor < 0:
            found = solar_noon(day, longitude)
        else:
            found = sun_event(day, latitude, longitude, ZENITH_SUNRISE, anchor == AT_DAWN)
        if len(self._sun) >= _CACHE_SIZE:
            # Forget the oldest days (time moves on), not the lot: the next level()
            # would have to compute them all again in one go.
            for old in sorted(self._sun)[:_CACHE_SIZE // 4]:
                del self._sun[old]
        self._sun[key] = found if found < 0 else found - (day - 1) * 86400
        return found

    def _sun_at(self, day: int, anchor: int, latitude: float, longitude: float) -> int:
        """Sunrise or sunset of a day, polar days resolved as documented above."""
        event = self._memo(day, anchor, latitude, longitude)
        noon = self._memo(day, -1, latitude, longitude)
        if event == NEVER_RISES:
            return noon
        # Solar midnight shared by a day's sunset and the next day's sunrise.
        other = self._memo(day + (1 if anchor == AT_DUSK else -1), -1, latitude, longitude)
        midnight = (noon + other) // 2
        if event == NEVER_SETS:
            return midnight
        return min(event, midnight) if anchor == AT_DUSK else max(event, midnight)

    def resolve(self, day: int, step: int, latitude: float, longitude: float) -> int:
        """Unix time of one (parsed) step of a local day's profile."""
        anchor, offset = step & _ANCHOR, (step >> 2 & 0xFFF) - 720
        if anchor == AT_TIME:
            local = day * 86400 + offset * 60
            return local - self.utc_offset(local - self.utc_offset(local))
        # The solar day whose noon falls on local day D (the same day in sane zones).
        noon = day * 86400 + 43200
        solar = solar_day(noon - self.utc_offset(noon), longitude)
        return self._sun_at(solar, anchor, latitude, longitude) + offset * 60

    def warm(self, unix: int, latitude: float, longitude: float):
        """Compute the sun times level(unix) needs that the memo lacks, yielding after each
        one: a generator, so that a caller can wait in between. A sun event makes some 5 KB
        of float garbage and a first evaluation needs a dozen: in one go, that garbage
        needs a heap that collects in the middle of a computation."""
        today = (unix + self.utc_offset(unix)) // 86400
        for day in range(today - 2, today + 2):
            for step in self.profile(day):
                if step & _ANCHOR != AT_TIME:
                    known = len(self._sun)
                    self.resolve(day, step, latitude, longitude)
                    if len(self._sun) != known:
                        yield

    def level(self, unix: int, latitude: float, longitude: float) -> int:
        """Target level in percent at a Unix time."""
        today = (unix + self.utc_offset(unix)) // 86400
        best = sun_best = None
        level = sun_level = 0
        guarded = False
        for day in range(today - 2, today + 2):
            profile = self.profile(day)
            uses_sun = False
            for step in profile:
                uses_sun = uses_sun or step & _ANCHOR != AT_TIME
            for index, step in enumerate(profile):
                at = self.resolve(day, step, latitude, longitude)
                if at > unix:
                    continue
                anchor = step & _ANCHOR
                key = (at, day, 1 if anchor == AT_DUSK else 0, index)
                if best is None or key > best:
                    best, level, guarded = key, step >> 14, uses_sun
                if anchor != AT_TIME and (sun_best is None or key > sun_best):
                    sun_best, sun_level = key, step >> 14
        if guarded and sun_level == 0:
            return 0  # a clock step of a sun-following profile never lights the day
        return level
