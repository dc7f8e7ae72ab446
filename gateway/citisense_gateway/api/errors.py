"""Every refusal is a 4xx with a body saying what is wrong and, for input, which field.

Body: {"error": "...", "fields": [{"field": "body.steps[1].at", "problem": "..."}]}.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from citisense_gateway.api.accounts import AccountError
from citisense_gateway.commands import CommandError
from citisense_gateway.registry import RegistryError
from citisense_gateway.schedules import ScheduleError
from citisense_gateway.store.base import Conflict, NotFound, StoreError

log = logging.getLogger("citisense.api")


class ApiError(Exception):
    def __init__(self, status: int, message: str, fields: Sequence[tuple[str, str]] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = list(fields)
        self.headers = headers


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def body(message: str, fields: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    return {"error": message, "fields": [{"field": f, "problem": p} for f, p in fields]}


def location(loc: Sequence[int | str]) -> str:
    """("body", "steps", 1, "at") -> "body.steps[1].at"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _json(status: int, message: str, fields: Sequence[tuple[str, str]] = (),
          headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(message, fields), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return _json(err.status, err.message, err.fields, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        fields = [(location(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in err.errors()]
        summary = "; ".join(f"{f}: {p}" for f, p in fields[:3]) or "invalid request"
        return _json(422, summary, fields)

    @app.exception_handler(ScheduleError)
    async def bad_schedule(_: Request, err: ScheduleError) -> JSONResponse:
        field = f"body.{err.path}" if err.path else "body"
        return _json(422, str(err), [(field, err.problem)])

    @app.exception_handler(AccountError)
    async def bad_account(_: Request, err: AccountError) -> JSONResponse:
        return _json(422, str(err), [(f"body.{err.field}", err.problem)])

    @app.exception_handler(CommandError)
    async def bad_command(_: Request, err: CommandError) -> JSONResponse:
        return _json(422, str(err))

    @app.exception_handler(RegistryError)
    async def bad_target(_: Request, err: RegistryError) -> JSONResponse:
        return _json(422, str(err))

    @app.exception_handler(NotFound)
    async def not_found(_: Request, err: NotFound) -> JSONResponse:
        return _json(404, str(err))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, err: Conflict) -> JSONResponse:
        return _json(409, str(err))

    @app.exception_handler(StoreError)
    async def store_down(_: Request, err: StoreError) -> JSONResponse:
        log.error("store error: %s", err)
        return _json(503, "the gateway's database is not available; try again shortly")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return _json(err.status_code, str(err.detail), headers=err.headers)
