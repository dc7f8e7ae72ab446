"""Lighting schedules: create, edit (a new version), validate, preview, assign, rollout."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query

from citisense_gateway import registry, schedules
from citisense_gateway.api import auth, models, sun, views
from citisense_gateway.api.errors import ApiError
from citisense_gateway.api.openapi import CHANGE, READ, READ_ONE
from citisense_gateway.api.services import Services
from citisense_gateway.registry import RegistryError
from citisense_gateway.store.base import Conflict, NotFound, ScheduleRecord, Twin
from citisense_protocols import catalogue, messages

router = APIRouter(tags=["schedules"])
RESERVED = ("preview", "validate")  # /schedules/preview is not a schedule
Name = Annotated[str, Path(pattern=models.SCHEDULE_NAME, description="schedule name")]


def source(definition: models.ScheduleDefinition) -> dict[str, Any]:
    """The operator's definition as schedules.compile_schedule reads it."""
    return definition.model_dump(mode="json", exclude_none=True, exclude={"name"})


def wire_json(wire: dict[int, Any]) -> dict[str, Any]:
    names = [name for _, name, *_ in catalogue.fields(catalogue.SCHEDULE_FIELDS)]
    return {names[k]: v for k, v in sorted(wire.items())}


async def view(s: Services, rec: ScheduleRecord, all_versions: list[ScheduleRecord] | None = None,
               twins: list[Twin] | None = None) -> models.ScheduleView:
    versions = all_versions if all_versions is not None else await s.store.schedules()
    found = twins if twins is not None else await s.store.twins()
    return models.ScheduleView(
        name=rec.name, version=rec.version, created_at=rec.created_at, created_by=rec.created_by,
        definition=json.loads(rec.body)["source"], wire=wire_json(schedules.wire_of(rec)),
        versions=[r.version for r in versions if r.name == rec.name],
        assigned=sum(1 for t in found if t.desired_schedule == rec.name))


async def save(s: Services, name: str, src: dict[str, Any], user: str) -> ScheduleRecord:
    version = await s.store.next_schedule_version()
    rec = await asyncio.to_thread(schedules.record, name, src, version, user, s.clock())
    await s.store.add_schedule(rec)
    return rec


@router.get("/schedules", responses=READ)
async def list_schedules(_: auth.Viewer, s: auth.ServicesDep
                         ) -> list[models.ScheduleView]:
    """Every schedule at its latest version."""
    records = await s.store.schedules()
    found = await s.store.twins()
    latest = {r.name: r for r in records}  # ordered by name, version
    return [await view(s, r, records, found) for r in latest.values()]


@router.post("/schedules", status_code=201, responses=CHANGE)
async def create_schedule(req: models.ScheduleCreate, current: auth.Operator,
                          s: auth.ServicesDep) -> models.ScheduleView:
    """A new schedule (version numbers are shared by all schedules, so they only grow)."""
    if req.name in RESERVED:
        raise ApiError(422, f"{req.name!r} names an operation; choose another name",
                       [("body.name", "reserved")])
    try:
        await s.store.get_schedule(req.name)
    except NotFound:
        pass
    else:
        raise Conflict(f"schedule {req.name!r} exists; edit it with PUT /schedules/{req.name}")
    return await view(s, await save(s, req.name, source(req), current.user.name))


@router.post("/schedules/validate", responses=READ)
async def validate(req: models.ScheduleDefinition, _: auth.Viewer,
                   s: auth.ServicesDep) -> models.Validation:
    """Check a definition as the gateway and the lamps would, without saving it."""
    wire = await asyncio.to_thread(schedules.compile_schedule, source(req), 1, s.clock())
    return models.Validation(valid=True, wire=wire_json(wire))


@router.get("/schedules/{name}", responses=READ_ONE)
async def get_schedule(
    _: auth.Viewer, s: auth.ServicesDep,
    name: Name, version: Annotated[int | None, Query(ge=1, le=4294967295)] = None,
) -> models.ScheduleView:
    return await view(s, await s.store.get_schedule(name, version))


