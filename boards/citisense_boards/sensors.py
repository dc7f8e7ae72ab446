"""Sensors of the virtual board, as their datasheets describe them.

Each model turns physical quantities into what the firmware sees on the wire:
register images for I2C chips, frames for a UART sensor, a voltage for an ADC
pin. Pure logic, no I/O: the virtual board pushes the results to the VM.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

MICROVOLTS_PER_MILLIVOLT = 1000


def _tdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero), as in the datasheet code."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _search(f: Callable[[int], float], target: float, lo: int, hi: int, rising: bool) -> int:
    """The raw reading in [lo, hi] whose compensated value f(raw) is closest to target."""
    while lo < hi:
        mid = (lo + hi) // 2
        below = f(mid) < target if rising else f(mid) > target
        lo, hi = (mid + 1, hi) if below else (lo, mid)
    best = lo
    if lo > 0 and abs(f(lo - 1) - target) < abs(f(lo) - target):
        best = lo - 1
    return best


@dataclass(frozen=True)
class BME280Calibration:
    """Trimming parameters as stored in a BME280 (Bosch datasheet, table 16)."""

    t1: int = 27504
    t2: int = 26435
    t3: int = -1000
    p1: int = 36477
    p2: int = -10685
    p3: int = 3024
    p4: int = 2855
    p5: int = 140
    p6: int = -7
    p7: int = 15500
    p8: int = -14600
    p9: int = 6000
    h1: int = 75
    h2: int = 362
    h3: int = 0
    h4: int = 313
    h5: int = 50
    h6: int = 30


class BME280:
    """Bosch BME280 temperature, pressure and humidity sensor on I2C."""

    ADDRESS = 0x76
    CHIP_ID = 0x60
    REG_CHIP_ID = 0xD0
    REG_RESET = 0xE0
    REG_STATUS = 0xF3
    REG_CTRL_MEAS = 0xF4
    REG_DATA = 0xF7
    SOFT_RESET = 0xB6
    # Writing ctrl_meas starts a measurement: status bit 3 ("measuring") until data is ready.
    BUSY = (REG_CTRL_MEAS, REG_STATUS, 0x08)
    # Data registers before the first measurement (datasheet: reset values).
    DATA_RESET = bytes([0x80, 0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x00])

    def __init__(self, calibration: BME280Calibration | None = None) -> None:
        self.cal = calibration or BME280Calibration()
        self.measuring = False

    def registers(self) -> bytes:
        """The 256-byte register image after power-on."""
        c = self.cal
        regs = bytearray(256)
        regs[0x88:0xA0] = struct.pack(
            "<HhhHhhhhhhhh", c.t1, c.t2, c.t3, c.p1, c.p2, c.p3, c.p4, c.p5, c.p6, c.p7, c.p8, c.p9
        )
        regs[0xA1] = c.h1
        h4 = c.h4 & 0xFFF
        h5 = c.h5 & 0xFFF
        regs[0xE1:0xE8] = struct.pack(
            "<hBBBBb", c.h2, c.h3, h4 >> 4, (h4 & 0x0F) | ((h5 & 0x0F) << 4), h5 >> 4, c.h6
        )
        regs[self.REG_CHIP_ID] = self.CHIP_ID
        regs[self.REG_DATA : self.REG_DATA + 8] = self.DATA_RESET
        return bytes(regs)

    def on_write(self, reg: int, data: bytes) -> None:
        """The firmware wrote registers: a mode other than sleep starts measurements."""
        for offset, value in enumerate(data):
            if reg + offset == self.REG_CTRL_MEAS:
                self.measuring = value & 0x03 != 0
            elif reg + offset == self.REG_RESET and value == self.SOFT_RESET:
                self.measuring = False

    def data_registers(self, celsius: float, pascal: float, humidity: float) -> bytes:
        """Registers 0xF7..0xFE holding the raw readings of these conditions."""
        if not self.measuring:
            return self.DATA_RESET
        adc_t = _search(lambda a: self.temperature(a)[0], celsius, 0, 0xFFFFF, rising=True)
        t_fine = self.temperature(adc_t)[1]
        adc_p = _search(lambda a: self.pressure(a, t_fine), pascal, 0, 0xFFFFF, rising=False)
        adc_h = _search(lambda a: self.humidity(a, t_fine), humidity, 0, 0xFFFF, rising=True)
        pressure = (adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4)
        temperature = (adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4)
        return bytes((*pressure, *temperature, adc_h >> 8, adc_h & 0xFF))

    # Compensation, the datasheet's integer code (section 4.2.3).
    def temperature(self, adc_t: int) -> tuple[float, int]:
        c = self.cal
        var1 = (((adc_t >> 3) - (c.t1 << 1)) * c.t2) >> 11
        var2 = (((((adc_t >> 4) - c.t1) * ((adc_t >> 4) - c.t1)) >> 12) * c.t3) >> 14
        t_fine = var1 + var2
        return ((t_fine * 5 + 128) >> 8) / 100, t_fine

    def pressure(self, adc_p: int, t_fine: int) -> float:
        c = self.cal
        var1 = t_fine - 128000
        var2 = var1 * var1 * c.p6
        var2 = var2 + ((var1 * c.p5) << 17)
        var2 = var2 + (c.p4 << 35)
        var1 = ((var1 * var1 * c.p3) >> 8) + ((var1 * c.p2) << 12)
        var1 = (((1 << 47) + var1) * c.p1) >> 33
        if var1 == 0:
            return 0.0
        p = 1048576 - adc_p
        p = _tdiv(((p << 31) - var2) * 3125, var1)
        var1 = (c.p9 * (p >> 13) * (p >> 13)) >> 25
        var2 = (c.p8 * p) >> 19
        return (((p + var1 + var2) >> 8) + (c.p7 << 4)) / 256

    def humidity(self, adc_h: int, t_fine: int) -> float:
        c = self.cal
        v = t_fine - 76800
        v = (((adc_h << 14) - (c.h4 << 20) - (c.h5 * v)) + 16384) >> 15
        v = v * (
            (((((((t_fine - 76800) * c.h6) >> 10) * ((((t_fine - 76800) * c.h3) >> 11) + 32768))
            >> 10) + 2097152) * c.h2 + 8192) >> 14
        )
        v = v - (((((v >> 15) * (v >> 15)) >> 7) * c.h1) >> 4)
        v = min(max(v, 0), 419430400)
        return (v >> 12) / 1024


class QMC5883L:
    """QST QMC5883L three-axis magnetometer on I2C (a parking-bay detector)."""

    ADDRESS = 0x0D
    REG_DATA = 0x00
    REG_STATUS = 0x06
    REG_TEMP = 0x07
    REG_CONTROL1 = 0x09
    REG_CONTROL2 = 0x0A
    REG_CHIP_ID = 0x0D
    CHIP_ID = 0xFF
    LSB_PER_GAUSS = {0: 12000, 1: 3000}  # range 2 G and 8 G
    MICROTESLA_PER_GAUSS = 100

    def __init__(self) -> None:
        self.control1 = 0

    def registers(self) -> bytes:
        regs = bytearray(256)
        regs[0x0C] = 0x01
        regs[self.REG_CHIP_ID] = self.CHIP_ID
        return bytes(regs)

    def on_write(self, reg: int, data: bytes) -> None:
        for offset, value in enumerate(data):
            if reg + offset == self.REG_CONTROL1:
                self.control1 = value
            elif reg + offset == self.REG_CONTROL2 and value & 0x80:
                self.control1 = 0  # soft reset: back to standby

    @property
    def continuous(self) -> bool:
        return self.control1 & 0x03 == 0x01

    def data_registers(self, field_ut: tuple[float, float, float], celsius: float) -> bytes | None:
        """Registers 0x00..0x08 for this field, or None in standby (nothing new)."""
        if not self.continuous:
            return None
        lsb_per_ut = self.LSB_PER_GAUSS[(self.control1 >> 4) & 0x01] / self.MICROTESLA_PER_GAUSS
        raw = [round(axis * lsb_per_ut) for axis in field_ut]
        overflow = any(abs(v) > 32767 for v in raw)
        raw = [max(-32768, min(32767, v)) for v in raw]
        status = 0x01 | (0x02 if overflow else 0)
        temp = round(celsius * 100)
        return struct.pack("<hhhBh", raw[0], raw[1], raw[2], status, temp)


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _from_bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


class PCF8563:
    """NXP PCF8563 real-time clock on I2C, with its backup battery (datasheet rev. 11).

    Its oscillator is the street clock, so it keeps time through the board's power cycles:
    the virtual board keeps the model across them. It starts as a chip fresh from the
    reel: VL (bit 7 of VL_seconds, "clock integrity is not guaranteed") set, until the
    firmware writes the seconds register with VL clear. Time and date registers 02h..08h
    are BCD; the century bit C (bit 7 of Century_months) counts 20xx as 0 and 21xx as 1
    (the datasheet leaves the century to the user; it toggles C when the years wrap).
    Weekdays count Sunday as 0 (the datasheet's example assignment). STOP (bit 5 of
    Control_status_1) holds the time until it is cleared. Not modelled: alarms, the
    countdown timer, CLKOUT, the leap day the chip adds to 2100, and the register
    pointer wrapping after 0Fh (the bus wraps after FFh).
    """

    ADDRESS = 0x51
    REG_CONTROL1 = 0x00
    REG_TIME = 0x02  # VL_seconds, then minutes .. years: 7 registers
    TIME_SIZE = 7
    VL = 0x80
    CENTURY = 0x80
    STOP = 0x20
    # Power-on values of the other registers (datasheet table 27): TESTC set, alarms
    # disabled (AE), CLKOUT enabled at 32.768 kHz, timer disabled with its 1/60 Hz source.
    RESET = {0x00: 0x08, 0x09: 0x80, 0x0A: 0x80, 0x0B: 0x80, 0x0C: 0x80, 0x0D: 0x80,
             0x0E: 0x03}

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.vl = True
        self.control = dict(self.RESET)
        self._offset = 946_684_800 - clock()  # 2000-01-01 00:00 at power-on: meaningless
        self._stopped_at: int | None = None

    def now(self) -> int:
        """The chip's time, Unix seconds (whole seconds: the chip counts no fractions)."""
        if self._stopped_at is not None:
            return self._stopped_at
        return int(self.clock() + self._offset)

    def registers(self) -> bytes:
        regs = bytearray(256)
        for reg, value in self.control.items():
            regs[reg] = value
        regs[self.REG_TIME:self.REG_TIME + self.TIME_SIZE] = self.time_registers()
        return bytes(regs)

    def time_registers(self) -> bytes:
        return encode_pcf8563(self.now(), self.vl)

    def on_write(self, reg: int, data: bytes) -> None:
        regs = bytearray(self.registers())
        end = reg + len(data)
        regs[reg:end] = data
        for address in range(reg, min(end, self.REG_TIME)):
            self.control[address] = regs[address]
        for address in range(max(reg, self.REG_TIME + self.TIME_SIZE), min(end, 0x10)):
            self.control[address] = regs[address]
        if reg < self.REG_TIME + self.TIME_SIZE and end > self.REG_TIME:
            time_regs = bytes(regs[self.REG_TIME:self.REG_TIME + self.TIME_SIZE])
            written = decode_pcf8563(time_regs, check_vl=False)
            if written is not None:  # an impossible date leaves the counters as they were
                self._set(written)
            if reg <= self.REG_TIME:
                self.vl = bool(time_regs[0] & self.VL)
        stop = bool(self.control[self.REG_CONTROL1] & self.STOP)
        if stop and self._stopped_at is None:
            self._stopped_at = self.now()
        elif not stop and self._stopped_at is not None:
            held = self._stopped_at
            self._stopped_at = None
            self._set(held)

    def _set(self, unix: int) -> None:
        if self._stopped_at is not None:
            self._stopped_at = unix
        else:
            self._offset = unix - self.clock()


