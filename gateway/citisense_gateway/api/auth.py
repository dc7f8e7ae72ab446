"""Who is calling, and may they: bearer sessions and the four roles.

viewer reads everything but accounts; operator also changes schedules, overrides and
bay reservations; technician also registers nodes and sends maintenance commands
(identify, recalibrate, reboot); admin also manages accounts. Unauthenticated calls get
401, a role too low 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from citisense_gateway.api.accounts import Session, role_at_least
from citisense_gateway.api.errors import ApiError, unauthorized
from citisense_gateway.api.services import Services

bearer = HTTPBearer(auto_error=False, description="a token from POST /api/v1/auth/login")


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def session(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None,
                                             Security(bearer)]
) -> Session:
    if credentials is None:
        raise unauthorized("log in first: send Authorization: Bearer <token> "
                           "(POST /api/v1/auth/login gives one)")
    found = await services(request).accounts.session(credentials.credentials)
    if found is None:
        raise unauthorized("the token is unknown or expired: log in again")
    return found


def require(role: str) -> Callable[..., Awaitable[Session]]:
    """A dependency admitting `role` and the roles above it."""

    async def check(current: Annotated[Session, Depends(session)]) -> Session:
        if not role_at_least(current.user.role, role):
            raise ApiError(403, f"this needs the {role} role or above; "
                                f"{current.user.name} is a {current.user.role}")
        return current

    return check


ServicesDep = Annotated[Services, Depends(services)]
Current = Annotated[Session, Depends(session)]
Viewer = Annotated[Session, Depends(require("viewer"))]
Operator = Annotated[Session, Depends(require("operator"))]
Technician = Annotated[Session, Depends(require("technician"))]
Admin = Annotated[Session, Depends(require("admin"))]
