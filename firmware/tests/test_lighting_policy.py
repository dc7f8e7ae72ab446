"""The lamp's target level: overrides, schedule, fail-safe and the ambient fallback."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_boards.mpvm import run_on_cpython
from citisense_firmware import schedule
from citisense_firmware.lamp import (
    FAULT_LAMP_OUT,
    FAULT_OVERHEAT,
    OVERHEAT_CAP,
    SOURCE_AMBIENT,
    SOURCE_FAILSAFE,
    SOURCE_FAULT,
    SOURCE_OVERRIDE,
    SOURCE_SCHEDULE,
    FailsafePolicy,
    ambient_dark,
    protect,
    target_level,
)

AMSTERDAM = (52.37, 4.90)
EVENING = schedule.parse({0: 7, 1: [[1, 0, 100], [0, 1380, 50], [0, 300, 100], [2, 0, 0]],
                          3: [[0, 60], [1774746000, 120], [1792890000, 60]], 4: 80})
NOON = int(dt.datetime(2026, 1, 10, 12, tzinfo=dt.UTC).timestamp())
MIDNIGHT = int(dt.datetime(2026, 1, 10, 23, 30, tzinfo=dt.UTC).timestamp())
POLICY = FailsafePolicy(level=90, dark_lux=30, light_lux=60)

levels = st.integers(0, 100)
clocks = st.integers(0, 2**32 - 1)
lux_readings = st.one_of(st.none(), st.floats(0, 100_000))
previous_dark = st.one_of(st.none(), st.booleans())
overrides = st.one_of(st.none(), st.tuples(levels, clocks))
stored = st.sampled_from([None, EVENING])


@settings(max_examples=500, deadline=None)
@given(now=clocks, time_valid=st.booleans(), link_up=st.booleans(), sched=stored,
       override=overrides, lux=lux_readings, was_dark=previous_dark)
def test_target_is_a_percentage_and_repeatable(
    now: int, time_valid: bool, link_up: bool, sched: schedule.Schedule | None,
    override: tuple[int, int] | None, lux: float | None, was_dark: bool | None,
) -> None:
    first = target_level(now, time_valid, link_up, *AMSTERDAM, sched, override, POLICY,
                         lux, was_dark)
    level, source, _ = first
    assert 0 <= level <= 100
    assert source in (SOURCE_SCHEDULE, SOURCE_OVERRIDE, SOURCE_FAILSAFE, SOURCE_AMBIENT)
    # Pure: evaluated again, e.g. right after a reboot, it gives the same answer.
    assert target_level(now, time_valid, link_up, *AMSTERDAM, sched, override, POLICY,
                        lux, was_dark) == first


@settings(max_examples=500, deadline=None)
@given(now=clocks, sched=stored, override=overrides, was_dark=previous_dark,
       lux=st.one_of(st.none(), st.floats(0, 30)))
def test_without_time_and_link_a_dark_street_is_never_unlit(
    now: int, sched: schedule.Schedule | None, override: tuple[int, int] | None,
    was_dark: bool | None, lux: float | None,
) -> None:
    """No valid time, no link: unless the light sensor reads daylight, the lamp burns at
    least at the fail-safe level, whatever override or schedule is stored."""
    level, source, _ = target_level(now, False, False, *AMSTERDAM, sched, override, POLICY,
                                    lux, was_dark)
    failsafe = POLICY.level if sched is None else sched.failsafe
    assert level >= failsafe > 0
    assert source in (SOURCE_FAILSAFE, SOURCE_AMBIENT, SOURCE_OVERRIDE)


def test_override_holds_until_its_expiry_to_the_second() -> None:
    override = (30, NOON + 600)
    for now, expected in ((NOON, (30, SOURCE_OVERRIDE)), (NOON + 599, (30, SOURCE_OVERRIDE)),
                          (NOON + 600, (0, SOURCE_SCHEDULE))):
        assert target_level(now, True, True, *AMSTERDAM, EVENING, override, POLICY)[:2] == expected


def test_schedule_rules_when_time_is_valid_even_without_link() -> None:
    assert target_level(NOON, True, False, *AMSTERDAM, EVENING, None, POLICY)[:2] == (
        0, SOURCE_SCHEDULE)
    assert target_level(MIDNIGHT, True, False, *AMSTERDAM, EVENING, None, POLICY)[:2] == (
        50, SOURCE_SCHEDULE)


def test_untrusted_schedule_falls_back_to_ambient_light_then_failsafe() -> None:
    # No valid time: the stored schedule cannot say whether it is night.
    assert target_level(NOON, False, True, *AMSTERDAM, EVENING, None, POLICY, lux=5.0)[:2] == (
        80, SOURCE_AMBIENT)  # the schedule's own fail-safe level
    assert target_level(NOON, False, True, *AMSTERDAM, EVENING, None, POLICY, lux=500.0)[:2] == (
        0, SOURCE_AMBIENT)
    assert target_level(NOON, False, True, *AMSTERDAM, EVENING, None, POLICY)[:2] == (
        80, SOURCE_FAILSAFE)
    # Nothing stored at all: the policy's level.
    assert target_level(NOON, True, True, *AMSTERDAM, None, None, POLICY)[:2] == (
        90, SOURCE_FAILSAFE)


def test_blind_node_keeps_an_override_above_the_failsafe_level_only_at_night() -> None:
    dimmed = (10, NOON + 3600)
    blind_dark = target_level(NOON, False, False, *AMSTERDAM, None, dimmed, POLICY, lux=3.0)
    assert blind_dark[:2] == (90, SOURCE_AMBIENT)
    blind_day = target_level(NOON, False, False, *AMSTERDAM, None, dimmed, POLICY, lux=900.0)
    assert blind_day[:2] == (10, SOURCE_OVERRIDE)
    connected = target_level(NOON, False, True, *AMSTERDAM, None, dimmed, POLICY, lux=3.0)
    assert connected[:2] == (10, SOURCE_OVERRIDE)


def test_ambient_hysteresis_holds_its_state_inside_the_band() -> None:
    assert ambient_dark(None, True, POLICY) is None
    assert ambient_dark(30, False, POLICY) is True
    assert ambient_dark(60, True, POLICY) is False
    assert ambient_dark(45, True, POLICY) is True
    assert ambient_dark(45, False, POLICY) is False
    assert ambient_dark(45, None, POLICY) is True  # just booted: assume dark, light the street
    # A slow dusk, lux falling then wobbling: one switch on, no flicker.
    dark = None
    trace = [200, 90, 61, 55, 40, 31, 29, 35, 45, 58, 50, 20]
    states = []
    for lux in trace:
        dark = ambient_dark(lux, dark, POLICY)
        states.append(dark)
    assert states == [False] * 6 + [True] * 6


def test_failsafe_policy_never_allows_zero() -> None:
    assert FailsafePolicy(level=0).level == 1
    sched = schedule.parse({0: 1, 1: [[0, 0, 0]], 4: 0})
    assert target_level(NOON, False, False, *AMSTERDAM, sched, None, POLICY)[0] == 1
    with pytest.raises(ValueError):
        FailsafePolicy(dark_lux=50, light_lux=50)


def test_overheat_dims_protectively_and_says_so() -> None:
    assert protect(100, SOURCE_SCHEDULE, FAULT_OVERHEAT) == (OVERHEAT_CAP, SOURCE_FAULT)
    assert protect(30, SOURCE_OVERRIDE, FAULT_OVERHEAT) == (30, SOURCE_OVERRIDE)
    assert protect(100, SOURCE_SCHEDULE, FAULT_LAMP_OUT) == (100, SOURCE_SCHEDULE)


# ---- the same code on the MicroPython VM

FIRMWARE = Path(__file__).resolve().parents[1] / "citisense_firmware"

POLICY_SCRIPT = """
import json
from citisense_firmware import lamp, schedule
from citisense_firmware.lamp import FailsafePolicy, protect, target_level
policy = FailsafePolicy(90, 30, 60)
evening = schedule.parse({0: 7, 1: [[1, 0, 100], [0, 1380, 50], [0, 300, 100], [2, 0, 0]],
                          3: [[0, 60], [1774746000, 120], [1792890000, 60]], 4: 80})
