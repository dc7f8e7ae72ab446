"""The simulated street behind the virtual boards: its clock, sun and light,
weather and air, parking bays and Wi-Fi. Pure logic; tests drive it directly.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

EARTH_FIELD_UT = (16.0, 2.0, -44.0)  # a mid-latitude Earth field, sensor axes
MAGNET_DRIFT_UT_PER_C = 0.04  # offset drift of a magnetometer with temperature


class StreetClock:
    """Street time (Unix seconds) that may run faster than real time."""

    def __init__(self, start: float | None = None, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._street = time.time() if start is None else start
        self._real = time.time()
        self._speed = speed

    def now(self) -> float:
        with self._lock:
            return self._street + (time.time() - self._real) * self._speed

    @property
    def speed(self) -> float:
        return self._speed

    def _reanchor(self, street: float, speed: float) -> None:
        with self._lock:
            self._street, self._real, self._speed = street, time.time(), speed

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, not {speed}")
        self._reanchor(self.now(), speed)

    def advance(self, seconds: float) -> None:
        """Jump forward (boards see time pass at once, as after a long sleep)."""
        self._reanchor(self.now() + seconds, self._speed)

    def anchor(self) -> dict[str, float]:
        """The clock as the board process takes it (milliseconds)."""
        with self._lock:
            return {"street": self._street * 1000, "real": self._real * 1000, "speed": self._speed}


def sun_elevation(when: float, latitude: float, longitude: float) -> float:
    """Solar elevation in degrees (NOAA's approximation, well within 1 degree)."""
    day = datetime.fromtimestamp(when, UTC)
    year_start = datetime(day.year, 1, 1, tzinfo=UTC)
    days_in_year = (datetime(day.year + 1, 1, 1, tzinfo=UTC) - year_start).days
    hours = day.hour + day.minute / 60 + day.second / 3600
    gamma = 2 * math.pi / days_in_year * ((day - year_start).days + (hours - 12) / 24)
    eqtime = 229.18 * (
        0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma) + 0.00148 * math.sin(3 * gamma)
    )
    true_solar_minutes = hours * 60 + eqtime + 4 * longitude
    hour_angle = math.radians(true_solar_minutes / 4 - 180)
    lat = math.radians(latitude)
    cos_zenith = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(
        hour_angle
    )
    return 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))


def illuminance(elevation: float, cloud: float = 0.0) -> float:
    """Outdoor illuminance (lux) for a solar elevation: daylight, twilight, night."""
    if elevation >= 0:
        lux = 400 + 120_000 * math.sin(math.radians(elevation))
    elif elevation >= -6:  # civil twilight: 400 lux at sunset, 3.4 lux at its end
        lux = 3.4 * (400 / 3.4) ** ((elevation + 6) / 6)
    elif elevation >= -12:  # nautical twilight down to starlight
        lux = 0.002 * (3.4 / 0.002) ** ((elevation + 12) / 6)
    else:
        lux = 0.002
    return lux * (1 - 0.8 * min(1.0, max(0.0, cloud)))


@dataclass
class Air:
    """Weather and air quality, the same along the street."""

    mean_celsius: float = 15.0
    daily_swing_celsius: float = 4.0  # warmest at 15:00, coldest at 03:00 local solar time
    humidity: float = 65.0  # %RH
    pressure_hpa: float = 1013.25
    pm25: float = 8.0  # ug/m3
    pm10: float = 15.0  # ug/m3
    no2: float = 25.0  # ug/m3

    def celsius(self, when: float, longitude: float) -> float:
        solar_hours = (when / 3600 + longitude / 15) % 24
        return self.mean_celsius + self.daily_swing_celsius * math.cos(
            (solar_hours - 15) / 24 * 2 * math.pi
        )


@dataclass
class Wifi:
    """The street's access point; None for ssid/password accepts any."""

    up: bool = True
    ssid: str | None = None
    password: str | None = None
    rssi: int = -62

    def as_dict(self) -> dict[str, object]:
        return {"up": self.up, "ssid": self.ssid, "password": self.password, "rssi": self.rssi}


@dataclass
class Bay:
    """A parking bay; a car brings its own magnetic signature."""

    car_ut: tuple[float, float, float] | None = None


@dataclass
class Street:
    """Everything outside the boards. Boards read it; tests change it."""

    latitude: float = 51.05
    longitude: float = 3.72
    clock: StreetClock = field(default_factory=StreetClock)
    air: Air = field(default_factory=Air)
    wifi: Wifi = field(default_factory=Wifi)
    cloud: float = 0.0
    bays: dict[str, Bay] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        self._cars = random.Random(self.seed)

    def now(self) -> float:
        return self.clock.now()

    def sun_elevation(self, when: float | None = None) -> float:
        return sun_elevation(self.now() if when is None else when, self.latitude, self.longitude)

    def lux(self, when: float | None = None) -> float:
        return illuminance(self.sun_elevation(when), self.cloud)

    def celsius(self, when: float | None = None) -> float:
        return self.air.celsius(self.now() if when is None else when, self.longitude)

    def bay(self, name: str) -> Bay:
        return self.bays.setdefault(name, Bay())

    def park(self, bay: str) -> None:
        """A car arrives: cars differ, mostly in the vertical field they add."""
        r = self._cars
        self.bay(bay).car_ut = (r.uniform(-12, 12), r.uniform(-12, 12), r.uniform(15, 45))

    def leave(self, bay: str) -> None:
        self.bay(bay).car_ut = None

    def occupied(self, bay: str) -> bool:
        return self.bay(bay).car_ut is not None

    def magnetic_field(self, bay: str, celsius: float) -> tuple[float, float, float]:
        """Field at a bay's magnetometer, with the sensor's temperature drift."""
        car = self.bay(bay).car_ut or (0.0, 0.0, 0.0)
        drift = MAGNET_DRIFT_UT_PER_C * (celsius - 20)
        return (
            EARTH_FIELD_UT[0] + car[0] + drift,
            EARTH_FIELD_UT[1] + car[1] + drift,
            EARTH_FIELD_UT[2] + car[2] - drift,
        )
