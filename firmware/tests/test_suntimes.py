"""Sun times on the node against astral 3.2, in double and emulated single precision.

Run as a script to print the figures: `.venv/bin/python firmware/tests/test_suntimes.py`.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import struct
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from astral import Observer
from astral import sun as astral_sun
from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_boards.mpvm import run_on_cpython
from citisense_firmware import civil, suntimes
from citisense_firmware.suntimes import NEVER_RISES, NEVER_SETS, ZENITH_SUNRISE

UTC = dt.UTC
EPOCH = dt.date(1970, 1, 1)
ZENITH_CIVIL = 96.0549  # civil twilight with astral's refraction convention
LATITUDES = (35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 63.0, 66.0, 68.0, 69.0, 70.0)
LONGITUDES = (-9.5, 2.3, 24.9)  # Lisbon, Paris, Helsinki: the span of European longitudes
EVENTS: tuple[tuple[str, Callable[..., dt.datetime], float, bool], ...] = (
    ("sunrise", astral_sun.sunrise, ZENITH_SUNRISE, True),
    ("sunset", astral_sun.sunset, ZENITH_SUNRISE, False),
    ("dawn", astral_sun.dawn, ZENITH_CIVIL, True),
    ("dusk", astral_sun.dusk, ZENITH_CIVIL, False),
)


def geometric_zenith(observer: Observer, unix: int) -> float:
    """The sun's geometric zenith angle at an instant, from astral's position formulas."""
    moment = dt.datetime.fromtimestamp(unix, UTC)
    return float(astral_sun.zenith(observer, moment, with_refraction=False))


def compare_with_astral(
    latitudes: tuple[float, ...], longitudes: tuple[float, ...], year: int, every_days: int
) -> dict[str, Any]:
    """Every event of the grid, matched to ours. Where the two differ by more than a
    minute, both instants are checked against the sun's geometric zenith (astral's own
    position function): astral's slips are those where its instant misses the zenith
    angle and ours does not."""
    errors: list[float] = []
    reference_off: list[tuple[Any, ...]] = []
    only_ours: list[tuple[Any, ...]] = []
    failures: list[tuple[Any, ...]] = []
    start = dt.date(year, 1, 1)
    for latitude in latitudes:
        for longitude in longitudes:
            observer = Observer(latitude, longitude)
            for offset in range(0, 365, every_days):
                date = start + dt.timedelta(days=offset)
                day = (date - EPOCH).days
                for name, function, zenith, rising in EVENTS:
                    case = (latitude, longitude, date.isoformat(), name)
                    ours = [suntimes.sun_event(d, latitude, longitude, zenith, rising)
                            for d in (day - 1, day, day + 1)]
                    try:
                        reference: int | None = int(function(observer, date).timestamp())
                    except ValueError:
                        reference = None
                    if reference is None:
                        # Astral finds no crossing on its UTC date: ours is polar, or an
                        # event that sits exactly on the zenith.
                        if ours[1] > 0:
                            miss = abs(geometric_zenith(observer, ours[1]) - zenith)
                            (only_ours if miss < 0.001 else failures).append(case)
                        continue
                    found = [t for t in ours if t > 0]
                    best = min(found, key=lambda t: abs(t - reference)) if found else None
                    error = abs(best - reference) / 60 if best is not None else math.inf
                    if error <= 1.0:
                        errors.append(error)
                        continue
                    astral_miss = abs(geometric_zenith(observer, reference) - zenith)
                    our_miss = (abs(geometric_zenith(observer, best) - zenith)
                                if best is not None else math.inf)
                    # Near the polar circles a thousandth of a degree is minutes of time.
                    if our_miss < 0.001 and astral_miss > our_miss + 0.001:
                        reference_off.append((*case, round(error, 2), round(astral_miss, 3)))
                    else:
                        failures.append((*case, error))
    return {
        "compared": len(errors),
        "max_error_min": max(errors),
        "p99_error_min": sorted(errors)[int(len(errors) * 0.99)],
        "reference_off": reference_off,
        "only_ours": only_ours,
        "failures": failures,
    }


def test_sun_times_match_astral_within_a_minute_from_35_to_70_north() -> None:
    result = compare_with_astral(LATITUDES, LONGITUDES, 2026, every_days=3)
    assert result["failures"] == []
    assert result["max_error_min"] <= 1.0
    assert result["compared"] > 14000
    # Astral evaluates the sun at a stale instant (two fixed iterations from 00:00 UTC):
    # on days the sun grazes the horizon, and for events near 00:00 UTC, it lands off
    # the zenith angle. Those few cases are the only ones allowed to differ.
    assert len(result["reference_off"]) < 0.01 * result["compared"]


def test_polar_days_are_classified_by_the_sun_itself() -> None:
    """Whenever we say the sun never rises or never sets, its zenith at solar noon or
    midnight confirms it (0.02 degree allows for the declination's change in 12 h)."""
    checked = 0
    for latitude in (64.0, 66.0, 68.0, 70.0):
        observer = Observer(latitude, 15.0)
        for day in range(20454, 20454 + 365):
            noon = suntimes.solar_noon(day, 15.0)
            for rising in (True, False):
                event = suntimes.sun_event(day, latitude, 15.0, ZENITH_SUNRISE, rising)
                midnight = noon - 43200 if rising else noon + 43200
                if event == NEVER_RISES:
                    assert geometric_zenith(observer, noon) > ZENITH_SUNRISE - 0.02
                    checked += 1
                elif event == NEVER_SETS:
                    assert geometric_zenith(observer, midnight) < ZENITH_SUNRISE + 0.02
                    checked += 1
                else:
                    assert noon - 43200 < event < noon + 43200
    assert checked > 200


def test_seventy_north_has_midnight_sun_in_june_and_polar_night_in_december() -> None:
    june = (dt.date(2026, 6, 21) - EPOCH).days
    december = (dt.date(2026, 12, 21) - EPOCH).days
    for rising in (True, False):
        assert suntimes.sun_event(june, 70.0, 25.0, ZENITH_SUNRISE, rising) == NEVER_SETS
        assert suntimes.sun_event(december, 70.0, 25.0, ZENITH_SUNRISE, rising) == NEVER_RISES


@settings(max_examples=300, deadline=None)
@given(
    latitude=st.floats(35.0, 60.0),
    longitude=st.floats(-10.0, 30.0),
    day=st.integers(10957, 36524),  # 2000 .. 2069
)
def test_sunrise_precedes_noon_precedes_sunset_on_the_same_solar_day(
    latitude: float, longitude: float, day: int
) -> None:
    rise = suntimes.sun_event(day, latitude, longitude, ZENITH_SUNRISE, True)
    noon = suntimes.solar_noon(day, longitude)
    sunset = suntimes.sun_event(day, latitude, longitude, ZENITH_SUNRISE, False)
    assert rise < noon < sunset
    assert suntimes.solar_day(noon, longitude) == day
    # Symmetric about the transit to within the change of declination over the day.
    assert abs((noon - rise) - (sunset - noon)) < 120


# ---- single precision: ESP32 MicroPython builds have 32-bit floats

_F32 = struct.Struct("f")


def _round32(value: float) -> float:
    return float(_F32.unpack(_F32.pack(value))[0])


class F32(float):
    """A float that rounds to single precision after every operation, as on the ESP32."""

    def __new__(cls, value: float) -> F32:
        return super().__new__(cls, _round32(value))


def _single_precision(name: str) -> Callable[[Any, Any], Any]:
    operation = getattr(float, name)

    def apply(self: F32, other: Any) -> Any:
        if not isinstance(other, (int, float)):
            return NotImplemented
        result = operation(float(self), _round32(other))  # literals are single too
        return F32(result) if isinstance(result, float) else result

    return apply


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow"):
    setattr(F32, f"__{_name}__", _single_precision(f"__{_name}__"))
    setattr(F32, f"__r{_name}__", _single_precision(f"__r{_name}__"))
F32.__neg__ = lambda self: F32(-float(self))  # type: ignore[method-assign,assignment]


def single_precision_math() -> types.ModuleType:
    """A `math` whose functions round arguments and results to single precision."""
    module = types.ModuleType("math")
    for name in dir(math):
        value = getattr(math, name)
        if callable(value):
            def wrapped(*args: Any, _function: Any = value) -> Any:
                result = _function(*(_round32(a) if isinstance(a, float) else a for a in args))
                return F32(result) if isinstance(result, float) else result

            setattr(module, name, wrapped)
        elif isinstance(value, float):
            setattr(module, name, F32(value))
    return module


def load_single_precision(module_name: str) -> types.ModuleType:
    """A private copy of a firmware module whose floats are all single precision."""
    path = Path(suntimes.__file__).with_name(module_name + ".py")
    spec = importlib.util.spec_from_file_location("citisense_firmware._f32_" + module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    real_math = sys.modules["math"]
    sys.modules["math"] = single_precision_math()
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules["math"] = real_math
    return module


def compare_single_precision(latitudes: tuple[float, ...], every_days: int) -> int:
    """Largest difference in seconds between single- and double-precision event times."""
    single = load_single_precision("suntimes")
    worst = 0
    for latitude in latitudes:
        for longitude in LONGITUDES:
            for day in range(20454, 20454 + 365, every_days):
                for zenith in (ZENITH_SUNRISE, ZENITH_CIVIL):
                    for rising in (True, False):
                        double = suntimes.sun_event(day, latitude, longitude, zenith, rising)
                        emulated = single.sun_event(
                            day, F32(latitude), F32(longitude), F32(zenith), rising
                        )
                        assert (double < 0) == (emulated < 0) or abs(double - emulated) < 60
                        if double > 0 and emulated > 0:
                            worst = max(worst, abs(double - emulated))
    return worst


def test_single_precision_floats_stay_within_seconds() -> None:
    single = load_single_precision("suntimes")
    # The emulation really is single precision: 0.1 is not representable the same way.
    assert single.radians(F32(0.1)) != math.radians(0.1)
    assert compare_single_precision((35.0, 50.0, 60.0, 66.0, 70.0), every_days=7) <= 5


if __name__ == "__main__":
    every = 1
    figures = compare_with_astral(LATITUDES, LONGITUDES, 2026, every_days=every)
    print(f"astral comparison, lat {LATITUDES[0]}..{LATITUDES[-1]} N, lon {LONGITUDES}, "
          f"every {every} day(s) of 2026, sunrise/sunset/civil dawn/dusk")
    print(f"  events compared within 1 min: {figures['compared']}")
    print(f"  max error: {figures['max_error_min']:.3f} min, "
          f"99th percentile: {figures['p99_error_min']:.3f} min")
    print(f"  astral's own slips (its instant misses the zenith): {len(figures['reference_off'])}")
    for case in figures["reference_off"][:10]:
        print("   ", case)
    print(f"  events astral misses, ours on the zenith: {len(figures['only_ours'])}")
    print(f"  failures: {figures['failures']}")
    print(f"single precision vs double, max difference: "
          f"{compare_single_precision(LATITUDES, every_days=2)} s")


# ---- the same code on the MicroPython VM

FIRMWARE = Path(__file__).resolve().parents[1] / "citisense_firmware"

SUN_SCRIPT = """
import json
from citisense_firmware import suntimes
out = []
for latitude in (35.0, 45.5, 52.37, 60.0, 66.5, 69.65, 70.0):
    for longitude in (-9.5, 4.9, 24.9):
        for day in range(20454, 20454 + 365, 13):
            out.append([suntimes.solar_noon(day, longitude)] + [
                suntimes.sun_event(day, latitude, longitude, zenith, rising)
                for zenith in (suntimes.ZENITH_SUNRISE, 96.0549) for rising in (True, False)])
print(json.dumps(out))
"""



@pytest.mark.micropython
def test_sun_times_on_micropython_match_cpython(mp: Any) -> None:
    mp.install_package(FIRMWARE)
    board = json.loads(mp.run(SUN_SCRIPT))
    here = json.loads(run_on_cpython(SUN_SCRIPT))
    assert len(board) == len(here) == 7 * 3 * 29
    for ours, theirs in zip(here, board, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            # Polar sentinels agree exactly; times within a second (libm rounding).
            assert a == b if min(a, b) < 0 else abs(a - b) <= 1


@given(st.integers(-719162, 2932896))  # 0001-01-01 .. 9999-12-31, what datetime spans
def test_the_civil_calendar_both_ways_matches_datetime(days: int) -> None:
    """The RTC driver turns dates into day numbers, the schedule day numbers into dates."""
    date = dt.date(1970, 1, 1) + dt.timedelta(days=days)
    assert civil.civil_from_days(days) == (date.year, date.month, date.day)
    assert civil.days_from_civil(date.year, date.month, date.day) == days
