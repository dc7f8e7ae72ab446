"""A gateway in one process with a simulated street, for the dashboard's tests and a look.

    python -m citisense_gateway.api.devserver --port 8080

The real store (SQLite), ingest, commands, reconciler and API run as in the gateway;
only the link is a loopback: commands go straight to simulated nodes (SimNode, which
checks and acks them as the firmware does) and their signed uplinks straight to ingest.
One lamp has a fault, one air sensor a failed fan and one lamp never came up, so the
alarm views have something to show.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from argon2 import PasswordHasher

from citisense_gateway import firmware_logic, registry
from citisense_gateway.api.accounts import Accounts
from citisense_gateway.api.app import create_app, default_accounts
from citisense_gateway.api.server import serve
from citisense_gateway.commands import CommandPolicy, Commands
from citisense_gateway.ingest import Ingest, Outcome
from citisense_gateway.keyring import KeyRing
from citisense_gateway.metrics import Metrics
from citisense_gateway.parking import Parking
from citisense_gateway.reconcile import Reconciler
from citisense_gateway.simnode import SimNode
from citisense_gateway.store import open_store
from citisense_gateway.store.base import NotFound, Store
from citisense_protocols import messages, topics

log = logging.getLogger("citisense.devserver")
T = TypeVar("T")
LAMP_OUT = 1
AIR_FAN_FAULT = 4


@dataclass(frozen=True)
class Placement:
    node_id: int
    role: str
    zone: str
    street: str
    lat: float
    lon: float
    label: str


def street(first_id: int, role: str, zone: str, name: str, start: tuple[float, float],
           end: tuple[float, float], count: int, what: str) -> list[Placement]:
    """`count` nodes evenly spaced along a straight street."""
    step = 1 / max(1, count - 1)
    return [Placement(first_id + i, role, zone, name,
                      round(start[0] + (end[0] - start[0]) * i * step, 6),
                      round(start[1] + (end[1] - start[1]) * i * step, 6),
                      f"{what} {i + 1}, {name}") for i in range(count)]


# A small town centre (coordinates in Utrecht, for plausible sun times).
FLEET = (
    street(101, "lighting", "centrum", "Oudegracht", (52.0934, 5.1190), (52.0880, 5.1230), 8,
           "lamp")
    + street(111, "lighting", "centrum", "Lijnmarkt", (52.0925, 5.1172), (52.0902, 5.1188), 4,
             "lamp")
    + street(201, "lighting", "station", "Stationsplein", (52.0895, 5.1100), (52.0900, 5.1145),
             6, "lamp")
    + street(301, "parking", "centrum", "Neude", (52.0929, 5.1206), (52.0926, 5.1222), 6, "bay")
    + street(311, "parking", "station", "Jaarbeursplein", (52.0885, 5.1085), (52.0880, 5.1100),
             4, "bay")
    + [Placement(401, "air", "centrum", "Neude", 52.0931, 5.1214, "air sensor, Neude"),
       Placement(402, "air", "station", "Stationsplein", 52.0898, 5.1122,
                 "air sensor, Stationsplein"),
       Placement(403, "air", "centrum", "Oudegracht", 52.0890, 5.1224,
                 "air sensor, Oudegracht")]
)
SILENT = {112}  # installed but never came up: shows as never seen
FAULTY_LAMP = 105
FAULTY_AIR = 403


class LoopbackSource:
    """The ingest's view of the loopback link: acknowledgements need no transport."""

    name = "loopback"

    def acknowledge(self, outcomes: list[Outcome]) -> None:
        return None


class SimStreet:
    """Simulated nodes answering commands and sending telemetry into ingest."""

    def __init__(self, placements: list[Placement], keys: dict[int, bytes], ingest: Ingest,
                 latency: float = 0.2) -> None:
        self.placements = {p.node_id: p for p in placements}
        self.nodes = {p.node_id: SimNode(p.node_id, keys[p.node_id], p.role)
                      for p in placements if p.node_id not in SILENT}
        self.ingest = ingest
        self.latency = latency
        self.source = LoopbackSource()
        self.override_ends: dict[int, float] = {}
        self.occupied: dict[int, bool] = {}
        self.rand = random.Random(7)
        self._token = 0

    def offer(self, node_id: int, kind: int, message: bytes) -> None:
        self._token += 1
        self.ingest.offer(self.source, topics.topic(node_id, kind), message, self._token)

    async def send(self, node_id: int, kind: int, message: bytes) -> None:
        """The downlink: the node runs the command; its ack arrives a little later."""
        sim = self.nodes.get(node_id)
        if sim is None:
            return  # a silent node: the command waits, retries and expires
        accepted = len(sim.commands)
        reply = sim.handle(message)
        if len(sim.commands) > accepted and sim.commands[-1][messages.KEY_OP] == messages.OP_DIM:
            duration = sim.commands[-1][messages.KEY_DATA][1]
            self.override_ends[node_id] = time.time() + duration
        if reply is not None:
            asyncio.get_running_loop().call_later(self.latency, self.offer, node_id,
                                                  messages.ACK, reply)

    def level(self, sim: SimNode, now: float) -> tuple[int, int]:
        """(level, source) a lamp shows now: override, schedule, or fail-safe."""
        if sim.dim is not None and now < self.override_ends.get(sim.node_id, 0):
            return sim.dim[0], messages.SOURCE_OVERRIDE
        for body in reversed(sim.commands):
            if body[messages.KEY_OP] == messages.OP_SCHEDULE and \
                    body[messages.KEY_DATA][0] == sim.schedule_version:
                p = self.placements[sim.node_id]
                parsed = firmware_logic.parse_schedule(body[messages.KEY_DATA])
                return (firmware_logic.schedule_level(parsed, int(now), p.lat, p.lon),
                        messages.SOURCE_SCHEDULE)
        return 100, messages.SOURCE_FAILSAFE

    def telemetry(self, sim: SimNode, now: float) -> list[int | None]:
        r = self.rand
        if sim.role == "lighting":
            level, source = self.level(sim, now)
            faults = LAMP_OUT if sim.node_id == FAULTY_LAMP else 0
            power = 0 if faults else level * 6
            return [level, source, power, 1000 + sim.node_id, r.randint(0, 40), faults]
        if sim.role == "parking":
            if sim.node_id not in self.occupied or r.random() < 0.1:
                self.occupied[sim.node_id] = r.random() < 0.5
            occupied = self.occupied[sim.node_id]
            reserved = sim.reserved is not None and sim.reserved[0] <= now < sim.reserved[1]
            indicator = 1 if occupied else (2 if reserved else 0)
            return [int(occupied), indicator, r.randint(300, 900) if occupied else 0, 95, 0]
        flags = AIR_FAN_FAULT if sim.node_id == FAULTY_AIR else 0
        return [r.randint(40, 180), r.randint(90, 300), r.randint(150, 450),
                r.randint(800, 1500), r.randint(500, 700), r.randint(10100, 10200), flags]

    def births(self) -> None:
        for sim in self.nodes.values():
            self.offer(sim.node_id, messages.BIRTH, sim.birth())

    def tick(self) -> None:
        now = time.time()
        for sim in self.nodes.values():
            self.offer(sim.node_id, messages.TELEMETRY, sim.telemetry(self.telemetry(sim, now)))

    async def run(self, period: float) -> None:
        self.births()
        while True:
            self.tick()
            await asyncio.sleep(period)


