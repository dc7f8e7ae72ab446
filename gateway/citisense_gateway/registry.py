"""Provisioning: a node's identity, MAC key and broker password, made once by a technician.

The key and password are returned once, to be written to the node; the registry keeps
the key (the gateway needs it to check and sign) and only a hash of the password.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from citisense_gateway import acl
from citisense_gateway.store.base import Conflict, Node, Store
from citisense_protocols import mac, messages

ROLES = ("lighting", "parking", "air")


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class Provisioned:
    node: Node
    mac_key: bytes
    broker_password: str


async def provision(store: Store, node_id: int | None, role: str, *, user: str,
                    zone: str = "", street: str = "", lat: float | None = None,
                    lon: float | None = None, label: str = "") -> Provisioned:
    """Register a node (`node_id` None: the next free id) with a new key and password.

    Conflict if the id is taken. The running gateway picks the node up from the store: its
    keyring on the node's first message, the embedded broker's accounts on its next
    refresh (an external Mosquitto needs `citisense gateway broker-config` again).
    """
    if node_id is None:
        for _attempt in range(5):  # another technician may take the same free id meanwhile
            free = 1 + max((n.node_id for n in await store.nodes()), default=0)
            try:
                return await provision(store, free, role, user=user, zone=zone, street=street,
                                       lat=lat, lon=lon, label=label)
            except Conflict:
                continue
        raise Conflict("could not find a free node id: try again")
    if not 1 <= node_id <= messages.U32:
        raise RegistryError(f"node id must be in 1..{messages.U32}, got {node_id}")
    if role not in ROLES:
        raise RegistryError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if (lat is None) != (lon is None):
        raise RegistryError("give both latitude and longitude, or neither")
    if lat is not None and not -90 <= lat <= 90:
        raise RegistryError(f"latitude must be in -90..90, got {lat}")
    if lon is not None and not -180 <= lon <= 180:
        raise RegistryError(f"longitude must be in -180..180, got {lon}")
    key = secrets.token_bytes(mac.KEY_LENGTH)
    password = acl.new_password()
    node = Node(node_id=node_id, role=role, mac_key=key,
                broker_hash=acl.hash_password(password), zone=zone, street=street, lat=lat,
                lon=lon, label=label, created_at=time.time())
    await store.add_node(node, user)
    return Provisioned(node, key, password)


async def targets(store: Store, *, nodes: list[int] | None = None, street: str | None = None,
                  zone: str | None = None, role: str | None = None) -> list[int]:
    """Node ids named directly or by street / zone group; RegistryError if none match."""
    if nodes:
        for node_id in nodes:
            await store.get_node(node_id)
        return sorted(set(nodes))
    if street is None and zone is None:
        raise RegistryError("name the nodes: node ids, a street or a zone")
    found = [n.node_id for n in await store.nodes(street=street, zone=zone, role=role)]
    if not found:
        what = f"street {street!r}" if street is not None else f"zone {zone!r}"
        raise RegistryError(f"no {role + ' ' if role else ''}nodes in {what}")
    return found
