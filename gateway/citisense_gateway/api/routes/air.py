"""Air quality: the European AQI per sensor, and measurement series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from citisense_gateway.api import auth, fleet, models, views
from citisense_gateway.api.errors import ApiError
from citisense_gateway.api.openapi import READ, READ_ONE
from citisense_protocols import messages

router = APIRouter(tags=["air"])


@router.get("/air/index", responses=READ)
async def index(_: auth.Viewer, s: auth.ServicesDep
                ) -> list[models.AirIndexView]:
    """Per air-quality node: EAQI level of the newest hour (NO2 hourly, PM 24-hour means),
    counting only samples whose quality flags allow it."""
    now = s.clock()
    return [await fleet.air_index(s.store, n, now) for n in await s.store.nodes(role="air")]


@router.get("/air/nodes/{node_id}/series", responses=READ_ONE)
async def series(
    _: auth.Viewer, s: auth.ServicesDep,
    node_id: Annotated[int, Path(ge=1, le=4294967295)],
    since: Annotated[float | None, Query(ge=0, le=4294967295,
                                description="Unix time; default 24 hours ago")] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="newest points kept")] = 2000,
) -> models.AirSeries:
    """Measurements in µg/m³, °C, %, hPa, with their quality flags."""
    node = await s.store.get_node(node_id)
    if node.role != "air":
        raise ApiError(422, f"node {node_id} is a {node.role} node, not an air-quality node",
                       [("node_id", "not an air-quality node")])
    start = s.clock() - 86400 if since is None else since
    rows = await fleet.recent(s.store, node_id, messages.TELEMETRY, start, limit)
    return models.AirSeries(node_id=node_id, points=[views.air_point(r) for r in rows])
