"""The operators' HTTP API and dashboard as one ASGI app, served inside the gateway's loop.

    app = create_app(store, commands, reconciler, parking)
    await serve(app, "127.0.0.1", 8080)          # runs until cancelled

The dashboard's files (web/) are served from the same origin, so the browser needs
nothing from the internet and the API needs no CORS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from citisense_gateway.api import errors, openapi
from citisense_gateway.api.accounts import Accounts
from citisense_gateway.api.routes import accounts, air, lighting, nodes, operations, parking
from citisense_gateway.api.routes import schedules as schedule_routes
from citisense_gateway.api.services import Services
from citisense_gateway.commands import Commands
from citisense_gateway.parking import Parking
from citisense_gateway.reconcile import Reconciler
from citisense_gateway.store.base import Store, StoreError

PREFIX = "/api/v1"
WEB = Path(__file__).resolve().parent.parent / "web"
SECURITY_HEADERS = {
    # Only our own files: no inline script, nothing fetched from elsewhere.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Health(BaseModel):
    status: str


def build_app() -> FastAPI:
    """The app's routes and document, without services (see create_app)."""
    app = FastAPI(title="citisense gateway API", version="1", description=openapi.DESCRIPTION,
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=None, redoc_url=None,
                  openapi_tags=openapi.TAGS)
    errors.install(app)
    api = APIRouter(prefix=PREFIX)
    for module in (accounts, nodes, schedule_routes, lighting, parking, air, operations):
        api.include_router(module.router)

    @api.get("/health", tags=["operations"], responses=openapi.errors(422))
    async def health() -> Health:
        """Liveness for load balancers; needs no login."""
        return Health(status="ok")

    app.include_router(api)

    @app.middleware("http")
    async def headers(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.startswith(PREFIX):
            response.headers["Cache-Control"] = "no-store"
        return response

    documented_ops = Operations(document_of(app))

    @app.middleware("http")
    async def documented(request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        refused = documented_ops.refuse(request.method, request.url.path,
                                        list(request.query_params.keys()))
        return refused or await call_next(request)

    dashboard(app)
    app.openapi = lambda: document_of(app)  # type: ignore[method-assign]
    return app


class Operations:
    """The documented operations, to answer what routing alone would get wrong: a wrong
    method (405 listing every method of the path) and an unknown query parameter (422:
    `?zones=north` must not quietly list every zone)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.literal: dict[str, dict[str, set[str]]] = {}
        self.templated: list[tuple[re.Pattern[str], dict[str, set[str]]]] = []
        for path, ops in doc["paths"].items():
            methods = {m.upper(): {p["name"] for p in op.get("parameters", ())
                                   if p["in"] == "query"} for m, op in ops.items()}
            if "{" in path:
                pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path))
                self.templated.append((re.compile(f"^{pattern}$"), methods))
            else:
                self.literal[path] = methods

    def of(self, path: str) -> dict[str, set[str]]:
        """Method -> query parameter names, for the literal path if it is one (so
        /schedules/preview is not /schedules/{name}), else for the templates it matches."""
        if path in self.literal:
            return self.literal[path]
        found: dict[str, set[str]] = {}
        for regex, methods in self.templated:
            if regex.match(path):
                found.update(methods)
        return found

    def refuse(self, method: str, path: str, query: list[str]) -> Response | None:
        methods = self.of(path)
        if not methods:
            return None
        if method == "HEAD" and "GET" in methods:
            method = "GET"
        if method not in methods:
            allowed = ", ".join(sorted(methods))
            return JSONResponse(errors.body(f"{method} is not allowed here; use {allowed}"),
                                status_code=405, headers={"Allow": allowed})
        unknown = sorted(set(query) - methods[method])
        if unknown:
            known = ", ".join(sorted(methods[method])) or "none"
            return JSONResponse(errors.body(
                f"unknown query parameter {unknown[0]!r}; this takes: {known}",
                [(f"query.{name}", "unknown parameter") for name in unknown]), status_code=422)
        return None


def dashboard(app: FastAPI) -> None:
    """The dashboard: its page at /, its files under /ui/ (outside the API's paths)."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB / "index.html")

    app.mount("/ui", StaticFiles(directory=WEB), name="ui")


def document_of(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the 400 every route with a body gives for one that is not
    JSON at all."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes, tags=app.openapi_tags)
        for operations in doc["paths"].values():
            for operation in operations.values():
                if "requestBody" in operation:
                    operation["responses"]["400"] = {
                        "description": "the body is not JSON",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        app.openapi_schema = doc
    return app.openapi_schema


def default_accounts(store: Store) -> Accounts:
    """Accounts kept in the store's own database (the SQL store's adapter)."""
    db: Any = getattr(store, "db", None)
    if db is None:
        raise StoreError("this store cannot keep operator accounts")
    return Accounts(db)


def create_app(store: Store, commands: Commands, reconciler: Reconciler,
               parking: Parking | None = None, *, accounts: Accounts | None = None,
               clock: Callable[[], float] = time.time, stale_after: float = 900.0,
               session_ttl: float = 12 * 3600.0,
               registry_changed: Callable[[], Awaitable[None]] | None = None) -> FastAPI:
    app = build_app()
    app.state.services = Services(
        store=store, commands=commands, reconciler=reconciler,
        parking=parking or Parking(store, clock), accounts=accounts or default_accounts(store),
        clock=clock, stale_after=stale_after, session_ttl=session_ttl,
        registry_changed=registry_changed)
    return app


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    return document_of(build_app())
