"""The fleet: node list with live status, node detail, telemetry, maintenance commands,
and registering nodes (`citisense provision`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from citisense_gateway import acl, registry
from citisense_gateway.api import auth, fleet, models, views
from citisense_gateway.api.errors import ApiError
from citisense_gateway.api.openapi import CHANGE, READ, READ_ONE, errors
from citisense_gateway.api.services import Services
from citisense_gateway.store.base import Conflict, NotFound, Twin
from citisense_protocols import messages

log = logging.getLogger("citisense.api")
router = APIRouter(tags=["nodes"])
NodeId = Annotated[int, Path(ge=1, le=4294967295, description="node id")]
DAY = 86400.0


async def twin_map(s: Services) -> dict[int, Twin]:
    return {t.node_id: t for t in await s.store.twins()}


@router.get("/nodes", responses=READ)
async def list_nodes(
    _: auth.Viewer, s: auth.ServicesDep,
    role: models.NodeRole | None = None,
    zone: Annotated[str | None, Query(max_length=64)] = None,
    street: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[models.Status | None, Query(description="liveness")] = None,
) -> list[models.NodeSummary]:
    """Every registered node with its live status; filters combine."""
    nodes = await s.store.nodes(role=role, zone=zone, street=street)
    found = await twin_map(s)
    now = s.clock()
    result = [views.summary(n, found.get(n.node_id), now, s.stale_after) for n in nodes]
    return [r for r in result if state is None or r.status == state]


@router.post("/nodes", status_code=201, responses=errors(401, 403, 409, 422))
async def add_node(req: models.NodeCreate, current: auth.Technician, s: auth.ServicesDep,
                   response: Response) -> models.NodeProvisioned:
    """Register a new node. The gateway makes its MAC key and broker password and gives
    them out once, in this response only (never logged, not stored in clear: write them
    to the node's config). The audit log records who registered which node, not its
    secrets. `citisense provision` calls this."""
    if (req.lat is None) != (req.lon is None):
        missing = "lat" if req.lat is None else "lon"
        raise ApiError(422, "give both lat and lon, or neither", [(f"body.{missing}", "missing")])
    try:
        made = await registry.provision(
            s.store, req.node_id, req.role, user=current.user.name, zone=req.zone,
            street=req.street, lat=req.lat, lon=req.lon, label=req.label)
    except Conflict:
        if req.node_id is None:
            raise
        raise ApiError(409, f"node {req.node_id} is already registered: choose another "
                            "node_id, or leave it out to take the next free one",
                       [("body.node_id", "already registered")]) from None
    await registry_changed(s)
    response.headers["Cache-Control"] = "no-store"  # secrets: no cache may keep a copy
    return models.NodeProvisioned(
        node_id=made.node.node_id, role=req.role, mac_key=made.mac_key.hex(),
        broker_user=acl.node_user(made.node.node_id), broker_password=made.broker_password)


@router.delete("/nodes/{node_id}", status_code=204, responses=errors(401, 403, 404, 422))
async def remove_node(node_id: NodeId, current: auth.Technician, s: auth.ServicesDep) -> None:
    """Remove a node from the registry: its key and broker account stop working. Meant to
    undo a provisioning that could not finish; what the node sent stays stored."""
    await s.store.remove_node(node_id, current.user.name)
    await registry_changed(s)


async def registry_changed(s: Services) -> None:
    # The change is committed: a failure here must not lose the caller the node's secrets.
    # The gateway's periodic refresh catches up anyway.
    try:
        await s.node_registry_changed()
    except Exception:
        log.exception("could not refresh the keyring and broker accounts after a registry "
                      "change; the next periodic refresh will")


@router.get("/nodes/{node_id}", responses=READ_ONE)
async def node_detail(node_id: NodeId, _: auth.Viewer,
                      s: auth.ServicesDep) -> models.NodeDetail:
    """The node, its twin (desired and reported state), newest telemetry, events, commands."""
    node = await s.store.get_node(node_id)
    try:
        twin: Twin | None = await s.store.twin(node_id)
    except NotFound:
        twin = None
    now = s.clock()
    last_seen = twin.last_seen if twin else None
    row, events, commands = await asyncio.gather(
        fleet.latest(s.store, node_id, messages.TELEMETRY, last_seen),
        fleet.recent(s.store, node_id, messages.EVENT, now - 7 * DAY, 20),
        s.store.commands(node_id, limit=20))
    last = views.row_reading(node.role, row) if row is not None else None
    return views.detail(node, twin, now, s.stale_after, last,
                        [views.event(e) for e in reversed(events)], commands)


@router.get("/nodes/{node_id}/telemetry", responses=READ_ONE)
async def telemetry(
    _: auth.Viewer, s: auth.ServicesDep,
    node_id: NodeId,
    since: Annotated[float | None, Query(ge=0, le=4294967295,
                                description="Unix time; default 24 hours ago")] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="newest readings kept")] = 1000,
) -> list[models.Reading]:
    node = await s.store.get_node(node_id)
    start = s.clock() - DAY if since is None else since
    rows = await fleet.recent(s.store, node_id, messages.TELEMETRY, start, limit)
    return [views.row_reading(node.role, r) for r in rows]


@router.get("/nodes/{node_id}/births", responses=READ_ONE)
async def births(
    _: auth.Viewer, s: auth.ServicesDep, node_id: NodeId,
    limit: Annotated[int, Query(ge=1, le=100, description="newest births kept")] = 10,
) -> list[models.BirthView]:
    """The node's latest births, newest first: what `citisense flash` watches to commission
    a node without broker credentials."""
    await s.store.get_node(node_id)
    rows = await fleet.recent(s.store, node_id, messages.BIRTH, s.clock() - 30 * DAY, limit)
    return [views.birth(row) for row in reversed(rows)]


@router.post("/nodes/{node_id}/commands", status_code=202, responses=CHANGE)
async def node_command(req: models.NodeCommandRequest, node_id: NodeId,
                       current: auth.Technician,
                       s: auth.ServicesDep) -> models.CommandView:
    """Maintenance: blink to find the node, recalibrate a sensor, reboot."""
    await s.store.get_node(node_id)
    if req.op == "identify":
        op, args, field = messages.OP_IDENTIFY, req.seconds or 30, "seconds"
    elif req.op == "recalibrate":
        op, args, field = messages.OP_RECALIBRATE, req.sensor or 0, "sensor"
    else:
        op, args, field = messages.OP_REBOOT, None, ""
    for name in ("seconds", "sensor"):
        if name != field and getattr(req, name) is not None:
            raise ApiError(422, f"{req.op} takes no {name}", [(f"body.{name}", "not allowed")])
    issued = await s.commands.issue([node_id], op, args, user=current.user.name,
                                    note=f"{req.op} by {current.user.name}")
    return views.command(issued[0])


@router.get("/zones", responses=READ)
async def zones(_: auth.Viewer, s: auth.ServicesDep
                ) -> list[models.ZoneView]:
    """Zones with their number of nodes per role."""
    counts: dict[str, dict[str, int]] = {}
    for node in await s.store.nodes():
        tally = counts.setdefault(node.zone, {"lighting": 0, "parking": 0, "air": 0})
        tally[node.role] += 1
    return [models.ZoneView(zone=z, **c) for z, c in sorted(counts.items())]