def encode_pcf8563(unix: int, vl: bool = False) -> bytes:
    """Registers 02h..08h of a PCF8563 showing `unix` (2000..2199)."""
    t = datetime.fromtimestamp(unix, UTC)
    if not 2000 <= t.year <= 2199:
        raise ValueError(f"a PCF8563 counts 2000..2199 here, not {t.year}")
    century = PCF8563.CENTURY if t.year >= 2100 else 0
    return bytes((
        (PCF8563.VL if vl else 0) | _bcd(t.second), _bcd(t.minute), _bcd(t.hour),
        _bcd(t.day), t.isoweekday() % 7, century | _bcd(t.month), _bcd(t.year % 100),
    ))


def decode_pcf8563(regs: bytes, check_vl: bool = True) -> int | None:
    """Unix seconds from registers 02h..08h; None if VL is set (when checked) or the
    registers hold no valid date."""
    if check_vl and regs[0] & PCF8563.VL:
        return None
    if any(v & 0x0F > 9 or v >> 4 > 9 for v in (regs[0] & 0x7F, regs[1] & 0x7F,
                                               regs[2] & 0x3F, regs[3] & 0x3F,
                                               regs[5] & 0x1F, regs[6])):
        return None
    year = 2000 + _from_bcd(regs[6]) + (100 if regs[5] & PCF8563.CENTURY else 0)
    try:
        t = datetime(year, _from_bcd(regs[5] & 0x1F), _from_bcd(regs[3] & 0x3F),
                     _from_bcd(regs[2] & 0x3F), _from_bcd(regs[1] & 0x7F),
                     _from_bcd(regs[0] & 0x7F), tzinfo=UTC)
    except ValueError:
        return None
    return int(t.timestamp())


