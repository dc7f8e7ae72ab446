"""Air quality: hourly means that honour the quality flags, and the European AQI.

A sample's PM values do not count while the sensor warms up, has a fault, is uncalibrated
or the air is above 75 % RH (optical counters over-read); its NO2 does not count while
warming up, faulty or uncalibrated. The index uses the hour's NO2 and the mean PM of the
24 hours up to it (the EEA's averaging), computed with the firmware's own EAQI function.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from citisense_gateway import firmware_logic
from citisense_gateway.store.base import Store
from citisense_protocols import messages

WARMUP, HUMID, FAULT, UNCALIBRATED = 1, 2, 4, 8
PM_INVALID = WARMUP | HUMID | FAULT | UNCALIBRATED
NO2_INVALID = WARMUP | FAULT | UNCALIBRATED
PM25, PM10, NO2, FLAGS = 0, 1, 2, 6


@dataclass(frozen=True)
class AirHour:
    hour: int  # Unix time of the hour's start
    samples: int
    pm25: float | None  # ug/m3, mean of valid samples
    pm10: float | None
    no2: float | None
    flags: int  # every flag seen in the hour


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) / 10 if values else None  # 0.1 ug/m3 on the wire


def hourly(samples: Iterable[tuple[float, list[int | None]]]) -> list[AirHour]:
    """Hourly aggregates of (time, air telemetry data) samples."""
    hours: dict[int, list[list[int | None]]] = {}
    for at, data in samples:
        hours.setdefault(int(at // 3600) * 3600, []).append(data)
    result = []
    for hour, rows in sorted(hours.items()):
        valid: dict[int, list[int]] = {PM25: [], PM10: [], NO2: []}
        flags = 0
        for row in rows:
            flag = row[FLAGS] or 0
            flags |= flag
            for field in (PM25, PM10, NO2):
                value = row[field]
                invalid = NO2_INVALID if field == NO2 else PM_INVALID
                if value is not None and not flag & invalid:
                    valid[field].append(value)
        result.append(AirHour(hour, len(rows), _mean(valid[PM25]), _mean(valid[PM10]),
                              _mean(valid[NO2]), flags))
    return result


@dataclass(frozen=True)
class Index:
    hour: int
    level: int  # 1 good .. 6 extremely poor; 0 nothing valid to judge
    name: str
    driver: str | None


def eaqi(hours: list[AirHour]) -> list[Index]:
    result = []
    for i, h in enumerate(hours):
        day = [x for x in hours[: i + 1] if x.hour > h.hour - 86400]
        pm25 = [x.pm25 for x in day if x.pm25 is not None]
        pm10 = [x.pm10 for x in day if x.pm10 is not None]
        level, driver = firmware_logic.eaqi_index(
            sum(pm25) / len(pm25) if pm25 else None, sum(pm10) / len(pm10) if pm10 else None,
            h.no2)
        name = firmware_logic.EAQI_NAMES[level - 1] if level else "no data"
        result.append(Index(h.hour, level, name, driver))
    return result


async def node_hours(store: Store, node_id: int, since: float) -> list[AirHour]:
    rows = await store.uplinks(node_id, kind=messages.TELEMETRY, since=since, limit=100_000)
    return hourly((row.at, json.loads(row.data)) for row in rows)
