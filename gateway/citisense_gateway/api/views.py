"""Stored records turned into what an operator reads: named fields in real units.

The wire carries scaled integers in positional arrays (protocols/SPEC.md); here each
value gets its name with the unit as suffix (`pm25_ugm3`, `temp_c`) and flag bitmasks
become lists of words.
"""

from __future__ import annotations

import json
from typing import Any

from citisense_gateway import twin as twins
from citisense_gateway.api import models
from citisense_gateway.store.base import Command, Node, Twin, UplinkRow
from citisense_protocols import catalogue, messages

SOURCES = ("schedule", "override", "failsafe", "ambient", "fault", "identify")
BAY_STATES = ("free", "occupied", "unknown")
INDICATORS = ("free", "occupied", "reserved")
LAMP_FAULTS = ("lamp out", "driver fault", "overheat", "supply out of range",
               "light sensor fault", "power meter fault")
PARKING_FLAGS = ("calibrating", "uncalibrated", "sensor fault", "reserved bay taken",
                 "baseline drift")
AIR_FLAGS = ("warm-up", "humid", "sensor fault", "uncalibrated")
SENSORS = ("all", "magnetometer", "particulate matter sensor", "NO2 sensor",
           "climate sensor", "ambient light sensor", "power meter")
RESET_CAUSES = ("unknown", "power-on", "external", "watchdog", "deep sleep wake", "soft reset",
                "brownout", "panic", "commanded reboot", "app update")
OP_NAMES = {op: name for op, (name, _, _) in enumerate(catalogue.OPS) if name}
HEALTH_NAMES = [name for _, name, *_ in catalogue.fields(catalogue.HEALTH_FIELDS)]

# (name with unit, wire slot, divisor) per role
_AIR = (("pm25_ugm3", 0, 10), ("pm10_ugm3", 1, 10), ("no2_ugm3", 2, 10), ("temp_c", 3, 100),
        ("rh_pct", 4, 10), ("pressure_hpa", 5, 10))


def flag_words(bits: int, names: tuple[str, ...]) -> list[str]:
    return [name for i, name in enumerate(names) if bits >> i & 1]


def _scaled(value: int | None, divisor: int) -> float | None:
    return None if value is None else value / divisor


def reading(role: str, at: float, data: list[Any]) -> models.Reading:
    """One telemetry array of a node of `role`, named and scaled."""
    values: dict[str, int | float | str | None]
    if role == "lighting":
        level, source, power, energy, lux, faults = data
        values = {"level_pct": level, "source": SOURCES[source],
                  "power_w": _scaled(power, 10), "energy_wh": energy, "lux": lux}
        flags = flag_words(faults, LAMP_FAULTS)
    elif role == "parking":
        state, indicator, dz, confidence, bits = data
        values = {"state": BAY_STATES[state], "indicator": INDICATORS[indicator],
                  "dz_ut": _scaled(dz, 10), "confidence_pct": confidence}
        flags = flag_words(bits, PARKING_FLAGS)
    else:
        values = {name: _scaled(data[slot], div) for name, slot, div in _AIR}
        flags = flag_words(data[6], AIR_FLAGS)
    return models.Reading(at=at, values=values, flags=flags)


def row_reading(role: str, row: UplinkRow) -> models.Reading:
    return reading(role, row.at, json.loads(row.data))


def air_point(row: UplinkRow) -> models.AirPoint:
    data = json.loads(row.data)
    return models.AirPoint(
        at=row.at, pm25=_scaled(data[0], 10), pm10=_scaled(data[1], 10),
        no2=_scaled(data[2], 10), temp=_scaled(data[3], 100), rh=_scaled(data[4], 10),
        pressure=_scaled(data[5], 10), flags=flag_words(data[6], AIR_FLAGS))


def event(row: UplinkRow) -> models.EventView:
    kind, detail = json.loads(row.data)
    name = catalogue.EVENT_NAMES[kind]
    described: dict[str, int | str]
    if kind in (messages.EV_SENSOR_FAULT, messages.EV_SENSOR_OK):
        described = {"sensor": SENSORS[detail]}
    elif kind in (messages.EV_LAMP_FAULT, messages.EV_LAMP_OK):
        described = {"faults": ", ".join(flag_words(detail, LAMP_FAULTS)) or "none"}
    elif kind == messages.EV_BAY_OCCUPIED:
        described = {"confidence_pct": detail}
    else:
        described = {"occupied_s": detail}
    return models.EventView(at=row.at, event=name, detail=described)


def health(twin: Twin) -> dict[str, Any]:
    data = json.loads(twin.health or "{}")
    return {HEALTH_NAMES[int(k)]: v for k, v in data.items() if k.isdigit()
            and int(k) < len(HEALTH_NAMES)}


def command(c: Command) -> models.CommandView:
    return models.CommandView(
        command_id=c.command_id, node_id=c.node_id, op=OP_NAMES.get(c.opcode, str(c.opcode)),
        args=json.loads(c.args), state=c.state,  # type: ignore[arg-type]
        result=None if c.result is None else messages.RESULT_NAMES[c.result],
        created_at=c.created_at, created_by=c.created_by, expires_at=c.expires_at,
        attempts=c.attempts, sent_at=c.sent_at, done_at=c.done_at, note=c.note)


def status(twin: Twin | None, now: float, stale_after: float) -> str:
    return twins.NEVER_SEEN if twin is None else twins.liveness(twin, now, stale_after)


def summary(node: Node, twin: Twin | None, now: float, stale_after: float
            ) -> models.NodeSummary:
    schedule = None
    if node.role == "lighting":
        schedule = models.NodeScheduleView(
            name=twin.desired_schedule if twin else None,
            desired_version=twin.desired_version if twin else None,
            reported_version=twin.reported_schedule if twin else None,
            in_sync=twin is not None and not twins.schedule_drift(twin))
    bay = None
    if node.role == "parking":
        state = twin.bay_state if twin is not None else None
        bay = BAY_STATES[state] if state is not None else "unknown"
    return models.NodeSummary(
        node_id=node.node_id, role=node.role,  # type: ignore[arg-type]
        zone=node.zone, street=node.street, label=node.label, lat=node.lat, lon=node.lon,
        status=status(twin, now, stale_after),  # type: ignore[arg-type]
        last_seen=twin.last_seen if twin else None, firmware=twin.firmware if twin else "",
        schedule=schedule, bay_state=bay,  # type: ignore[arg-type]
        reserved_until=twin.reserved_until if twin and node.role == "parking" else None)


def birth(row: UplinkRow) -> models.BirthView:
    data = json.loads(row.data)
    loc = data.get("5")
    return models.BirthView(
        boot=row.boot, seq=row.seq, received_at=row.received_at, firmware=data["0"],
        role=messages.ROLE_NAMES[data["1"]], board=data["2"], config_hash=data["3"],
        reset_cause=data["4"], location=None if loc is None else [loc[0], loc[1]])


def detail(node: Node, twin: Twin | None, now: float, stale_after: float,
           last: models.Reading | None, events: list[models.EventView],
           commands: list[Command]) -> models.NodeDetail:
    base = summary(node, twin, now, stale_after)
    cause = twin.reset_cause if twin is not None else None
    return models.NodeDetail(
        **base.model_dump(), boot=twin.boot if twin else None,
        board=twin.board if twin else "", config_hash=twin.config_hash if twin else "",
        reset_cause=RESET_CAUSES[cause] if cause is not None else None,
        via=twin.via if twin else "", health=health(twin) if twin else {},
        last_telemetry=last, events=events, commands=[command(c) for c in commands])
