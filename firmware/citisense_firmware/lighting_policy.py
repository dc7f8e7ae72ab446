"""The lamp's target level: one pure function, evaluated every tick and right after boot.

Given the same inputs it returns the same level, so a reboot never changes the light;
nothing here remembers anything except the ambient hysteresis state the caller passes
back in. Precedence:

1. an active override (operator command with expiry): `now < until`;
2. the schedule, when the time is valid and a schedule is stored;
3. otherwise the schedule cannot be trusted: the ambient light sensor decides with
   hysteresis (dark -> fail-safe level, light -> off);
4. with no usable ambient reading, the fail-safe level, day and night.

The fail-safe level is the stored schedule's (its key 4), else the policy's, and never
below 1 %. Blind rule: while the time is invalid *and* the link is down, the node
cannot know it is day, so an override never holds the lamp below the fail-safe level
unless the ambient sensor reports daylight. Hence without time and link a lamp is never
off at night.

`now` and an override's `until` share the caller's clock: Unix seconds when the time is
valid, seconds since boot otherwise (the runtime re-bases overrides on time sync).
`time_valid` is the runtime's verdict that the clock is synchronised and recent enough.
"""

from citisense_firmware.compat import const
from citisense_firmware.lamp import FAULT_OVERHEAT, OVERHEAT_CAP
from citisense_firmware.schedule import Schedule

SOURCE_SCHEDULE = const(0)
SOURCE_OVERRIDE = const(1)
SOURCE_FAILSAFE = const(2)
SOURCE_AMBIENT = const(3)
SOURCE_FAULT = const(4)


class FailsafePolicy:
    """What a lamp does when its schedule cannot be trusted.

    level: percent used when it may be night and no schedule gives one (1..100);
    dark_lux / light_lux: the ambient sensor reads dark at or below dark_lux and
    light at or above light_lux; in between the previous state holds (hysteresis).
    """

    def __init__(self, level: int = 100, dark_lux: int = 30, light_lux: int = 60) -> None:
        if not dark_lux < light_lux:
            raise ValueError("dark_lux must be below light_lux")
        self.level = min(100, max(1, level))
        self.dark_lux = dark_lux
        self.light_lux = light_lux


def ambient_dark(lux: float | None, was_dark: bool | None, policy: FailsafePolicy) -> bool | None:
    """Hysteresis on the ambient light: True dark, False light, None no reading.

    Inside the band with no previous state (just after boot) it reads dark: switching a
    lamp on at twilight is harmless, leaving a street dark is not.
    """
    if lux is None:
        return None
    if lux <= policy.dark_lux:
        return True
    if lux >= policy.light_lux:
        return False
    return True if was_dark is None else was_dark


def target_level(
    now: int,
    time_valid: bool,
    link_up: bool,
    latitude: float,
    longitude: float,
    schedule: Schedule | None,
    override: tuple | None,
    policy: FailsafePolicy,
    lux: float | None = None,
    was_dark: bool | None = None,
) -> tuple[int, int, bool | None]:
    """(level percent, source, ambient dark state to pass back next tick).

    override: (level percent, until) or None.
    """
    dark = ambient_dark(lux, was_dark, policy)
    failsafe = max(1, policy.level if schedule is None else schedule.failsafe)
    if override is not None and now < override[1]:
        level, source = override[0], SOURCE_OVERRIDE
        if not time_valid and not link_up and dark is not False and level < failsafe:
            level, source = failsafe, SOURCE_FAILSAFE if dark is None else SOURCE_AMBIENT
    elif time_valid and schedule is not None:
        level, source = schedule.level(now, latitude, longitude), SOURCE_SCHEDULE
    elif dark is not None:
        level, source = (failsafe if dark else 0), SOURCE_AMBIENT
    else:
        level, source = failsafe, SOURCE_FAILSAFE
    return min(100, max(0, level)), source, dark


def protect(level: int, source: int, fault_flags: int) -> tuple[int, int]:
    """Protective dimming: a confirmed overheat caps the level (source: fault)."""
    if fault_flags & FAULT_OVERHEAT and level > OVERHEAT_CAP:
        return OVERHEAT_CAP, SOURCE_FAULT
    return level, source
