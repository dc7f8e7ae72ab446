"""Sunrise, sunset and twilight times computed on the node (NOAA solar position formulas).

Times are integer Unix seconds; only angles and fractions of a day are floats, and those
stay small, so the results hold on ESP32 builds whose floats are single precision.

Days are *solar days*: day `n` is the day whose local mean noon falls at
`n * 86400 + 43200 - longitude * 240` Unix seconds (`solar_day` maps a time to it). The
morning event of a solar day precedes its noon and the evening event follows it, so a
night runs from the evening event of day n to the morning event of day n + 1.

Polar behaviour: when the sun does not cross the zenith angle on a solar day, the event
is `NEVER_RISES` (the sun stays below: polar night, dark all day) or `NEVER_SETS` (the
sun stays above: midnight sun, light all day). The decision is made at the converged
estimate, so it flips exactly on the day the sun first misses the horizon.
"""

from math import acos, asin, cos, degrees, radians, sin, tan

from citisense_firmware.compat import const

NEVER_RISES = const(-1)
NEVER_SETS = const(-2)

# Effective zenith angles: the sun's upper limb (16') plus atmospheric refraction at that
# depression, the same convention as the reference library (astral).
ZENITH_SUNRISE = 90.78911
ZENITH_CIVIL = 96.05490

_J2000_DAYS = const(10957)  # 2000-01-01 in days since 1970-01-01
_CYCLE_DAYS = const(1461)  # four years: mean motions are reduced per cycle to keep floats small
_ITERATIONS = const(3)


def solar_day(unix: int, longitude: float) -> int:
    """The solar day number containing a Unix time (local mean solar midnight to midnight)."""
    return (unix + int(longitude * 240)) // 86400


def _mean_angle(epoch_deg: float, per_cycle_deg: float, per_day_deg: float,
                cycles: int, days: float) -> float:
    return (epoch_deg + per_cycle_deg * cycles + per_day_deg * days) % 360.0


def _position(whole_days: int, fraction: float) -> tuple[float, float]:
    """(declination in radians, equation of time in minutes) at J2000.0 + days."""
    # Mean motions are split into four-year cycles and a remainder so the product with
    # the day count stays below 1500 degrees, where single precision still resolves 1e-4.
    cycles = whole_days // _CYCLE_DAYS
    days = (whole_days - cycles * _CYCLE_DAYS) + fraction
    t = (whole_days + fraction) / 36525.0  # Julian centuries, only for slow terms
    mean_long = radians(_mean_angle(280.46646, 0.0307932, 0.98564736, cycles, days))
    anomaly = radians(_mean_angle(357.52911, -0.0379884, 0.98560028, cycles, days))
    eccentricity = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    centre = (
        sin(anomaly) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + sin(2.0 * anomaly) * (0.019993 - 0.000101 * t)
        + sin(3.0 * anomaly) * 0.000289
    )
    omega = radians((125.04 - 1934.136 * t) % 360.0)
    apparent_long = mean_long + radians(centre - 0.00569 - 0.00478 * sin(omega))
    obliquity = radians(
        23.0 + (26.0 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60.0) / 60.0
        + 0.00256 * cos(omega)
    )
    declination = asin(sin(obliquity) * sin(apparent_long))
    y = tan(obliquity / 2.0)
    y *= y
    sin_m = sin(anomaly)
    equation = (
        y * sin(2.0 * mean_long)
        - 2.0 * eccentricity * sin_m
        + 4.0 * eccentricity * y * sin_m * cos(2.0 * mean_long)
        - 0.5 * y * y * sin(4.0 * mean_long)
        - 1.25 * eccentricity * eccentricity * sin(2.0 * anomaly)
    )
    return declination, degrees(equation) * 4.0


def solar_noon(day: int, longitude: float) -> int:
    """Unix time of the sun's transit on a solar day."""
    noon = 720.0 - 4.0 * longitude
    equation = _position(day - _J2000_DAYS, noon / 1440.0 - 0.5)[1]
    return day * 86400 + round((noon - equation) * 60.0)


def sun_event(day: int, latitude: float, longitude: float, zenith: float, rising: bool) -> int:
    """Unix time the sun crosses `zenith` (degrees) rising or setting on a solar day,
    or NEVER_RISES / NEVER_SETS when it stays on one side of it all day."""
    sin_lat = sin(radians(latitude))
    cos_lat = cos(radians(latitude))
    cos_zenith = cos(radians(zenith))
    whole_days = day - _J2000_DAYS
    mean_noon = 720.0 - 4.0 * longitude  # minutes after 00:00 UTC of `day`
    sign = -4.0 if rising else 4.0  # minutes of time per degree of hour angle
    minutes = mean_noon
    outcome = 0
    for _ in range(_ITERATIONS):
        # Re-evaluate the sun's position at the previous estimate of the event.
        declination, equation = _position(whole_days, minutes / 1440.0 - 0.5)
        cos_hour = (cos_zenith - sin_lat * sin(declination)) / (cos_lat * cos(declination))
        if cos_hour > 1.0:
            outcome, hour_angle = NEVER_RISES, 0.0
        elif cos_hour < -1.0:
            outcome, hour_angle = NEVER_SETS, 180.0
        else:
            outcome, hour_angle = 0, degrees(acos(cos_hour))
        minutes = mean_noon - equation + sign * hour_angle
    if outcome:
        return outcome
    return day * 86400 + round(minutes * 60.0)
