"""Overrides: a level for a while on a street, a zone or some lamps, ending by itself."""

from __future__ import annotations

from fastapi import APIRouter

from citisense_gateway.api import auth, fleet, models
from citisense_gateway.api.openapi import CHANGE, READ
from citisense_gateway.api.routes.schedules import resolve
from citisense_protocols import messages

router = APIRouter(tags=["overrides"])
# A command that has not reached the node by then is pointless: the override's own
# duration, at least a minute, at most the default command lifetime.
MIN_TTL = 60.0


@router.post("/overrides", status_code=202, responses=CHANGE)
async def set_override(req: models.OverrideRequest, current: auth.Operator,
                       s: auth.ServicesDep) -> models.OverrideResult:
    """Hold lamps at `level` for `duration_s` seconds from when they get the command; the
    schedule resumes by itself afterwards. duration_s 0 ends an override now."""
    node_ids = await resolve(s, req, "lighting")
    ttl = max(MIN_TTL, min(float(req.duration_s), s.commands.policy.ttl))
    note = req.note or ("end override" if req.duration_s == 0 else
                        f"override {req.level}% for {req.duration_s} s")
    issued = await s.commands.issue(node_ids, messages.OP_DIM, [req.level, req.duration_s],
                                    user=current.user.name, ttl=ttl, note=note)
    await s.store.audit(current.user.name, "override.set",
                        req.zone or req.street or ",".join(map(str, node_ids)),
                        {"level": req.level, "duration_s": req.duration_s, "nodes": node_ids})
    ends = s.clock() + req.duration_s if req.duration_s else None
    return models.OverrideResult(nodes=node_ids, commands=[c.command_id for c in issued],
                                 ends_at=ends)


@router.get("/overrides", responses=READ)
async def active_overrides(_: auth.Viewer, s: auth.ServicesDep
                           ) -> list[models.OverrideView]:
    """Overrides in force or on their way to the lamps."""
    now = s.clock()
    found = []
    for node in await s.store.nodes(role="lighting"):
        active = await fleet.override(s.store, node, now)
        if active is not None:
            found.append(active)
    return found
