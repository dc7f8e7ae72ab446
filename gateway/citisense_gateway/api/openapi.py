"""The OpenAPI document: error responses every route declares, and the document's texts.

Served at /api/v1/openapi.json (no interactive viewer: those load scripts from the
internet). `python -m citisense_gateway.api` prints it, for clients and reviews.
"""

from __future__ import annotations

from typing import Any

from citisense_gateway.api.models import ErrorBody

DESCRIPTION = """\
Operators' API of a citisense gateway: street lighting, parking bays and air quality.

Log in with `POST /api/v1/auth/login` and send the token as `Authorization: Bearer <token>`.
Roles: **viewer** reads; **operator** also changes schedules, overrides and reservations;
**technician** also registers nodes and sends maintenance commands; **admin** also manages accounts.
Every change is attributed to its user in the audit log. Times are Unix seconds (UTC).
Errors are `{"error": "...", "fields": [{"field": "...", "problem": "..."}]}`.
"""

_MEANING = {
    401: "not logged in, or the token expired",
    403: "the user's role may not do this",
    404: "no such node, schedule, command or user",
    409: "clashes with the current state (exists already, last admin)",
    422: "invalid input: says which field and why",
}

TAGS = [
    {"name": "accounts", "description": "log in, users and roles"},
    {"name": "nodes", "description": "the fleet: registration, status, twin, telemetry, "
                                        "maintenance"},
    {"name": "schedules", "description": "lighting schedules, assignment and rollout"},
    {"name": "overrides", "description": "temporary dim levels for streets and zones"},
    {"name": "parking", "description": "zone occupancy and bay reservations"},
    {"name": "air", "description": "air-quality series and the European AQI"},
    {"name": "operations", "description": "commands, alarms and the audit log"},
]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that may answer these error codes."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in codes}


READ = errors(401, 422)
READ_ONE = errors(401, 404, 422)
CHANGE = errors(401, 403, 404, 409, 422)

