"""The lamp: its target level, fades, fault detection from driver feedback, energy estimate.

Powers are integer deciwatts (dW), as in the lighting telemetry; levels are percent.

The target level is one pure function (target_level), evaluated every tick and right
after boot. Given the same inputs it returns the same level, so a reboot never changes the light;
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
from citisense_firmware.schedule import Schedule

# Fault flags of lighting telemetry (field 5) and lamp-fault events, as in the contract.
FAULT_LAMP_OUT = const(1)  # commanded on, the lamp draws (almost) nothing
FAULT_DRIVER = const(2)  # driver failure: reported, over-power, or power drawn while off
FAULT_OVERHEAT = const(4)  # reported by the driver
FAULT_SUPPLY = const(8)  # mains out of range, reported by the driver
FAULT_LIGHT_SENSOR = const(16)  # the ambient light sensor fails (reported by the runtime)
FAULT_METER = const(32)  # no power readings from the driver
_REPORTED = const(2 | 4 | 8 | 16)  # flags the caller may pass in

OVERHEAT_CAP = const(50)  # percent: protective dimming while the driver is too hot

_DW_MS_PER_WH = const(36_000_000)  # 1 Wh = 3600 J = 36000 dW*s


def fade_level(start: int, target: int, elapsed_ms: int, full_scale_ms: int) -> int:
    """Output level `elapsed_ms` into a fade from `start` to `target`.

    The rate is fixed (`full_scale_ms` for 0 -> 100 %), so small changes are quick; a new
    target mid-fade starts a new fade from the current output. At boot the runtime sets
    the output straight to the target: a fade up from 0 would blink the street.
    """
    if elapsed_ms <= 0:
        return start
    if full_scale_ms <= 0 or elapsed_ms * 100 >= abs(target - start) * full_scale_ms:
        return target
    moved = elapsed_ms * 100 // full_scale_ms
    return start + moved if target > start else start - moved


def expected_power(level: int, rated_dw: int, standby_dw: int) -> int:
    """Power a healthy lamp draws at a level: driver standby plus a linear LED load."""
    if level <= 0:
        return standby_dw
    return standby_dw + (rated_dw - standby_dw) * level // 100


def faults_in(level: int, power_dw: int | None, rated_dw: int, standby_dw: int) -> int:
    """Fault flags one settled power reading shows (no debouncing)."""
    if power_dw is None:
        return FAULT_METER
    margin = rated_dw // 20  # 5 % of rated power absorbs metering error at low levels
    if level <= 0:
        return FAULT_DRIVER if power_dw > standby_dw + margin else 0  # stuck on
    expected = expected_power(level, rated_dw, standby_dw)
    if power_dw < standby_dw + (expected - standby_dw) // 4:
        return FAULT_LAMP_OUT
    if power_dw > expected * 13 // 10 + margin:
        return FAULT_DRIVER  # over-power: a failing driver
    return 0


class FaultMonitor:
    """Debounced lamp faults: a flag sets after `confirm` consecutive settled readings
    showing it and clears after `confirm` consecutive readings without it.

    Feed only readings taken once the output has been steady for the driver's settle
    time: during a fade the power lags the level and would look like a fault.
    """

    def __init__(self, rated_dw: int, standby_dw: int, confirm: int = 3) -> None:
        self.rated_dw = rated_dw
        self.standby_dw = standby_dw
        self.confirm = confirm
        self.flags = 0
        self._counts = [0] * 6

    def update(self, level: int, power_dw: int | None, reported: int = 0) -> int:
        """Account one settled reading and the flags the driver or runtime report
        (driver, overheat, supply, light sensor); return the confirmed fault flags."""
        seen = faults_in(level, power_dw, self.rated_dw, self.standby_dw) | (reported & _REPORTED)
        for bit in range(6):
            flag = 1 << bit
            if bool(seen & flag) == bool(self.flags & flag):
                self._counts[bit] = 0
                continue
            self._counts[bit] += 1
            if self._counts[bit] >= self.confirm:
                self.flags ^= flag
                self._counts[bit] = 0
        return self.flags


class EnergyMeter:
    """Cumulative energy in whole Wh from power samples, without float drift.

    The remainder below one Wh is kept in dW*ms, so many short intervals add up exactly.
    """

    def __init__(self, wh: int = 0) -> None:
        self.wh = wh
        self._residue = 0

    def add(self, power_dw: int, elapsed_ms: int) -> int:
        """Account `power_dw` held for `elapsed_ms`; return the cumulative Wh."""
        if power_dw > 0 and elapsed_ms > 0:
            self._residue += power_dw * elapsed_ms
            whole = self._residue // _DW_MS_PER_WH
            self.wh += whole
            self._residue -= whole * _DW_MS_PER_WH
        return self.wh

# ---- the target level ----

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
