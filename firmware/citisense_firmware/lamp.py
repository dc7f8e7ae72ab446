"""The lamp's output side: fades, fault detection from driver feedback, energy estimate.

Powers are integer deciwatts (dW), as in the lighting telemetry; levels are percent.
"""

from citisense_firmware.compat import const

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