@router.put("/schedules/{name}", responses=CHANGE)
async def edit_schedule(req: models.ScheduleDefinition, name: Name,
                        current: auth.Operator, s: auth.ServicesDep
                        ) -> models.ScheduleView:
    """Save a new version. Nodes keep the version they run until it is assigned again."""
    await s.store.get_schedule(name)
    return await view(s, await save(s, name, source(req), current.user.name))


# -- preview --------------------------------------------------------------------------------
async def place(s: Services, node_id: int | None, zone: str | None, lat: float | None,
                lon: float | None) -> tuple[float, float]:
    """Where to evaluate a preview: a node, the middle of a zone's lamps, or coordinates."""
    if node_id is not None:
        node = await s.store.get_node(node_id)
        if node.lat is None or node.lon is None:
            raise ApiError(422, f"node {node_id} has no location yet",
                           [("node_id", "not commissioned")])
        return node.lat, node.lon
    if zone is not None:
        located = [n for n in await s.store.nodes(zone=zone) if n.lat is not None]
        if not located:
            raise ApiError(422, f"zone {zone!r} has no node with a location", [("zone", "empty")])
        return (sum(n.lat or 0.0 for n in located) / len(located),
                sum(n.lon or 0.0 for n in located) / len(located))
    if lat is not None and lon is not None:
        return lat, lon
    raise ApiError(422, "say where: node_id, zone, or lat and lon", [("node_id", "missing")])


def night_of(date: dt.date | None, zone: str, now: float) -> dt.date:
    if date is None:  # tonight; after midnight, the night still going on
        return dt.datetime.fromtimestamp(now - 12 * 3600, ZoneInfo(zone)).date()
    return date


async def preview(s: Services, wire: dict[int, Any], zone: str, where: tuple[float, float],
                  date: dt.date | None) -> models.PreviewView:
    night = night_of(date, zone, s.clock())
    lat, lon = where
    changes = await asyncio.to_thread(schedules.preview, wire, lat, lon, night, zone)
    dusk, dawn = sun.night(night, zone, lat, lon)
    return models.PreviewView(
        date=night.isoformat(), timezone=zone, lat=lat, lon=lon, start=float(changes[0].at),
        end=float(changes[0].at + 86400), dusk=dusk, dawn=dawn,
        changes=[models.LevelChange(at=c.at, level=c.level) for c in changes])


@router.post("/schedules/preview", responses=READ_ONE)
async def preview_any(req: models.PreviewRequest, _: auth.Viewer,
                      s: auth.ServicesDep) -> models.PreviewView:
    """Tonight's levels (noon to noon, local time) of a saved or unsaved schedule at a node,
    a zone or a place, with dusk and dawn."""
    if (req.definition is None) == (req.name is None):
        raise ApiError(422, "give either a definition or the name of a saved schedule",
                       [("body.definition", "exactly one of definition, name")])
    if req.definition is not None:
        src = source(req.definition)
        wire = await asyncio.to_thread(schedules.compile_schedule, src, 1, s.clock())
    else:
        rec = await s.store.get_schedule(req.name or "", req.version)
        src, wire = json.loads(rec.body)["source"], schedules.wire_of(rec)
    where = await place(s, req.node_id, req.zone, req.lat, req.lon)
    return await preview(s, wire, src.get("timezone", "UTC"), where, req.date)


@router.get("/schedules/{name}/preview", responses=READ_ONE)
async def preview_saved(
    _: auth.Viewer, s: auth.ServicesDep,
    name: Name, version: Annotated[int | None, Query(ge=1, le=4294967295)] = None,
    node_id: Annotated[int | None, Query(ge=1, le=4294967295)] = None,
    zone: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    date: Annotated[dt.date | None, Query(description="the night of; default tonight")] = None,
) -> models.PreviewView:
    rec = await s.store.get_schedule(name, version)
    where = await place(s, node_id, zone, lat, lon)
    return await preview(s, schedules.wire_of(rec), json.loads(rec.body)["source"].get(
        "timezone", "UTC"), where, date)