out = []
dark = None
for step in range(400):
    now = 1767225600 + step * 3917
    valid, link = step % 3 != 0, step % 5 != 0
    override = (step % 101, now + 60) if step % 7 == 0 else None
    lux = None if step % 4 == 0 else (step * 37) % 120
    level, source, dark = target_level(now, valid, link, 52.37, 4.9,
                                       evening if step % 2 else None, override, policy,
                                       lux, dark)
    out.append([level, source, dark, protect(level, source, step % 8)])
monitor = lamp.FaultMonitor(600, 5)
meter = lamp.EnergyMeter()
for step in range(60):
    level = lamp.fade_level(0, 100, step * 100, 2000)
    power = None if 40 <= step < 44 else lamp.expected_power(level, 600, 5)
    out.append([level, monitor.update(level, power, 4 if step > 50 else 0),
                meter.add(power or 0, 3_600_000)])
print(json.dumps(out))
"""



@pytest.mark.micropython
def test_lighting_decisions_on_micropython_match_cpython(mp: Any) -> None:
    mp.install_package(FIRMWARE)
    board = mp.run(POLICY_SCRIPT)
    assert board == run_on_cpython(POLICY_SCRIPT)
    rows = json.loads(board)
    assert {row[1] for row in rows[:400]} == {0, 1, 2, 3}
    assert rows[-1][1] != 0  # the meter gap and the overheat report were confirmed
