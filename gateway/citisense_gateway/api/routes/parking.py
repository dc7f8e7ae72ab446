"""Parking: zone occupancy (live and history) and bay reservations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from citisense_gateway.api import auth, fleet, models, views
from citisense_gateway.api.errors import ApiError
from citisense_gateway.api.openapi import CHANGE, READ, READ_ONE
from citisense_gateway.api.services import Services
from citisense_gateway.parking import ZoneCount
from citisense_gateway.store.base import Node, NotFound
from citisense_protocols import messages

router = APIRouter(tags=["parking"])
NodeId = Annotated[int, Path(ge=1, le=4294967295, description="node id of the bay's sensor")]
DAY = 86400.0


def summary(count: ZoneCount) -> models.ParkingSummary:
    return models.ParkingSummary(zone=count.zone, bays=count.total, free=count.free,
                                 occupied=count.occupied, unknown=count.unknown,
                                 reserved=count.reserved)


async def bay(s: Services, node_id: int) -> Node:
    node = await s.store.get_node(node_id)
    if node.role != "parking":
        raise ApiError(422, f"node {node_id} is a {node.role} node, not a parking bay",
                       [("node_id", "not a parking bay")])
    return node


@router.get("/parking/zones", responses=READ)
async def zones(_: auth.Viewer, s: auth.ServicesDep
                ) -> list[models.ParkingSummary]:
    """Per zone: bays a driver can use now (free, not reserved), occupied, reserved, unknown."""
    return [summary(c) for c in (await s.parking.zones()).values()]


@router.get("/parking/zones/{zone}", responses=READ_ONE)
async def zone_detail(
    _: auth.Viewer, s: auth.ServicesDep,
    zone: Annotated[str, Path(min_length=1, max_length=64)],
    since: Annotated[float | None, Query(ge=0, le=4294967295,
                                description="history from; default 24 hours ago")] = None,
) -> models.ParkingZoneView:
    counts = await s.parking.zones()
    if zone not in counts:
        raise NotFound(f"zone {zone!r} has no parking bays")
    now = s.clock()
    twins = {t.node_id: t for t in await s.store.twins()}
    bays = []
    for node in await s.store.nodes(zone=zone, role="parking"):
        t = twins.get(node.node_id)
        state = t.bay_state if t is not None and t.bay_state is not None else 2
        until = t.reserved_until if t is not None and (t.reserved_until or 0) > now else None
        bays.append(models.BayView(
            node_id=node.node_id, label=node.label, street=node.street, lat=node.lat,
            lon=node.lon, status=views.status(t, now, s.stale_after),  # type: ignore[arg-type]
            state=views.BAY_STATES[state], reserved_until=until))  # type: ignore[arg-type]
    history = await s.store.occupancy_history(zone, now - DAY if since is None else since)
    return models.ParkingZoneView(
        summary=summary(counts[zone]), bays=bays,
        history=[models.OccupancyPoint(at=a, free=f, occupied=o, unknown=u)
                 for a, f, o, u in history])


@router.get("/parking/reservations", responses=READ)
async def reservations(_: auth.Viewer, s: auth.ServicesDep
                       ) -> list[models.ReservationView]:
    """Reservations not yet over."""
    now = s.clock()
    twins = {t.node_id: t for t in await s.store.twins()}
    found = []
    for node in await s.store.nodes(role="parking"):
        r = await fleet.reservation(s.store, node, twins.get(node.node_id), now)
        if r is not None:
            found.append(r)
    return found


@router.post("/parking/reservations", status_code=202, responses=CHANGE)
async def reserve(req: models.ReservationRequest, current: auth.Operator,
                  s: auth.ServicesDep) -> models.ReservationView:
    """Reserve a bay: its light shows `reserved` from `start` until `until`."""
    node = await bay(s, req.node_id)
    now = s.clock()
    start = int(now) if req.start is None else req.start
    if req.until <= start:
        raise ApiError(422, "until must be after start", [("body.until", "not after start")])
    if req.until <= now:
        raise ApiError(422, "until is in the past", [("body.until", "in the past")])
    if req.until - start > 7 * DAY:
        raise ApiError(422, "a reservation lasts at most 7 days",
                       [("body.until", "more than 7 days after start")])
    issued = await s.commands.issue([node.node_id], messages.OP_RESERVE, [start, req.until],
                                    user=current.user.name, ttl=max(60.0, req.until - now),
                                    note=f"reserve bay until {req.until}")
    await s.store.set_reservation(node.node_id, float(req.until))
    await s.store.audit(current.user.name, "bay.reserve", str(node.node_id),
                        {"start": start, "until": req.until})
    c = issued[0]
    return models.ReservationView(node_id=node.node_id, zone=node.zone, label=node.label,
                                  start=float(start), until=float(req.until),
                                  command_id=c.command_id, command_state=c.state,
                                  created_by=c.created_by)


@router.delete("/parking/reservations/{node_id}", status_code=202, responses=CHANGE)
async def release(node_id: NodeId, current: auth.Operator,
                  s: auth.ServicesDep) -> models.ReleaseResult:
    """Cancel the bay's reservation."""
    node = await bay(s, node_id)
    issued = await s.commands.issue([node.node_id], messages.OP_RELEASE, None,
                                    user=current.user.name, note="release bay")
    await s.store.set_reservation(node.node_id, None)
    await s.store.audit(current.user.name, "bay.release", str(node.node_id), {})
    return models.ReleaseResult(node_id=node.node_id, command_id=issued[0].command_id)