# -- assignment and rollout -----------------------------------------------------------------
async def resolve(s: Services, target: models.Target, role: str) -> list[int]:
    given = [k for k in ("zone", "street", "node_ids") if getattr(target, k) is not None]
    if len(given) != 1:
        raise ApiError(422, "name exactly one target: zone, street or node_ids",
                       [(f"body.{k}", "exactly one of zone, street, node_ids")
                        for k in (given or ["zone"])])
    try:
        return await registry.targets(s.store, nodes=target.node_ids, street=target.street,
                                      zone=target.zone, role=role)
    except RegistryError as err:  # no such nodes in that zone or street
        raise NotFound(str(err)) from err


@router.post("/schedules/{name}/assign", responses=CHANGE)
async def assign(target: models.Target, name: Name, current: auth.Operator,
                 s: auth.ServicesDep) -> models.AssignResult:
    """Make the schedule's latest version the one these lighting nodes should run, and
    push it. If a node already runs a higher version (of another schedule), the
    schedule is saved again under a new version first: nodes refuse a lower one."""
    rec = await s.store.get_schedule(name)
    node_ids = await resolve(s, target, "lighting")
    found = await s.store.twins()
    twins = [t for t in found if t.node_id in set(node_ids)]
    if any(_would_refuse(t, rec) for t in twins):
        src = json.loads(rec.body)["source"]
        rec = await save(s, name, src, current.user.name)
    commands = await s.reconciler.assign_schedule(name, node_ids, current.user.name,
                                                  rec.version)
    return models.AssignResult(schedule=name, version=rec.version, nodes=node_ids,
                               commands=[c.command_id for c in commands])


def _would_refuse(twin: Twin, rec: ScheduleRecord) -> bool:
    """The node runs, or is about to run, a version that `rec` does not exceed."""
    if (twin.reported_schedule or 0) > rec.version:
        return True
    desired = (twin.desired_schedule, twin.desired_version)
    return (twin.desired_version or 0) >= rec.version and desired != (rec.name, rec.version)


@router.get("/schedules/{name}/rollout", responses=READ_ONE)
async def rollout(name: Name, _: auth.Viewer,
                  s: auth.ServicesDep) -> models.RolloutView:
    """Per node assigned this schedule: the version it should run, the one it runs, and
    where the push stands."""
    latest = await s.store.get_schedule(name)
    now = s.clock()
    nodes = {n.node_id: n for n in await s.store.nodes(role="lighting")}
    entries = []
    for t in await s.store.twins():
        node = nodes.get(t.node_id)
        if t.desired_schedule != name or node is None:
            continue
        command = None
        for c in await s.store.commands(t.node_id, limit=50):
            if c.opcode == messages.OP_SCHEDULE:
                command = c
                break
        running = t.desired_version is not None and t.reported_schedule == t.desired_version
        state = "running" if running else (command.state if command else "unknown")
        entries.append(models.RolloutNode(
            node_id=t.node_id, zone=node.zone, street=node.street,
            status=views.status(t, now, s.stale_after),  # type: ignore[arg-type]
            desired_version=t.desired_version, reported_version=t.reported_schedule,
            command_id=command.command_id if command else None,
            command_state=command.state if command else None,
            result=messages.RESULT_NAMES[command.result] if command and command.result
            is not None else None, state=state))  # type: ignore[arg-type]
    summary: dict[str, int] = {}
    for e in entries:
        summary[e.state] = summary.get(e.state, 0) + 1
    return models.RolloutView(schedule=name, latest_version=latest.version, summary=summary,
                              nodes=entries)