@dataclass
class SDS011:
    """Nova Fitness SDS011 particulate matter sensor on a UART at 9600 baud.

    Speaks the Laser Dust Sensor Control Protocol V1.3: 19-byte commands
    (AA B4 ... checksum AB) and 10-byte replies (AA C5 ...) and data frames
    (AA C0 PM2.5 PM10 ... checksum AB).
    """

    BAUD = 9600
    WARM_UP_S = 30.0
    device_id: int = 0xA1B2
    query_mode: bool = False
    working: bool = True
    period_min: int = 0  # 0: report every second
    woke_at: float = 0.0
    next_report: float = 0.0
    _rx: bytearray = field(default_factory=bytearray)

    @staticmethod
    def _frame(kind: int, payload: bytes) -> bytes:
        return bytes([0xAA, kind]) + payload + bytes([sum(payload) & 0xFF, 0xAB])

    def _id(self) -> bytes:
        return self.device_id.to_bytes(2, "big")

    def data_frame(self, pm25: float, pm10: float) -> bytes:
        def tenths(value: float) -> bytes:
            return min(9999, max(0, round(value * 10))).to_bytes(2, "little")

        return self._frame(0xC0, tenths(pm25) + tenths(pm10) + self._id())

    def _reply(self, cmd: int, a: int, b: int, c: int = 0) -> bytes:
        return self._frame(0xC5, bytes([cmd, a, b, c]) + self._id())

    def receive(self, data: bytes, now: float, pm25: float, pm10: float) -> bytes:
        """Bytes from the board; returns the sensor's replies."""
        self._rx += data
        out = b""
        while True:
            start = self._rx.find(0xAA)
            if start < 0:
                self._rx.clear()
                return out
            del self._rx[:start]
            if len(self._rx) < 19:
                return out
            frame = bytes(self._rx[:19])
            if frame[1] != 0xB4 or frame[18] != 0xAB or sum(frame[2:17]) & 0xFF != frame[17]:
                del self._rx[:1]  # not a command here: resynchronise on the next 0xAA
                continue
            del self._rx[:19]
            target = int.from_bytes(frame[15:17], "big")
            if target in (0xFFFF, self.device_id):
                out += self._command(frame[2], frame[3:15], now, pm25, pm10)

    def _command(self, cmd: int, data: bytes, now: float, pm25: float, pm10: float) -> bytes:
        setting = data[0] == 1
        if cmd == 6:  # sleep / work: the only command a sleeping sensor answers
            if setting:
                if data[1] and not self.working:
                    self.woke_at = now
                self.working = bool(data[1])
            return self._reply(6, data[0], int(self.working))
        if not self.working:
            return b""
        if cmd == 2:  # reporting mode
            if setting:
                self.query_mode = bool(data[1])
            return self._reply(2, data[0], int(self.query_mode))
        if cmd == 4:  # query data
            return self.data_frame(*self.reading(now, pm25, pm10))
        if cmd == 5:  # set device id
            self.device_id = int.from_bytes(data[10:12], "big")
            return self._reply(5, 0, 0)
        if cmd == 7:  # firmware version: year, month, day
            return self._frame(0xC5, bytes([7, 18, 11, 16]) + self._id())
        if cmd == 8:  # working period
            if setting:
                self.period_min = min(30, data[1])
            return self._reply(8, data[0], self.period_min)
        return b""

    def reading(self, now: float, pm25: float, pm10: float) -> tuple[float, float]:
        """What the laser counter reports: the fan needs time to settle after waking."""
        if now - self.woke_at < self.WARM_UP_S:
            return pm25 * 0.6, pm10 * 0.6
        return pm25, pm10

    def report(self, now: float, pm25: float, pm10: float) -> bytes:
        """The data frame due in active mode at `now`, if any."""
        if self.query_mode or not self.working or now < self.next_report:
            return b""
        self.next_report = now + (self.period_min * 60 if self.period_min else 1.0)
        return self.data_frame(*self.reading(now, pm25, pm10))


@dataclass(frozen=True)
class AnalogFrontEnd:
    """A sensor whose output voltage is linear in what it measures."""

    offset_mv: float
    mv_per_unit: float
    max_mv: float
    noise_mv: float

    def microvolts(self, value: float, rng: random.Random) -> int:
        mv = self.offset_mv + self.mv_per_unit * value + rng.gauss(0.0, self.noise_mv)
        return round(min(self.max_mv, max(0.0, mv)) * MICROVOLTS_PER_MILLIVOLT)


# An ambient light sensor (phototransistor and load resistor): 1 mV per lux up
# to its 3.3 V supply, so it saturates in daylight and resolves twilight.
LIGHT_SENSOR = AnalogFrontEnd(offset_mv=0.0, mv_per_unit=1.0, max_mv=3300.0, noise_mv=0.3)
# An electrochemical NO2 cell with its amplifier: 500 mV at zero, 4 mV per ug/m3.
NO2_SENSOR = AnalogFrontEnd(offset_mv=500.0, mv_per_unit=4.0, max_mv=3300.0, noise_mv=3.0)
