"""Air-quality measurement logic: PM duty cycle, NO2 calibration, quality flags, telemetry.

The optical PM sensor's fan runs only part of each period (it wears out and soils the
optics): it is switched on, its first `warmup_s` seconds of readings are discarded while
the airflow settles, readings over the next `measure_s` seconds are kept, and their
trimmed mean is the result. Optical counters over-read in humid air (particles grow), so
readings above 75 % relative humidity are flagged, not corrected.

NO2 comes from an electrochemical cell with a working (WE) and an auxiliary (AE)
electrode read as ADC volts; the AE cancels the cell's zero drift. Concentrations are
converted with the EU reference conditions for gases (293.15 K, 101.3 kPa).
"""

from citisense_firmware.compat import const

# Quality flags, the last field of air telemetry.
FLAG_WARMUP = const(1)
FLAG_HUMID = const(2)
FLAG_FAULT = const(4)
FLAG_UNCALIBRATED = const(8)

NO2_WARMUP_S = const(3600)  # an electrochemical cell settles for about an hour after power-up
_HUMIDITY_LIMIT = const(75)  # percent RH above which optical PM readings are flagged
_PM_MAX = const(1000)  # ug/m3, top of an optical sensor's range: above is a bad read
_MAX_SAMPLES = const(64)  # bounds RAM of a measuring window

# ug/m3 per ppb of NO2 (46.0055 g/mol) at the EU reference 293.15 K, 101.3 kPa.
NO2_UG_PER_PPB = 1.9121


def trimmed_mean(values: list, trim_pct: int) -> float | None:
    """Mean after dropping trim_pct % of the values at each end (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    drop = len(ordered) * trim_pct // 100
    kept = ordered[drop:len(ordered) - drop]
    return sum(kept) / len(kept)


class PmCycle:
    """The fan's duty cycle and the samples of one measuring window.

    `fan(now)` says whether the fan should run; `add` offers a reading (None for a failed
    read); `poll(now)` returns (pm2.5, pm10, flags) once per cycle when the window closes.
    Times are integer seconds on a monotonic clock.
    """

    def __init__(self, period_s: int = 300, warmup_s: int = 30, measure_s: int = 20,
                 trim_pct: int = 20, min_samples: int = 5) -> None:
        if warmup_s + measure_s > period_s:
            raise ValueError("warm-up and measuring must fit in the period")
        self.period_s = period_s
        self.warmup_s = warmup_s
        self.measure_s = measure_s
        self.trim_pct = trim_pct
        self.min_samples = min_samples
        self._start = None
        self._pm25 = []
        self._pm10 = []

    def _phase(self, now: int) -> int:
        """Seconds into the current cycle; starts a cycle on first use."""
        if self._start is None:
            self._start = now
        return now - self._start

    def fan(self, now: int) -> bool:
        return 0 <= self._phase(now) < self.warmup_s + self.measure_s

    def measuring(self, now: int) -> bool:
        return self.warmup_s <= self._phase(now) < self.warmup_s + self.measure_s

    def add(self, now: int, pm25: float | None, pm10: float | None) -> None:
        if not self.measuring(now):
            return  # fan warming up or off: the reading is not representative
        if pm25 is None or pm10 is None or not 0 <= pm25 <= _PM_MAX or not 0 <= pm10 <= _PM_MAX:
            return  # failed or out-of-range read: too few good ones make the result a fault
        if len(self._pm25) < _MAX_SAMPLES:
            self._pm25.append(pm25)
            self._pm10.append(pm10)

    def poll(self, now: int) -> tuple | None:
        """(pm2.5, pm10, flags) after a measuring window closed, else None."""
        phase = self._phase(now)
        if phase < self.warmup_s + self.measure_s:
            return None
        if phase >= self.period_s:
            # The node stalled through a whole cycle: start afresh, the sensor is not at fault.
            self._start = now
            self._pm25 = []
            self._pm10 = []
            return None
        if len(self._pm25) >= self.min_samples:
            result = (trimmed_mean(self._pm25, self.trim_pct),
                      trimmed_mean(self._pm10, self.trim_pct), 0)
        else:
            result = (None, None, FLAG_FAULT)  # fan stalled or the sensor stopped answering
        self._pm25 = []
        self._pm10 = []
        self._start += self.period_s  # the next cycle stays on the period grid
        return result


class No2Calibration:
    """Per-cell constants from the sensor's calibration sheet.

    we_zero_v / ae_zero_v: electrode outputs in clean air (V); sensitivity_v_per_ppb: WE
    response (V per ppb, negative for NO2 cells); ae_factor: AE zero-drift correction (n_T).
    """

    def __init__(self, we_zero_v: float, ae_zero_v: float, sensitivity_v_per_ppb: float,
                 ae_factor: float = 1.0, calibrated: bool = True) -> None:
        if sensitivity_v_per_ppb == 0:
            raise ValueError("sensitivity must not be zero")
        self.we_zero_v = we_zero_v
        self.ae_zero_v = ae_zero_v
        self.sensitivity_v_per_ppb = sensitivity_v_per_ppb
        self.ae_factor = ae_factor
        self.calibrated = calibrated


# Typical values of a NO2 cell on its analogue front end, used until a cell's own sheet
# is loaded; readings then carry FLAG_UNCALIBRATED.
NOMINAL_NO2 = No2Calibration(0.225, 0.235, -0.0003, 1.0, calibrated=False)


def no2_ugm3(we_v: float, ae_v: float, calibration: No2Calibration) -> float:
    """NO2 concentration in ug/m3 from electrode voltages; never negative."""
    signal = (we_v - calibration.we_zero_v) - calibration.ae_factor * (
        ae_v - calibration.ae_zero_v
    )
    ppb = signal / calibration.sensitivity_v_per_ppb
    return max(0.0, ppb * NO2_UG_PER_PPB)


def quality_flags(rh: float | None, warming_up: bool, fault: bool, calibrated: bool) -> int:
    """warming_up: the NO2 cell has been powered for less than NO2_WARMUP_S, or no PM
    cycle has completed yet; fault: a sensor failed its cycle; calibrated: NO2 constants
    come from the cell's own sheet."""
    flags = 0
    if warming_up:
        flags |= FLAG_WARMUP
    if rh is not None and rh > _HUMIDITY_LIMIT:
        flags |= FLAG_HUMID
    if fault:
        flags |= FLAG_FAULT
    if not calibrated:
        flags |= FLAG_UNCALIBRATED
    return flags


def _scaled(value: float | None, factor: int) -> int | None:
    return None if value is None else round(value * factor)


def air_record(pm25: float | None, pm10: float | None, no2: float | None,
               temp_c: float | None, rh: float | None, pressure_hpa: float | None,
               flags: int) -> list:
    """Air telemetry data: scaled integers in the contract's order (None: not measured)."""
    return [
        _scaled(pm25, 10),
        _scaled(pm10, 10),
        _scaled(no2, 10),
        _scaled(temp_c, 100),
        _scaled(rh, 10),
        _scaled(pressure_hpa, 10),
        flags,
    ]
