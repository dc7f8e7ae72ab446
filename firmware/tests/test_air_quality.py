"""Air quality: PM duty cycle and trimmed mean, NO2 calibration, flags, EAQI bands."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_boards.mpvm import run_on_cpython
from citisense_firmware import eaqi
from citisense_firmware.air_quality import (
    FLAG_FAULT,
    FLAG_HUMID,
    FLAG_UNCALIBRATED,
    FLAG_WARMUP,
    NO2_UG_PER_PPB,
    NOMINAL_NO2,
    No2Calibration,
    PmCycle,
    air_record,
    no2_ugm3,
    quality_flags,
    trimmed_mean,
)
from citisense_protocols import catalogue, messages


@settings(max_examples=300)
@given(values=st.lists(st.floats(0, 1000), min_size=1, max_size=64), trim=st.integers(0, 40))
def test_trimmed_mean_lies_within_the_kept_values(values: list[float], trim: int) -> None:
    mean = trimmed_mean(values, trim)
    assert mean is not None
    assert min(values) - 1e-9 <= mean <= max(values) + 1e-9


def test_trimmed_mean_ignores_outliers_at_both_ends() -> None:
    readings = [10.0] * 8 + [500.0, 0.0]
    assert trimmed_mean(readings, 10) == 10.0
    assert trimmed_mean(readings, 0) == pytest.approx(58.0)
    assert trimmed_mean([], 20) is None


def run_cycle(cycle: PmCycle, start: int, reading: object) -> tuple[list[bool], object]:
    """Drive one period at 1 Hz; `reading(now)` gives (pm2.5, pm10) or None."""
    fan = []
    result = None
    for now in range(start, start + cycle.period_s):
        fan.append(cycle.fan(now))
        if fan[-1]:
            value = reading(now)  # type: ignore[operator]
            cycle.add(now, *(value if value is not None else (None, None)))
        polled = cycle.poll(now)
        if polled is not None:
            result = polled
    return fan, result


def test_pm_cycle_discards_warm_up_and_trims_the_measuring_window() -> None:
    cycle = PmCycle(period_s=300, warmup_s=30, measure_s=20, trim_pct=20)
    rng = random.Random(1)

    def reading(now: int) -> tuple[float, float]:
        if now < 30:
            return 400.0, 600.0  # dust blown off the optics while the fan spins up
        spike = 300.0 if now in (35, 44) else 0.0  # an insect, a puff of smoke
        return 12.0 + rng.uniform(-1, 1) + spike, 20.0 + rng.uniform(-1, 1)

    fan, result = run_cycle(cycle, 0, reading)
    assert fan.count(True) == 50 and fan[:50] == [True] * 50  # 50 s of 300 s
    assert result is not None
    pm25, pm10, flags = result  # type: ignore[misc]
    assert pm25 == pytest.approx(12.0, abs=1.0) and pm10 == pytest.approx(20.0, abs=1.0)
    assert flags == 0
    # The next period starts on the grid.
    fan, second = run_cycle(cycle, 300, lambda now: (15.0, 25.0))
    assert second == (15.0, 25.0, 0) and fan.count(True) == 50


def test_pm_cycle_without_readings_reports_a_fault() -> None:
    cycle = PmCycle(period_s=120, warmup_s=10, measure_s=10, min_samples=5)
    _, result = run_cycle(cycle, 0, lambda now: None if now % 3 else (5.0, 8.0))
    assert result == (None, None, FLAG_FAULT)
    _, result = run_cycle(cycle, 120, lambda now: (-1.0, 5000.0))  # out of range
    assert result == (None, None, FLAG_FAULT)


def test_pm_cycle_restarts_after_a_long_stall() -> None:
    cycle = PmCycle(period_s=100, warmup_s=10, measure_s=10)
    assert cycle.fan(0)
    assert cycle.poll(25) is not None
    # The node was busy for ten periods: the next cycle starts now, not in the past.
    assert cycle.poll(1000) is None
    assert cycle.fan(1000) and not cycle.measuring(1005) and cycle.measuring(1012)


def test_pm_cycle_rejects_a_window_longer_than_the_period() -> None:
    with pytest.raises(ValueError):
        PmCycle(period_s=40, warmup_s=30, measure_s=20)


def test_no2_from_electrode_volts_with_calibration() -> None:
    cell = No2Calibration(we_zero_v=0.230, ae_zero_v=0.240, sensitivity_v_per_ppb=-0.0003,
                          ae_factor=1.2)
    # 20 ppb lowers the working electrode by 6 mV; the auxiliary drifted by +1 mV.
    we = 0.230 - 0.006 + 1.2 * 0.001
    ae = 0.241
    assert no2_ugm3(we, ae, cell) == pytest.approx(20 * NO2_UG_PER_PPB, rel=1e-6)
    assert no2_ugm3(0.300, 0.240, cell) == 0.0  # noise below zero is clamped
    assert not NOMINAL_NO2.calibrated
    with pytest.raises(ValueError):
        No2Calibration(0.2, 0.2, 0.0)


def test_no2_conversion_factor_is_at_the_eu_reference_conditions() -> None:
    # 46.0055 g/mol at 293.15 K and 101.3 kPa.
    assert pytest.approx(46.0055 * 101300 / (8.314462 * 293.15) / 1000,
                                           rel=1e-4) == NO2_UG_PER_PPB


def test_quality_flags() -> None:
    assert quality_flags(50.0, False, False, True) == 0
    assert quality_flags(75.0, False, False, True) == 0
    assert quality_flags(75.1, False, False, True) == FLAG_HUMID
    assert quality_flags(None, True, True, False) == FLAG_WARMUP | FLAG_FAULT | FLAG_UNCALIBRATED


def test_air_record_fits_the_telemetry_contract() -> None:
    record = air_record(12.34, 20.0, 43.21, -5.678, 81.25, 1013.25,
                        quality_flags(81.25, False, False, True))
    assert record == [123, 200, 432, -568, 812, 10132, FLAG_HUMID]
    body = messages.uplink(messages.TELEMETRY, 1, 0, 0, 0, 0, record)
    catalogue.decode_body(body)
    missing = air_record(None, None, None, 18.75, 62.4, 1013.2, FLAG_WARMUP)
    catalogue.decode_body(messages.uplink(messages.TELEMETRY, 1, 0, 0, 0, 0, missing))


# ---- European Air Quality Index

def test_eaqi_bands_with_inclusive_upper_bounds() -> None:
    assert [eaqi.level("pm25", v) for v in (0, 10, 10.1, 20, 25, 50, 75, 75.1, 800)] == [
        1, 1, 2, 2, 3, 4, 5, 6, 6]
    assert [eaqi.level("pm10", v) for v in (20, 40, 50, 100, 150, 151)] == [1, 2, 3, 4, 5, 6]
    assert [eaqi.level("no2", v) for v in (40, 90, 120, 230, 340, 341)] == [1, 2, 3, 4, 5, 6]


def test_eaqi_index_is_the_worst_pollutant() -> None:
    assert eaqi.index(pm25=8.0, pm10=45.0, no2=20.0) == (eaqi.MODERATE, "pm10")
    assert eaqi.index(pm25=60.0, pm10=45.0, no2=250.0) == (eaqi.VERY_POOR, "pm25")
    assert eaqi.index(no2=85.0) == (eaqi.FAIR, "no2")
    assert eaqi.index() == (0, None)
    assert eaqi.NAMES[eaqi.index(pm25=5.0)[0] - 1] == "good"


@settings(max_examples=200)
@given(pm25=st.floats(0, 900), pm10=st.floats(0, 1300), no2=st.floats(0, 1100))
def test_eaqi_never_improves_when_a_concentration_rises(
    pm25: float, pm10: float, no2: float
) -> None:
    level, _ = eaqi.index(pm25, pm10, no2)
    assert 1 <= level <= 6
    assert eaqi.index(pm25 + 5, pm10, no2)[0] >= level
    assert eaqi.index(pm25, pm10, no2 + 5)[0] >= level


# ---- the same code on the MicroPython VM

FIRMWARE = Path(__file__).resolve().parents[1] / "citisense_firmware"

AIR_SCRIPT = """
import json
from citisense_firmware import air_quality as aq
from citisense_firmware import eaqi
from citisense_firmware.mqtt import Backoff
cycle = aq.PmCycle(period_s=120, warmup_s=20, measure_s=15)
out = []
for now in range(600):
    if cycle.fan(now):
        value = (now * 7919) % 97
        cycle.add(now, 5.0 + value / 10, 9.0 + value / 5)
    result = cycle.poll(now)
    if result is not None:
        out.append(["pm", now, result])
cell = aq.No2Calibration(0.23, 0.24, -0.0003, 1.2)
for millivolts in range(180, 240, 7):
    no2 = aq.no2_ugm3(millivolts / 1000, 0.241, cell)
    flags = aq.quality_flags(70 + millivolts % 10, millivolts < 200, False, cell.calibrated)
    out.append(["no2", aq.air_record(12.3, 20.1, no2, -3.25, 70.5, 1001.3, flags),
                eaqi.index(12.3, 20.1, no2)])
state = [12345]
def rand_below(n):
    state[0] = (state[0] * 1103515245 + 12345) % 2147483648
    return state[0] % n
backoff = Backoff(rand_below)
out.append(["backoff", [backoff.next_ms() for _ in range(12)]])
print(json.dumps(out))
"""



@pytest.mark.micropython
def test_air_quality_on_micropython_matches_cpython(mp: Any) -> None:
    mp.install_package(FIRMWARE)
    board = mp.run(AIR_SCRIPT)
    assert board == run_on_cpython(AIR_SCRIPT)
    rows = json.loads(board)
    assert [row[1] for row in rows if row[0] == "pm"] == [35, 155, 275, 395, 515]
