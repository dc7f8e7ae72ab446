"""The European Air Quality Index (EEA) from PM2.5, PM10 and NO2, for node and gateway.

Bands are the EEA's six-level scheme (2019 revision), in ug/m3, each upper bound
inclusive: a band's value belongs to the better level. The index of a set of pollutants
is the worst level among them. The EEA applies it to hourly NO2 and to 24-hour running
means of PM; the caller chooses the averaging.
"""

from citisense_firmware.compat import const

GOOD = const(1)
FAIR = const(2)
MODERATE = const(3)
POOR = const(4)
VERY_POOR = const(5)
EXTREMELY_POOR = const(6)

NAMES = ("good", "fair", "moderate", "poor", "very poor", "extremely poor")

# Upper bounds of levels 1..5; above the last bound is level 6.
BANDS = {
    "pm25": (10, 20, 25, 50, 75),
    "pm10": (20, 40, 50, 100, 150),
    "no2": (40, 90, 120, 230, 340),
}


def level(pollutant: str, concentration: float) -> int:
    """The index level (1..6) of one pollutant's concentration in ug/m3."""
    bounds = BANDS[pollutant]
    for index, upper in enumerate(bounds):
        if concentration <= upper:
            return index + 1
    return EXTREMELY_POOR


def index(pm25: float | None = None, pm10: float | None = None,
          no2: float | None = None) -> tuple[int, str | None]:
    """(worst level, pollutant driving it); (0, None) when nothing was measured.

    On a tie the first of pm25, pm10, no2 is named.
    """
    worst, driver = 0, None
    for pollutant, value in (("pm25", pm25), ("pm10", pm10), ("no2", no2)):
        if value is not None:
            found = level(pollutant, value)
            if found > worst:
                worst, driver = found, pollutant
    return worst, driver