class DevGateway:
    """Store, ingest, commands, reconciler, parking and the API on one loop."""

    def __init__(self, db: Path, *, host: str = "127.0.0.1", port: int = 0,
                 placements: list[Placement] | None = None, period: float = 5.0,
                 hasher: PasswordHasher | None = None, stale_after: float = 900.0) -> None:
        self.db = db
        self.host = host
        self.port = port
        self.placements = FLEET if placements is None else placements
        self.period = period
        self.hasher = hasher
        self.stale_after = stale_after
        self._tasks: list[asyncio.Task[Any]] = []
        self.store: Store | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _provision(self, store: Store) -> dict[int, bytes]:
        keys = {}
        for p in self.placements:
            try:
                keys[p.node_id] = (await store.get_node(p.node_id)).mac_key
            except NotFound:
                done = await registry.provision(
                    store, p.node_id, p.role, user="devserver", zone=p.zone, street=p.street,
                    lat=p.lat, lon=p.lon, label=p.label)
                keys[p.node_id] = done.mac_key
        return keys

    async def start(self) -> None:
        store = open_store(f"sqlite:///{self.db}", sqlite_synchronous="normal")
        await store.open()
        self.store = store
        keys = await self._provision(store)
        keyring = self.keyring = KeyRing(store)
        await keyring.refresh()
        metrics = Metrics()
        placeholder: list[SimStreet] = []

        class Downlink:
            async def send(self, node_id: int, kind: int, message: bytes) -> None:
                await placeholder[0].send(node_id, kind, message)

        self.commands = Commands(store, keyring, Downlink(), metrics,
                                 CommandPolicy(retry_base=2.0, retry_cap=20.0))
        self.reconciler = Reconciler(store, self.commands)
        self.parking = Parking(store)
        self.ingest = Ingest(store, keyring, metrics, observers=[
            self.commands.observe, self.reconciler.observe, self.parking.observe])
        self.street = SimStreet(list(self.placements), keys, self.ingest)
        placeholder.append(self.street)
        self.accounts = Accounts(default_accounts(store).db, hasher=self.hasher)
        self.app = create_app(store, self.commands, self.reconciler, self.parking,
                              accounts=self.accounts, stale_after=self.stale_after,
                              registry_changed=keyring.refresh)
        await self.accounts.open()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self.ingest.run(), name="ingest"),
            asyncio.create_task(self.commands.run(tick=0.5), name="commands"),
            asyncio.create_task(self.street.run(self.period), name="street"),
            asyncio.create_task(serve(self.app, self.host, self.port,
                                      ready=bound.set_result), name="api"),
        ]
        self.port = await bound

    async def stop(self) -> None:
        pending = set(self._tasks)
        while pending:
            # Cancelled again if need be: on Python 3.11, asyncio.wait_for (used by the
            # ingest and command loops) can swallow a cancel that races its timeout.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        if self.store is not None:
            await self.store.close()


class Threaded:
    """A DevGateway on its own event loop in a thread (for synchronous test clients)."""

    def __init__(self, gateway: DevGateway) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="devgateway",
                                        daemon=True)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.call(self.gateway.start())

    def stop(self) -> None:
        try:
            self.call(self.gateway.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@contextlib.contextmanager
def running(gateway: DevGateway) -> Iterator[Threaded]:
    threaded = Threaded(gateway)
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()


async def _main(args: argparse.Namespace) -> None:
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="citisense-dev-")) / "dev.db"
    gateway = DevGateway(db, host=args.host, port=args.port)
    await gateway.start()
    users = await gateway.accounts.users()
    if not users:
        password = secrets.token_urlsafe(12)
        await gateway.accounts.add_user("admin", password, "admin", by="devserver")
        print(f"created user admin with password {password}")
    print(f"dashboard: {gateway.url}/   (database {db}; Ctrl-C stops)")
    try:
        await asyncio.Event().wait()
    finally:
        await gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--db", help="SQLite file (default: a new temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
