"""Lamp output: fades, fault detection from driver feedback, energy estimate."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_firmware.lamp import (
    FAULT_DRIVER,
    FAULT_LAMP_OUT,
    FAULT_LIGHT_SENSOR,
    FAULT_METER,
    FAULT_OVERHEAT,
    EnergyMeter,
    FaultMonitor,
    expected_power,
    fade_level,
    faults_in,
)

RATED = 600  # dW: a 60 W luminaire
STANDBY = 5  # dW


@settings(max_examples=300)
@given(start=st.integers(0, 100), target=st.integers(0, 100),
       elapsed=st.integers(-1000, 20_000), full_scale=st.integers(0, 10_000))
def test_fade_moves_monotonically_from_start_to_target(
    start: int, target: int, elapsed: int, full_scale: int
) -> None:
    level = fade_level(start, target, elapsed, full_scale)
    assert min(start, target) <= level <= max(start, target)
    later = fade_level(start, target, elapsed + 100, full_scale)
    assert abs(target - later) <= abs(target - level)
    assert fade_level(start, target, full_scale + 1, full_scale) == target


def test_fade_rate_is_fixed_per_percent() -> None:
    # 0 -> 100 % takes 2 s; 100 -> 50 % therefore takes 1 s.
    assert fade_level(100, 50, 500, 2000) == 75
    assert fade_level(100, 50, 1000, 2000) == 50
    assert fade_level(0, 100, 1000, 2000) == 50
    assert fade_level(40, 40, 0, 2000) == 40
    assert fade_level(0, 100, 10, 0) == 100  # no fade configured: jump


def test_healthy_lamp_shows_no_fault_at_any_level() -> None:
    for level in range(101):
        assert faults_in(level, expected_power(level, RATED, STANDBY), RATED, STANDBY) == 0


def test_fault_kinds_from_one_reading() -> None:
    assert faults_in(80, STANDBY, RATED, STANDBY) == FAULT_LAMP_OUT
    assert faults_in(50, 700, RATED, STANDBY) == FAULT_DRIVER  # over-power
    assert faults_in(0, 200, RATED, STANDBY) == FAULT_DRIVER  # stuck on
    assert faults_in(0, STANDBY + 10, RATED, STANDBY) == 0  # meter noise while off
    assert faults_in(50, None, RATED, STANDBY) == FAULT_METER


def test_faults_are_confirmed_and_cleared_after_consecutive_readings() -> None:
    monitor = FaultMonitor(RATED, STANDBY, confirm=3)
    good = expected_power(100, RATED, STANDBY)
    readings = [good, STANDBY, STANDBY, good, STANDBY, STANDBY, STANDBY, good, good, good]
    flags = [monitor.update(100, power) for power in readings]
    # One glitch, then a broken run of two: nothing; three in a row: lamp out; three
    # good readings: cleared.
    assert flags == [0, 0, 0, 0, 0, 0, FAULT_LAMP_OUT, FAULT_LAMP_OUT, FAULT_LAMP_OUT, 0]


def test_reported_faults_are_debounced_alongside_measured_ones() -> None:
    monitor = FaultMonitor(RATED, STANDBY, confirm=2)
    good = expected_power(60, RATED, STANDBY)
    assert monitor.update(60, good, FAULT_OVERHEAT) == 0
    assert monitor.update(60, good, FAULT_OVERHEAT | FAULT_LIGHT_SENSOR) == FAULT_OVERHEAT
    assert monitor.update(60, good, FAULT_LIGHT_SENSOR) == FAULT_OVERHEAT | FAULT_LIGHT_SENSOR
    assert monitor.update(60, good, FAULT_LAMP_OUT) == FAULT_LIGHT_SENSOR  # not reportable


@settings(max_examples=200)
@given(samples=st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 60_000)), max_size=200))
def test_energy_meter_adds_up_exactly_whatever_the_sampling(
    samples: list[tuple[int, int]]
) -> None:
    meter = EnergyMeter(wh=1000)
    for power, elapsed in samples:
        meter.add(power, elapsed)
    total_dw_ms = sum(power * elapsed for power, elapsed in samples)
    assert meter.wh == 1000 + total_dw_ms // 36_000_000


def test_energy_of_a_night() -> None:
    meter = EnergyMeter()
    for _ in range(12 * 3600):  # 12 h at 60 W, one sample a second
        meter.add(600, 1000)
    assert meter.wh == 720
