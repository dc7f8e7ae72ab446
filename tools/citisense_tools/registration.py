"""Registering a node with the gateway: the one place provisioning talks to it.

Normally through the gateway's HTTP API (POST /api/v1/nodes) as the logged-in
technician, so the audit log names them. To bootstrap on the gateway's own host (no one
can log in yet, or no API runs), straight into the gateway's store, the database its
node registry lives in, when asked for with --store or --gateway-config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from citisense_gateway import acl, registry
from citisense_gateway.store import open_store
from citisense_gateway.store.base import Conflict, NotFound, Store, StoreError
from citisense_tools.errors import CommandError
from citisense_tools.gateway_store import store_url
from citisense_tools.operator_cmds import Api, ApiError, api_token, api_url

T = TypeVar("T")


@dataclass(frozen=True)
class Identity:
    """What the node needs to talk: keep it secret (never print or log it)."""

    node_id: int
    mac_key: bytes
    broker_user: str
    broker_password: str

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id}, secrets hidden)"


@dataclass(frozen=True)
class NodeInfo:
    role: str
    zone: str = ""
    street: str = ""
    lat: float | None = None
    lon: float | None = None
    label: str = ""


@dataclass(frozen=True)
class GatewayStore:
    """The gateway's database, reached from the gateway's host."""

    url: str


Registry = Api | GatewayStore


def choose(args: argparse.Namespace) -> Registry:
    """Where to register: the store when --store or --gateway-config asks for it, else the
    API (at --api, $CITISENSE_API_URL or where `citisense login` logged in) with the
    login's token."""
    if args.store or args.gateway_config:
        if args.api_url:
            raise CommandError("give either --api (register through the gateway's API) or "
                               "--store / --gateway-config (straight into its database on "
                               "the gateway host), not both")
        return GatewayStore(store_url(args))
    token = api_token(args)
    if not token:
        login = f"citisense login --api-url {args.api_url}" if args.api_url else "citisense login"
        raise CommandError(f"not logged in: run `{login}` or give --store on the gateway host")
    return Api(api_url(args), token)


def describe(where: Registry) -> str:
    return f"the gateway at {where.url}" if isinstance(where, Api) else "the gateway's store"


def _taken(node_id: int) -> CommandError:
    return CommandError(f"node {node_id} is already registered: choose another --node, or "
                        "leave it out to take the next free id")


def register_node(where: Registry, info: NodeInfo, *, user: str,
                  node_id: int | None = None) -> Identity:
    """Register a new node (the next free id unless `node_id` is given); its identity.

    `user` names the technician in the audit log of the store path; through the API the
    log names the logged-in account."""
    if isinstance(where, Api):
        return _register_through_api(where, info, node_id)

    async def work(store: Store) -> Identity:
        try:
            made = await registry.provision(
                store, node_id, info.role, user=user, zone=info.zone, street=info.street,
                lat=info.lat, lon=info.lon, label=info.label)
        except Conflict:
            if node_id is not None:
                raise _taken(node_id) from None
            raise
        return Identity(made.node.node_id, made.mac_key, acl.node_user(made.node.node_id),
                        made.broker_password)

    return _with_store(where.url, work)


def unregister_node(where: Registry, node_id: int, *, user: str) -> None:
    """Undo register_node (a provisioning that could not finish)."""
    if isinstance(where, Api):
        try:
            where.call("DELETE", f"/nodes/{node_id}")
        except ApiError as err:
            if err.status != 404:
                raise
        return

    async def work(store: Store) -> None:
        with contextlib.suppress(NotFound):
            await store.remove_node(node_id, user)

    _with_store(where.url, work)


def _register_through_api(api: Api, info: NodeInfo, node_id: int | None) -> Identity:
    body: dict[str, Any] = {"role": info.role, "zone": info.zone, "street": info.street,
                            "lat": info.lat, "lon": info.lon, "label": info.label}
    if node_id is not None:
        body["node_id"] = node_id
    try:
        made = api.post("/nodes", body)
    except ApiError as err:
        if err.status == 409 and node_id is not None:
            raise _taken(node_id) from None
        raise
    try:
        return Identity(int(made["node_id"]), bytes.fromhex(made["mac_key"]),
                        str(made["broker_user"]), str(made["broker_password"]))
    except (TypeError, KeyError, ValueError):
        raise CommandError(f"the gateway at {api.url} answered the registration with "
                           "something else than a node's identity: is it a citisense "
                           "gateway of this version?") from None


def _with_store(url: str, work: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        store = open_store(url)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except StoreError as err:
        raise CommandError(f"the gateway's node registry: {err}") from None
    except registry.RegistryError as err:
        raise CommandError(str(err)) from None
