"""The fleet: node list with live status, node detail, telemetry, maintenance commands."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query

from citisense_gateway.api import auth, fleet, models, views
from citisense_gateway.api.errors import ApiError
from citisense_gateway.api.openapi import CHANGE, READ, READ_ONE
from citisense_gateway.api.services import Services
from citisense_gateway.store.base import NotFound, Twin
from citisense_protocols import messages

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
