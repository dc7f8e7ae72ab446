"""NXP PCF8563 real-time clock on I2C (datasheet rev. 11): Unix seconds.

A lighting node's battery-backed clock: the ESP32's own clock restarts at 2000 after a
power cut, this one keeps counting, so the schedule goes on without a time source.
Registers 02h..08h hold the time in BCD: VL_seconds (bit 7, VL: the chip lost power or
its oscillator stopped, so its time is not to be trusted), minutes, hours, days,
weekdays (Sunday 0), Century_months (bit 7: 21xx) and years. VL stays set until the
time is written. Plain functions, no object: a node calls them at boot and time syncs.
"""

from citisense_firmware.civil import civil_from_days, days_from_civil, weekday
from citisense_firmware.compat import const

ADDRESS = const(0x51)
_BAD = const(1000)  # what a byte that is not BCD decodes to: out of every range


def _bcd(value: int) -> int:
    low = value & 15
    return _BAD if low > 9 or value > 0x99 else (value >> 4) * 10 + low


def _to_bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def decode(regs) -> int | None:
    """Unix seconds from registers 02h..08h; None if VL is set or they hold no time."""
    if regs[0] & 0x80:
        return None
    second, minute, hour = _bcd(regs[0]), _bcd(regs[1] & 0x7F), _bcd(regs[2] & 0x3F)
    day, month, year = _bcd(regs[3] & 0x3F), _bcd(regs[5] & 0x1F), _bcd(regs[6])
    if second > 59 or minute > 59 or hour > 23 or not 1 <= day <= 31 \
            or not 1 <= month <= 12 or year > 99:
        return None
    year += 2100 if regs[5] & 0x80 else 2000
    days = days_from_civil(year, month, day)
    if civil_from_days(days)[2] != day:
        return None  # 30 February
    return ((days * 24 + hour) * 60 + minute) * 60 + second


def encode(unix: int) -> bytes:
    """Registers 00h..08h for Unix seconds `unix` (2000..2199): both control registers
    cleared (clock running, no test mode, no interrupts), the time with VL clear."""
    days, seconds = divmod(unix, 86400)
    year, month, day = civil_from_days(days)  # no platform epoch involved
    return bytes((0, 0, _to_bcd(seconds % 60), _to_bcd(seconds // 60 % 60),
                  _to_bcd(seconds // 3600), _to_bcd(day), (weekday(days) + 1) % 7,
                  (0x80 if year >= 2100 else 0) | _to_bcd(month), _to_bcd(year % 100)))
