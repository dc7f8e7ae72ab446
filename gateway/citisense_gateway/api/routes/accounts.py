"""Log in and out, one's own password, and (admin) the user accounts."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path

from citisense_gateway.api import auth, models
from citisense_gateway.api.accounts import NAME_RULE, User
from citisense_gateway.api.errors import ApiError, unauthorized
from citisense_gateway.api.openapi import CHANGE, READ, errors

log = logging.getLogger("citisense.api")
router = APIRouter(tags=["accounts"])
UserName = Annotated[str, Path(pattern=NAME_RULE.pattern, description="user name")]


def view(user: User) -> models.UserView:
    return models.UserView(username=user.name, role=user.role,  # type: ignore[arg-type]
                           created_at=user.created_at, created_by=user.created_by)


@router.post("/auth/login", responses=errors(401, 422))
async def login(req: models.LoginRequest, s: auth.ServicesDep
                ) -> models.LoginResponse:
    """Exchange a user name and password for a bearer token."""
    found = await s.accounts.login(req.username, req.password, s.session_ttl)
    if found is None:
        log.warning("failed login for %r", req.username[:64])
        raise unauthorized("wrong user name or password")
    token, session = found
    await s.store.audit(session.user.name, "user.login", session.user.name, {})
    return models.LoginResponse(token=token, expires_at=session.expires_at,
                                user=view(session.user))


@router.post("/auth/logout", responses=READ)
async def logout(current: auth.Current,
                 s: auth.ServicesDep) -> models.Done:
    """End this session: the token stops working."""
    await s.accounts.logout(current)
    return models.Done()


@router.get("/auth/me", responses=READ)
async def me(current: auth.Current) -> models.UserView:
    return view(current.user)


@router.post("/auth/password", responses=errors(401, 403, 422))
async def change_password(req: models.PasswordChange, current: auth.Current,
                          s: auth.ServicesDep) -> models.Done:
    """Change one's own password; other sessions of the user end."""
    if not await s.accounts.check_password(current.user.name, req.current):
        raise ApiError(403, "the current password is wrong", [("body.current", "wrong")])
    await s.accounts.set_password(current.user.name, req.new, keep_session=current.token_hash)
    await s.store.audit(current.user.name, "user.password", current.user.name, {})
    return models.Done()


@router.get("/users", responses=errors(401, 403, 422))
async def users(_: auth.Admin, s: auth.ServicesDep
                ) -> list[models.UserView]:
    return [view(u) for u in await s.accounts.users()]


@router.post("/users", status_code=201, responses=CHANGE)
async def add_user(req: models.UserCreate, current: auth.Admin,
                   s: auth.ServicesDep) -> models.UserView:
    user = await s.accounts.add_user(req.username, req.password, req.role,
                                     by=current.user.name)
    await s.store.audit(current.user.name, "user.add", user.name, {"role": user.role})
    return view(user)


@router.patch("/users/{username}", responses=CHANGE)
async def update_user(req: models.UserUpdate, username: UserName,
                      current: auth.Admin, s: auth.ServicesDep
                      ) -> models.UserView:
    """Change a user's role and/or password (their other sessions end on a new password)."""
    if req.role is None and req.password is None:
        raise ApiError(422, "give a role, a password or both", [("body", "empty")])
    user = await s.accounts.get_user(username)
    if req.role is not None and req.role != user.role:
        user = await s.accounts.set_role(username, req.role)
        await s.store.audit(current.user.name, "user.role", username, {"role": req.role})
    if req.password is not None:
        keep = current.token_hash if username == current.user.name else None
        await s.accounts.set_password(username, req.password, keep_session=keep)
        await s.store.audit(current.user.name, "user.password", username, {})
    return view(user)


@router.delete("/users/{username}", responses=CHANGE)
async def remove_user(username: UserName, current: auth.Admin,
                      s: auth.ServicesDep) -> models.Done:
    await s.accounts.remove_user(username)
    await s.store.audit(current.user.name, "user.remove", username, {})
    return models.Done()
