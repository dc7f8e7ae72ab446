"""Air-quality role: PM on a fan duty cycle, NO2 averaged between reports, climate.

Control runs the particulate sensor's fan as air_quality.PmCycle says; sensing keeps the
readings of its measuring window, the NO2 concentration (mean since the last telemetry)
and the latest temperature, humidity and pressure. Telemetry carries the values with
their quality flags (warm-up, humid air, sensor fault, uncalibrated NO2 cell).

The NO2 cell's calibration sheet comes as settings (no2_we_zero_uv, no2_ae_zero_uv,
no2_sens_nv_ppb, no2_ae_factor_pct); without it the nominal constants are used and the
readings are flagged uncalibrated. A front end without an auxiliary electrode reads the
working electrode only. A sensor failing _FAIL_READS reads in a row (or a PM cycle with
too few readings) sends a sensor_fault event, and sensor_ok once it reads again.
"""

from citisense_firmware.air_quality import (
    FLAG_FAULT,
    NO2_WARMUP_S,
    NOMINAL_NO2,
    No2Calibration,
    PmCycle,
    air_record,
    no2_ugm3,
    quality_flags,
)
from citisense_firmware.compat import const
from citisense_firmware.roles import Role as _Role
from citisense_protocols import messages

_FAIL_READS = const(3)
_PM, _NO2, _CLIMATE = messages.SENSOR_PM, messages.SENSOR_NO2, messages.SENSOR_CLIMATE

SETTINGS = {
    "pm_period_s": (60, 3600),
    "no2_we_zero_uv": (0, 5000000),
    "no2_ae_zero_uv": (0, 5000000),
    "no2_sens_nv_ppb": (-100000000, 100000000),
    "no2_ae_factor_pct": (0, 1000),
}
# Telemetry ranges (0.1 ug/m3, 0.01 C, 0.1 %, 0.1 hPa): out of range is not a reading.
_RANGES = ((0, 10000), (0, 10000), (0, 10000), (-4000, 8500), (0, 1000), (3000, 11000))


class Role(_Role):
    code = messages.AIR
    SETTINGS = SETTINGS

    def __init__(self, node) -> None:
        super().__init__(node)
        self.cycle = None
        self.calibration = NOMINAL_NO2
        self._fan = None
        self.pm = (None, None)
        self._pm_done = False
        self._no2_sum = 0.0
        self._no2_count = 0
        self._no2_last = None
        self.climate = (None, None, None)
        self._fails = {_PM: 0, _NO2: 0, _CLIMATE: 0}
        self._faulty = {_PM: False, _NO2: False, _CLIMATE: False}

    def configure(self) -> None:
        setting = self.node.setting
        period = setting("pm_period_s", 300)
        if self.cycle is None or self.cycle.period_s != period:
            self.cycle = PmCycle(period_s=period)
        we = setting("no2_we_zero_uv", None)
        ae = setting("no2_ae_zero_uv", None)
        sensitivity = setting("no2_sens_nv_ppb", 0)
        if we is None or ae is None or not sensitivity:
            self.calibration = NOMINAL_NO2
        else:
            self.calibration = No2Calibration(we / 1e6, ae / 1e6, sensitivity / 1e9,
                                              setting("no2_ae_factor_pct", 100) / 100)

    # -- control --------------------------------------------------------------------

    def tick(self) -> None:
        fan = self.cycle.fan(self.node.clock.uptime())
        if fan != self._fan:
            self._fan = fan
            self.node.hal.pm_power(fan)

    # -- sensing --------------------------------------------------------------------

    def sense(self) -> None:
        hal = self.node.hal
        now = self.node.clock.uptime()
        cycle = self.cycle
        if cycle.measuring(now):
            reading = hal.pm_reading()
            if reading is None:
                cycle.add(now, None, None)
            else:
                cycle.add(now, reading[0], reading[1])
        result = cycle.poll(now)
        if result is not None:
            self.pm = (result[0], result[1])
            self._pm_done = True
            self._judge(_PM, not result[2] & FLAG_FAULT, 1)
        volts = hal.no2_volts()
        if self._judge(_NO2, volts is not None, _FAIL_READS):
            cal = self.calibration
            ae = cal.ae_zero_v if volts[1] is None else volts[1]
            value = no2_ugm3(volts[0], ae, cal)
            self._no2_sum += value
            self._no2_count += 1
            self._no2_last = value
        climate = hal.climate()
        if self._judge(_CLIMATE, climate is not None, _FAIL_READS):
            self.climate = climate

    def _judge(self, sensor: int, ok: bool, reads: int) -> bool:
        """Count a read; send sensor_fault / sensor_ok on a change; returns `ok`."""
        node = self.node
        if ok:
            self._fails[sensor] = 0
            if self._faulty[sensor]:
                self._faulty[sensor] = False
                node.event(messages.EV_SENSOR_OK, sensor)
            return True
        self._fails[sensor] += 1
        if self._fails[sensor] >= reads and not self._faulty[sensor]:
            self._faulty[sensor] = True
            node.event(messages.EV_SENSOR_FAULT, sensor)
        return False

    def telemetry(self) -> list:
        if self._no2_count:
            no2 = self._no2_sum / self._no2_count
            self._no2_sum = 0.0
            self._no2_count = 0
        else:
            no2 = None if self._faulty[_NO2] else self._no2_last
        temp, rh, pressure = self.climate
        if self._faulty[_CLIMATE]:
            temp = rh = pressure = None
        pm25, pm10 = (None, None) if self._faulty[_PM] else self.pm
        warming = self.node.clock.uptime() < NO2_WARMUP_S or not self._pm_done
        fault = self._faulty[_PM] or self._faulty[_NO2] or self._faulty[_CLIMATE]
        flags = quality_flags(rh, warming, fault, self.calibration.calibrated)
        record = air_record(pm25, pm10, no2, temp, rh, pressure, flags)
        for index in range(6):
            value = record[index]
            low, high = _RANGES[index]
            if value is not None and not low <= value <= high:
                # A concentration beyond the scale is reported at its end; a climate
                # value beyond its range is a broken reading.
                record[index] = high if index < 3 and value > high else None
        return record
