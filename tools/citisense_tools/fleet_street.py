"""The day of a simulated street: cars come and go, traffic fouls the air.

Drives a citisense_boards.street.Street minute by minute of street time. Bays fill to a
target occupancy that follows the hour (a third at night, most during office hours) with
stays of about STAY_MIN minutes; NO2 and particulates rise with the morning and evening
rush; humidity peaks before dawn. Local time is solar time at the street's longitude.
"""

from __future__ import annotations

import asyncio
import math
import random

from citisense_boards.street import Street

STEP_S = 60.0
STAY_MIN = 120.0
BACKGROUND_NO2 = 15.0  # ug/m3
TRAFFIC_NO2 = 40.0  # added at the height of a rush hour
BACKGROUND_PM25 = 6.0
TRAFFIC_PM25 = 10.0
PM10_PER_PM25 = 1.8


def local_hour(when: float, longitude: float) -> float:
    return (when / 3600 + longitude / 15) % 24


def occupancy_target(hour: float) -> float:
    """Share of bays taken, by local hour."""
    if 8 <= hour < 18:
        return 0.85
    if 18 <= hour < 23:
        return 0.6
    return 0.3


def rush(hour: float) -> float:
    """Traffic intensity 0..1: peaks at 08:00 and 17:30."""
    return max(math.exp(-((hour - 8.0) ** 2) / 2.0), math.exp(-((hour - 17.5) ** 2) / 2.0))


class Traffic:
    def __init__(self, street: Street, bays: list[str], seed: int = 0) -> None:
        self.street = street
        self.bays = bays
        # One generator per bay: the same bay lives the same day whatever else runs.
        self._rngs = {bay: random.Random(f"{seed}/{bay}") for bay in bays}
        self._air = random.Random(f"{seed}/air")
        self._pm_drift = 0.0

    def step(self, minutes: float = STEP_S / 60) -> None:
        street = self.street
        hour = local_hour(street.now(), street.longitude)
        target = occupancy_target(hour)
        leave = minutes / STAY_MIN
        arrive = leave * target / (1 - target)  # steady state: arrive / (arrive + leave)
        for bay in self.bays:
            draw = self._rngs[bay].random()
            if street.occupied(bay):
                if draw < leave:
                    street.leave(bay)
            elif draw < arrive:
                street.park(bay)
        intensity = rush(hour)
        self._pm_drift = max(-3.0, min(3.0, self._pm_drift + self._air.gauss(0.0, 0.2)))
        air = street.air
        air.no2 = BACKGROUND_NO2 + TRAFFIC_NO2 * intensity + self._air.gauss(0.0, 2.0)
        air.pm25 = max(1.0, BACKGROUND_PM25 + TRAFFIC_PM25 * intensity + self._pm_drift)
        air.pm10 = air.pm25 * PM10_PER_PM25
        air.humidity = 70.0 + 15.0 * math.cos((hour - 5.0) / 24 * 2 * math.pi)

    async def run(self) -> None:
        """Step every street minute, forever."""
        while True:
            self.step()
            await asyncio.sleep(STEP_S / self.street.clock.speed)
