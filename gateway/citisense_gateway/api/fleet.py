"""Read models over the store: newest readings, alarms, active overrides and reservations.

The store answers per node (`uplinks`, `commands`), so these cost a query or two per
node: fine for a district; a city-wide fleet wants the store to answer "newest per node"
in one query (listed for the store's owners).
"""

from __future__ import annotations

import json

from citisense_gateway import air
from citisense_gateway import twin as twins
from citisense_gateway.api import models, views
from citisense_gateway.store.base import Command, Node, Store, Twin, UplinkRow
from citisense_protocols import messages

# Look back this far (from the node's last message) for its newest message of a kind.
WINDOWS = (900.0, 86400.0, 30 * 86400.0)
DAY = 86400.0
LAMP_FAULTS = messages.LAMP_OUT | messages.DRIVER_FAULT | messages.OVERHEAT | \
    messages.SUPPLY_FAULT
LIGHTING_SENSOR_FAULTS = messages.LIGHT_SENSOR_FAULT | messages.METER_FAULT
SENSOR_FAULT_FLAG = {"parking": messages.PARKING_SENSOR_FAULT, "air": messages.AIR_SENSOR_FAULT,
                     "lighting": LIGHTING_SENSOR_FAULTS}
OPEN_OR_DONE = ("pending", "sent", "acked")
TELEMETRY_FAULT = {"parking": "magnetometer fault", "air": "fan or sensor fault"}


async def latest(store: Store, node_id: int, kind: int, last_seen: float | None
                 ) -> UplinkRow | None:
    if last_seen is None:
        return None
    for window in WINDOWS:
        rows = await store.uplinks(node_id, kind=kind, since=last_seen - window, limit=100_000)
        if rows:
            return rows[-1]
    return None


async def recent(store: Store, node_id: int, kind: int, since: float, limit: int
                 ) -> list[UplinkRow]:
    """The newest `limit` messages of a kind since a time, oldest first."""
    rows = await store.uplinks(node_id, kind=kind, since=since, limit=100_000)
    return rows[-limit:]


def _alarm(node: Node, kind: str, at: float | None, detail: str) -> models.AlarmView:
    return models.AlarmView(kind=kind, node_id=node.node_id,  # type: ignore[arg-type]
                            role=node.role, zone=node.zone,  # type: ignore[arg-type]
                            street=node.street, label=node.label, at=at, detail=detail)


async def alarms(store: Store, node: Node, twin: Twin | None, now: float, stale_after: float
                 ) -> list[models.AlarmView]:
    """Node offline (will or silence), lamp fault, sensor fault; newest evidence wins."""
    if twin is None or twin.last_seen is None:
        return []
    found = []
    status = twins.liveness(twin, now, stale_after)
    if status in (twins.OFFLINE, twins.STALE):
        why = "the node said goodbye (last will)" if status == twins.OFFLINE else \
            "no message for a while"
        found.append(_alarm(node, "node_offline", twin.last_seen, why))
    last = await latest(store, node.node_id, messages.TELEMETRY, twin.last_seen)
    lamp: tuple[float, int] | None = None  # (evidence time, fault bits)
    sensors: dict[str, float] = {}  # sensor name -> evidence time
    if last is not None:
        data = json.loads(last.data)
        bits = data[-1]
        if node.role == "lighting" and bits & LAMP_FAULTS:
            lamp = (last.at, bits & LAMP_FAULTS)
        fault_bits = bits & SENSOR_FAULT_FLAG[node.role]
        if node.role == "lighting":
            for name in views.flag_words(fault_bits, views.LAMP_FAULTS):
                sensors[name] = last.at
        elif fault_bits:
            sensors[TELEMETRY_FAULT[node.role]] = last.at
    # Events newer than the last telemetry tell a fault appeared or cleared since.
    after = last.at if last is not None else twin.last_seen - DAY
    for row in await store.uplinks(node.node_id, kind=messages.EVENT, since=after):
        kind, detail = json.loads(row.data)
        if kind == messages.EV_LAMP_FAULT:
            lamp = (row.at, detail & LAMP_FAULTS) if detail & LAMP_FAULTS else lamp
        elif kind == messages.EV_LAMP_OK:
            still = detail & LAMP_FAULTS
            lamp = ((lamp[0] if lamp else row.at), still) if still else None
        elif kind == messages.EV_SENSOR_FAULT:
            sensors.setdefault(views.SENSORS[detail], row.at)
        elif kind == messages.EV_SENSOR_OK:
            sensors.pop(views.SENSORS[detail], None)
            sensors.pop(TELEMETRY_FAULT.get(node.role, ""), None)
    if lamp is not None:
        found.append(_alarm(node, "lamp_fault", lamp[0],
                            ", ".join(views.flag_words(lamp[1], views.LAMP_FAULTS))))
    for name, at in sorted(sensors.items()):
        found.append(_alarm(node, "sensor_fault", at, name))
    return found


def _started(command: Command) -> float:
    return command.done_at if command.state == "acked" and command.done_at else \
        command.created_at


async def override(store: Store, node: Node, now: float) -> models.OverrideView | None:
    """The node's override in force (or on its way), from its newest dim command."""
    for c in await store.commands(node.node_id, limit=50):
        if c.opcode != messages.OP_DIM:
            continue
        level, duration = json.loads(c.args)
        ends = _started(c) + duration
        if c.state not in OPEN_OR_DONE or duration == 0 or ends <= now:
            return None
        return models.OverrideView(
            node_id=node.node_id, zone=node.zone, street=node.street, level=level,
            started_at=_started(c), ends_at=ends, command_id=c.command_id,
            command_state=c.state, created_by=c.created_by)
    return None


async def reservation(store: Store, node: Node, twin: Twin | None, now: float
                      ) -> models.ReservationView | None:
    if twin is None or twin.reserved_until is None or twin.reserved_until <= now:
        return None
    command = None
    for c in await store.commands(node.node_id, limit=50):
        if c.opcode == messages.OP_RESERVE:
            command = c
            break
    start = float(json.loads(command.args)[0]) if command is not None else None
    return models.ReservationView(
        node_id=node.node_id, zone=node.zone, label=node.label, start=start,
        until=twin.reserved_until, command_id=command.command_id if command else None,
        command_state=command.state if command else None,
        created_by=command.created_by if command else None)


async def air_index(store: Store, node: Node, now: float) -> models.AirIndexView:
    """EAQI of the newest hour (PM as 24-hour means), or level 0 without recent data."""
    hours = await air.node_hours(store, node.node_id, now - DAY - 3600)
    current = hours[-1] if hours and hours[-1].hour >= now - 2 * 3600 else None
    level, name, driver = 0, None, None
    pm25 = pm10 = None
    if current is not None:
        index = air.eaqi(hours)[-1]
        level, driver = index.level, index.driver
        name = index.name if level else None
        day = [h for h in hours if h.hour > current.hour - DAY]
        pm25 = _mean([h.pm25 for h in day])
        pm10 = _mean([h.pm10 for h in day])
    return models.AirIndexView(
        node_id=node.node_id, zone=node.zone, street=node.street, label=node.label,
        lat=node.lat, lon=node.lon, level=level, name=name, driver=driver, pm25_24h=pm25,
        pm10_24h=pm10, no2_1h=round(current.no2, 1) if current and current.no2 is not None
        else None,
        at=float(current.hour) if current else None,
        flags=views.flag_words(current.flags, views.AIR_FLAGS) if current else [])


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(sum(kept) / len(kept), 1) if kept else None
