"""Retention: raw telemetry becomes hourly summaries after `raw_days`; other kinds expire.

Keep raw data only as long as its purpose needs: a summary per node and hour (mean, min,
max per measurement, flags OR-ed; air-quality means only over samples whose quality
flags allow them) serves trends and reports without the minute-by-minute record.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from citisense_gateway import air
from citisense_gateway.config import RetentionSection
from citisense_gateway.store.base import HourlyRow, Store, UplinkRow
from citisense_protocols import catalogue, messages

log = logging.getLogger("citisense.retention")
DAY = 86400.0
CHUNK = 20_000
FLAG_FIELDS = {"faults", "flags"}
STATUS_KINDS = [messages.BIRTH, messages.HEALTH, messages.ACK, messages.WILL]


def _fields(length: int) -> list[tuple[int, str]]:
    role = messages.ROLE_BY_LENGTH[length]
    return [(slot, name) for slot, name, *_ in catalogue.fields(catalogue.TELEMETRY_FIELDS[role])]


def summarise(samples: list[list[int | None]]) -> dict[str, Any]:
    """One hour of one node's telemetry (all of one layout) as a summary."""
    summary: dict[str, Any] = {}
    invalid = {air.PM25: air.PM_INVALID, air.PM10: air.PM_INVALID, air.NO2: air.NO2_INVALID}
    is_air = len(samples[0]) == 7
    for slot, name in _fields(len(samples[0])):
        if name in FLAG_FIELDS:
            flags = 0
            for s in samples:
                flags |= s[slot] or 0
            summary[name] = flags
            continue
        values = [s[slot] for s in samples if s[slot] is not None
                  and not (is_air and slot in invalid and (s[air.FLAGS] or 0) & invalid[slot])]
        numbers = [v for v in values if v is not None]
        summary[name] = ({"n": len(numbers), "mean": sum(numbers) / len(numbers),
                          "min": min(numbers), "max": max(numbers)} if numbers else {"n": 0})
    return summary


@dataclass(frozen=True)
class RetentionPolicy:
    raw_days: int = 30
    hourly_days: int = 730
    status_days: int = 90
    events_days: int = 365

    @classmethod
    def of(cls, section: RetentionSection) -> RetentionPolicy:
        return cls(section.raw_days, section.hourly_days, section.status_days,
                   section.events_days)


async def run_once(store: Store, policy: RetentionPolicy, now: float) -> dict[str, int]:
    # Whole hours only, so an hour is never summarised from part of its samples.
    before = (now - policy.raw_days * DAY) // 3600 * 3600
    summarised = 0
    while True:
        rows = await store.telemetry_before(before, CHUNK)
        if not rows:
            break
        groups: dict[tuple[int, int], list[UplinkRow]] = defaultdict(list)
        for row in rows:
            groups[(row.node_id, int(row.at // 3600) * 3600)].append(row)
        if len(rows) == CHUNK and len(groups) > 1:
            groups.popitem()  # rows are ordered: the last node-hour may go on in the next chunk
        hourly = [HourlyRow(node, hour, len(group),
                            json.dumps(summarise([json.loads(r.data) for r in group])))
                  for (node, hour), group in groups.items()]
        summarised += await store.downsample(
            hourly, [(r.node_id, r.boot, r.seq) for group in groups.values() for r in group])
        if len(rows) < CHUNK:
            break
    counts = {
        "telemetry_summarised": summarised,
        "status_purged": await store.purge(STATUS_KINDS, now - policy.status_days * DAY),
        "events_purged": await store.purge([messages.EVENT], now - policy.events_days * DAY),
        "hourly_purged": await store.purge_hourly(now - policy.hourly_days * DAY),
        "hours_forgotten": await store.forget_hours(
            now - max(policy.raw_days, policy.status_days, policy.events_days) * DAY - 3600),
    }
    log.info("retention pass", extra=counts)
    return counts
