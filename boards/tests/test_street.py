"""The simulated street: clock, sun and light, air, bays."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_boards.street import Street, StreetClock, illuminance, sun_elevation


def test_clock_runs_at_its_speed_and_can_jump() -> None:
    clock = StreetClock(start=1_000_000.0, speed=100.0)
    before = clock.now()
    time.sleep(0.05)
    assert clock.now() - before >= 4.0  # 50 ms real at 100x
    clock.set_speed(1.0)
    clock.advance(3600)
    assert clock.now() - before >= 3600
    anchor = clock.anchor()
    assert anchor["speed"] == 1.0 and anchor["street"] / 1000 > before
    with pytest.raises(ValueError, match="positive"):
        clock.set_speed(0)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_sun_is_high_at_solar_noon_and_below_the_horizon_at_midnight() -> None:
    # Equinox at longitude 0: solar noon is at about 12:07 UTC, elevation 90 - latitude.
    noon = sun_elevation(ts("2025-03-20T12:07:00"), 51.0, 0.0)
    assert abs(noon - 39.0) < 1.0
    assert sun_elevation(ts("2025-03-20T00:07:00"), 51.0, 0.0) < -30
    # Midsummer in the far north: the sun does not set.
    assert sun_elevation(ts("2025-06-21T00:00:00"), 78.0, 15.0) > 0


@given(when=st.floats(0, 4e9), lat=st.floats(-89, 89), lon=st.floats(-180, 180))
def test_sun_elevation_stays_within_the_sky(when: float, lat: float, lon: float) -> None:
    assert -90 <= sun_elevation(when, lat, lon) <= 90


@given(low=st.floats(-90, 90), high=st.floats(-90, 90))
def test_light_grows_with_the_sun_and_drops_under_clouds(low: float, high: float) -> None:
    low, high = min(low, high), max(low, high)
    assert illuminance(low) <= illuminance(high)
    assert illuminance(high, cloud=1.0) < illuminance(high)


def test_day_is_bright_and_night_is_dark() -> None:
    street = Street(clock=StreetClock(start=ts("2025-06-21T12:00:00")))
    assert street.lux() > 50_000
    street.clock.advance(12 * 3600)
    assert street.lux() < 1


def test_a_parked_car_changes_the_bay_field_more_than_a_day_of_temperature() -> None:
    street = Street(seed=3)
    empty = street.magnetic_field("A1", 20.0)
    warm = street.magnetic_field("A1", 28.0)
    street.park("A1")
    assert street.occupied("A1")
    parked = street.magnetic_field("A1", 20.0)
    drift = max(abs(a - b) for a, b in zip(empty, warm, strict=True))
    change = max(abs(a - b) for a, b in zip(empty, parked, strict=True))
    assert 0 < drift < 1.0 < change
    street.leave("A1")
    assert street.magnetic_field("A1", 20.0) == empty


def test_air_temperature_follows_the_day() -> None:
    street = Street(longitude=0.0, clock=StreetClock(start=ts("2025-04-01T15:00:00")))
    afternoon = street.celsius()
    assert afternoon == pytest.approx(street.air.mean_celsius + street.air.daily_swing_celsius)
    assert street.celsius(ts("2025-04-01T03:00:00")) < afternoon
