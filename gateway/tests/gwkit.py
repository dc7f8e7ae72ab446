"""Helpers of the gateway tests (importable by test modules: conftest puts us on sys.path)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from citisense_gateway import acl
from citisense_gateway.mosquitto import PrivateMosquitto, free_port
from citisense_gateway.simnode import SimNode
from citisense_gateway.store import open_store
from citisense_gateway.store.base import Node, Store

# The conftest fixture `cli`: `citisense gateway ARGS --user tess` run in-process, giving
# (exit code, the JSON lines it printed, what it wrote to stderr).
GatewayCli = Callable[..., tuple[int, list[dict[str, object]], str]]

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    s = open_store(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@dataclass
class Fleet:
    """Simulated nodes registered in a store, with their broker passwords."""

    nodes: dict[int, SimNode] = field(default_factory=dict)
    passwords: dict[int, str] = field(default_factory=dict)

    def accounts(self) -> list[acl.Account]:
        return [acl.node_account(n, acl.hash_password(p)) for n, p in self.passwords.items()]


async def provision(store: Store, specs: list[tuple[int, str]], *, zone: str = "centre",
                    street: str = "Kerkstraat") -> Fleet:
    fleet = Fleet()
    for node_id, role in specs:
        key = secrets.token_bytes(32)
        password = acl.new_password()
        await store.add_node(Node(node_id, role, key, acl.hash_password(password, iterations=10),
                                  zone=zone, street=street, lat=52.37, lon=4.89,
                                  created_at=time.time()), "test")
        fleet.nodes[node_id] = SimNode(node_id, key, role)
        fleet.passwords[node_id] = password
    return fleet


@dataclass
class Broker:
    """Where a gateway and nodes connect; `kind` is mosquitto or embedded."""

    kind: str
    host: str
    port: int
    gateway_password: str
    mosquitto: PrivateMosquitto | None = None

    @property
    def version(self) -> int:
        return 5 if self.kind == "mosquitto" else 4


STARTED: list[PrivateMosquitto] = []  # stopped after each test by conftest, whatever failed


def start_mosquitto(directory: Path, fleet: Fleet, extra: list[acl.Account] | None = None
                    ) -> Broker:
    password = acl.new_password()
    accounts = [acl.gateway_account("gateway", acl.hash_password(password))]
    accounts += fleet.accounts() + (extra or [])
    broker = PrivateMosquitto(directory, accounts).start()
    STARTED.append(broker)
    return Broker("mosquitto", "127.0.0.1", broker.port, password, broker)


def gateway_overrides(tmp_path: Path, store_url: str, broker: Broker | None,
                      **more: object) -> dict[str, object]:
    """Settings for a gateway under test; broker None: embedded on a free port."""
    overrides: dict[str, object] = {
        "gateway.data_dir": str(tmp_path), "store.url": store_url, "metrics.port": 0,
        "api.port": -1,
        "gateway.instance": f"t{secrets.token_hex(3)}",
        "commands.retry_base": 0.5, "commands.retry_cap": 2.0,
    }
    if broker is not None:
        overrides["mqtt.url"] = f"mqtt://{broker.host}:{broker.port}"
        overrides["mqtt.password"] = broker.gateway_password
    else:
        overrides["embedded_broker.port"] = free_port()
    overrides.update(more)
    return overrides


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0,
                     interval: float = 0.05) -> None:
    """Wait until the async callable `check` returns true."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        await asyncio.sleep(interval)
