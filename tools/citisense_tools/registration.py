"""Registering a node with the gateway: the one place provisioning talks to it.

Today this goes through the gateway's store (the database the gateway reads its node
registry from); when the gateway's HTTP API lands, only these two functions change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from citisense_gateway import acl, registry
from citisense_gateway.store import open_store
from citisense_gateway.store.base import Conflict, NotFound, Store, StoreError
from citisense_tools.errors import CommandError

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


def register_node(store_url: str, info: NodeInfo, *, user: str,
                  node_id: int | None = None) -> Identity:
    """Register a new node (the next free id unless `node_id` is given); its identity."""

    async def work(store: Store) -> Identity:
        for _attempt in range(5):  # another technician may take the same free id meanwhile
            candidate = node_id or 1 + max((n.node_id for n in await store.nodes()), default=0)
            try:
                made = await registry.provision(
                    store, candidate, info.role, user=user, zone=info.zone, street=info.street,
                    lat=info.lat, lon=info.lon, label=info.label)
            except Conflict:
                if node_id is not None:
                    raise CommandError(f"node {node_id} is already registered: choose another "
                                       "--node, or leave it out to take the next free id") from None
                continue
            return Identity(made.node.node_id, made.mac_key, acl.node_user(made.node.node_id),
                            made.broker_password)
        raise CommandError("could not find a free node id: try again")

    return _with_store(store_url, work)


def unregister_node(store_url: str, node_id: int, *, user: str) -> None:
    """Undo register_node (a provisioning that could not finish)."""

    async def work(store: Store) -> None:
        with contextlib.suppress(NotFound):
            await store.remove_node(node_id, user)

    _with_store(store_url, work)
