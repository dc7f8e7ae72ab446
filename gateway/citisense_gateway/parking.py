"""Parking zones: live free counts from the bays' twins, and occupancy history.

A bay is free only if its sensor says free and it is not reserved: the count is what a
driver can use. A bay with no or an unknown reading counts as unknown, never as free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from citisense_gateway.store.base import IngestBatch, Node, Store, Twin

FREE, OCCUPIED = 0, 1


@dataclass(frozen=True)
class ZoneCount:
    zone: str
    free: int
    occupied: int
    reserved: int
    unknown: int

    @property
    def total(self) -> int:
        return self.free + self.occupied + self.reserved + self.unknown


def count(nodes: Iterable[Node], twins: dict[int, Twin], now: float) -> dict[str, ZoneCount]:
    tallies: dict[str, list[int]] = {}
    for node in nodes:
        if node.role != "parking":
            continue
        tally = tallies.setdefault(node.zone, [0, 0, 0, 0])
        t = twins.get(node.node_id)
        state = t.bay_state if t is not None else None
        reserved = t is not None and t.reserved_until is not None and t.reserved_until > now
        if state == OCCUPIED:
            tally[1] += 1
        elif state == FREE:
            tally[2 if reserved else 0] += 1
        else:
            tally[3] += 1
    return {zone: ZoneCount(zone, *t) for zone, t in sorted(tallies.items())}


class Parking:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._last: dict[str, ZoneCount] = {}

    async def zones(self) -> dict[str, ZoneCount]:
        twins = {t.node_id: t for t in await self.store.twins()}
        return count(await self.store.nodes(role="parking"), twins, self.clock())

    async def observe(self, batch: IngestBatch) -> None:
        """Record a zone's counts in its history whenever a batch changed them."""
        if not any(u.bay_state is not None for u in batch.twins.values()):
            return
        now = self.clock()
        for zone, counts in (await self.zones()).items():
            if self._last.get(zone) != counts:
                self._last[zone] = counts
                await self.store.record_occupancy(zone, now, counts.free, counts.occupied,
                                                  counts.unknown)
