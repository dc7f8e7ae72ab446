"""Commands and their status, alarms, and the audit log."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query

from citisense_gateway.api import auth, fleet, models, views
from citisense_gateway.api.openapi import READ, READ_ONE

router = APIRouter(tags=["operations"])


@router.get("/commands", responses=READ)
async def commands(
    _: auth.Viewer, s: auth.ServicesDep,
    node_id: Annotated[int | None, Query(ge=1, le=4294967295)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[models.CommandView]:
    """Newest commands first, with their state and the node's answer."""
    return [views.command(c) for c in await s.store.commands(node_id, limit=limit)]


@router.get("/commands/{command_id}", responses=READ_ONE)
async def command(command_id: Annotated[int, Path(ge=0, le=2**63 - 1)], _: auth.Viewer,
                  s: auth.ServicesDep) -> models.CommandView:
    return views.command(await s.store.get_command(command_id))


@router.get("/alarms", responses=READ)
async def alarms(_: auth.Viewer, s: auth.ServicesDep
                 ) -> list[models.AlarmView]:
    """Open alarms: node offline, lamp fault, sensor fault."""
    now = s.clock()
    twins = {t.node_id: t for t in await s.store.twins()}
    found = []
    for node in await s.store.nodes():
        found += await fleet.alarms(s.store, node, twins.get(node.node_id), now, s.stale_after)
    return found


@router.get("/audit", responses=READ)
async def audit(_: auth.Viewer, s: auth.ServicesDep,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[models.AuditView]:
    """Who changed what, newest first."""
    return [models.AuditView(at=e.at, user=e.user, action=e.action, target=e.target,
                             details=json.loads(e.details)) for e in await s.store.audit_log(limit)]
