"""`citisense fleet`: simulated nodes running the real firmware app under CPython.

Every node runs citisense_firmware.app, the code that runs on an ESP32, on a simulated
board (fleet_hal.StreetHal) facing a simulated street (citisense_boards.street, moved by
fleet_street.Traffic): its own config file and flash folder, its own MAC key, its own
MQTT connection made by the firmware's MQTT client. Street time may run faster than
real time (`speed`); the network always runs in real time.

    specs = await provision_nodes(store, 100)            # registered like real nodes
    async with Fleet(specs, "mqtt://127.0.0.1:1883", Path("fleet")) as fleet:
        fleet.street.park(fleet.hal(specs[0].node_id).bay)
        ...

Node identities come from the gateway's registry (citisense_gateway.registry.provision):
the gateway holds each key and the hash of each broker password; the fleet keeps both
secrets in each node's config.json (mode 0600) under its folder, exactly as a
provisioned board holds them on flash, so a later run reuses the same nodes.
The broker must know the new accounts: `citisense gateway broker-config` (or
local_broker() here for tests and demos).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from citisense_boards.street import Street, StreetClock
from citisense_gateway import acl, registry
from citisense_gateway.mosquitto import PrivateMosquitto
from citisense_gateway.store import Store, open_store
from citisense_gateway.store.base import StoreError
from citisense_protocols import messages
from citisense_tools import node_config
from citisense_tools.errors import CommandError
from citisense_tools.fleet_hal import Reset, Shared, StreetHal
from citisense_tools.fleet_street import Traffic
from citisense_tools.gateway_store import store_url

_app: Any = importlib.import_module("citisense_firmware.app")

log = logging.getLogger("citisense.fleet")

BOARD = "fleet-sim"
DEFAULT_MIX = {"lighting": 6, "parking": 3, "air": 1}
# Report intervals (s): what a city would set for each role.
INTERVALS = {
    "lighting": {"telemetry": 300, "health": 900},
    "parking": {"telemetry": 900, "health": 900},
    "air": {"telemetry": 300, "health": 900},
}
# The simulated NO2 front end's calibration sheet (fleet_hal: 500 mV + 4 mV per ug/m3).
AIR_SETTINGS = {"no2_we_zero_uv": 500_000, "no2_ae_zero_uv": 500_000,
                "no2_sens_nv_ppb": 7_648_400}
SPACING_DEG = 0.0002  # about 20 m between nodes along the street
CRASH_PAUSE_S = 1.0
WATCH_SLICE = 500  # watchdogs looked at between two turns of the event loop


@dataclass(frozen=True)
class NodeSpec:
    """A provisioned node: identity, secrets, role, place and settings."""

    node_id: int
    role: str
    key: bytes
    broker_password: str
    lat: float
    lon: float
    settings: Mapping[str, int | str] = field(default_factory=dict)
    intervals: Mapping[str, int] = field(default_factory=dict)
    zone: str = ""
    street: str = ""

    def __repr__(self) -> str:
        return f"NodeSpec({self.node_id}, {self.role}, secrets hidden)"


def config_doc(spec: NodeSpec, host: str, port: int) -> dict[str, Any]:
    """The node's config.json, in the firmware's format (validated by the firmware)."""
    doc: dict[str, Any] = {
        "node": spec.node_id,
        "role": spec.role,
        "board": BOARD,
        "key": spec.key.hex(),
        "uplink": {"transport": "mqtt", "host": host, "port": port,
                   "user": acl.node_user(spec.node_id), "password": spec.broker_password,
                   "keepalive": 60},
        "location": {"lat": node_config.degrees_e7(spec.lat),
                     "lon": node_config.degrees_e7(spec.lon)},
        "group": spec.street,
        "zone": spec.zone,
        "intervals": dict(spec.intervals or INTERVALS[spec.role]),
        "settings": dict(spec.settings),
    }
    problem = node_config.problem(doc)
    if problem:
        raise CommandError(f"node {spec.node_id}: the firmware would refuse its config: {problem}")
    return doc


def spec_from_doc(doc: Mapping[str, Any]) -> NodeSpec:
    return NodeSpec(
        node_id=int(doc["node"]), role=str(doc["role"]), key=bytes.fromhex(doc["key"]),
        broker_password=str(doc["uplink"]["password"]),
        lat=doc["location"]["lat"] / 1e7, lon=doc["location"]["lon"] / 1e7,
        settings=dict(doc.get("settings", {})), intervals=dict(doc.get("intervals", {})),
        zone=str(doc.get("zone", "")), street=str(doc.get("group", "")),
    )


def node_folder(directory: Path, node_id: int) -> Path:
    return directory / f"node-{node_id}"


def write_config(directory: Path, spec: NodeSpec, host: str, port: int) -> Path:
    """The node's flash folder with its config.json (mode 0600: it holds secrets)."""
    folder = node_folder(directory, spec.node_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(node_config.encode(config_doc(spec, host, port)))
    return folder


def specs_from_directory(directory: Path) -> list[NodeSpec]:
    """The nodes a fleet folder already holds (each node-ID/config.json), by node id."""
    specs = []
    for path in sorted(directory.glob("node-*/config.json")):
        doc = node_config.parse_config(path.read_bytes(), str(path))
        specs.append(spec_from_doc(doc))
    return sorted(specs, key=lambda spec: spec.node_id)


def role_sequence(count: int, mix: Mapping[str, int]) -> list[str]:
    """`count` roles in the proportions of `mix`, interleaved (smooth weighted round robin)."""
    if not mix or any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
        raise CommandError("the role mix needs at least one positive weight")
    total = sum(mix.values())
    credit = dict.fromkeys(mix, 0)
    out = []
    for _ in range(count):
        for role, weight in mix.items():
            credit[role] += weight
        chosen = max(credit, key=lambda role: credit[role])
        credit[chosen] -= total
        out.append(chosen)
    return out


async def provision_nodes(store: Store, count: int, *, mix: Mapping[str, int] = DEFAULT_MIX,
                          user: str = "fleet", zone: str = "fleet",
                          street: str = "Simulated street",
                          origin: tuple[float, float] = (51.05, 3.72),
                          first_id: int | None = None) -> list[NodeSpec]:
    """Register `count` new nodes in the gateway's registry, as a technician would."""
    if first_id is None:
        first_id = 1 + max((node.node_id for node in await store.nodes()), default=0)
    specs = []
    for index, role in enumerate(role_sequence(count, mix)):
        lat = round(origin[0] + SPACING_DEG * index, 7)
        lon = origin[1]
        made = await registry.provision(
            store, first_id + index, role, user=user, zone=zone, street=street, lat=lat, lon=lon,
            label=f"{role} {first_id + index}, {street} (simulated)")
        specs.append(NodeSpec(made.node.node_id, role, made.mac_key, made.broker_password,
                              lat, lon, AIR_SETTINGS if role == "air" else {},
                              INTERVALS[role], zone, street))
    return specs


def local_broker(directory: Path, specs: Sequence[NodeSpec], gateway_user: str,
                 gateway_password: str) -> PrivateMosquitto:
    """A private Mosquitto knowing these nodes and one gateway account (tests, demos)."""
    accounts = [acl.gateway_account(gateway_user, acl.hash_password(gateway_password))]
    accounts += [acl.node_account(spec.node_id, acl.hash_password(spec.broker_password))
                 for spec in specs]
    return PrivateMosquitto(directory, accounts)


def parse_broker(url: str) -> tuple[str, int]:
    """(host, port) of mqtt://host:port (or host:port)."""
    parts = urlsplit(url if "://" in url else "mqtt://" + url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise CommandError(f"broker {url!r}: give mqtt://HOST:PORT (TLS is not simulated)")
    try:
        return parts.hostname, parts.port or 1883
    except ValueError:
        raise CommandError(f"broker {url!r}: the port must be a number") from None


class Radio:
    """A TCP relay between the nodes and the broker that can drop every link at once."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.up = True
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._links: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.listen_port = int(self._server.sockets[0].getsockname()[1])
        return self.listen_port

    def set_up(self, up: bool) -> None:
        self.up = up
        if not up:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = asyncio.current_task()
        assert link is not None
        self._links.add(link)
        link.add_done_callback(self._links.discard)
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(4096):
                    dst.write(data)
                    await dst.drain()
            dst.close()
            self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        self.set_up(False)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Aborted links end by themselves: let them, rather than leave them to be cancelled.
        await asyncio.gather(*self._links, return_exceptions=True)


@dataclass
class _Slot:
    spec: NodeSpec
    hal: StreetHal
    root: Path
    node: Any = None
    task: asyncio.Task[None] | None = None
    boots: int = 0
    crashes: int = 0


class Fleet:
    """Simulated nodes in this process, each running the firmware app.

    broker: mqtt://host:port. directory: the nodes' flash folders (node-ID/; a new
    temporary folder if None).
    speed: street seconds per real second. radio=True routes every node through a
    relay so that set_link(False) drops their links (a radio outage). boot_rate: nodes
    powered on per real second (default: all at once), as a district's poles come on
    one after the other; their reports then keep that spread.
    """

    def __init__(self, nodes: Sequence[NodeSpec], broker: str, directory: Path | None = None, *,
                 street: Street | None = None, speed: float = 1.0, seed: int = 0,
                 fw: str | None = None, traffic: bool = True, radio: bool = False,
                 boot_rate: float | None = None) -> None:
        self.specs = list(nodes)
        self.broker = parse_broker(broker)
        self.directory = directory or Path(tempfile.mkdtemp(prefix="citisense-fleet-"))
        self.street = street or Street(clock=StreetClock(speed=speed), seed=seed)
        self.seed = seed
        self.fw = fw or _default_version()
        self.radio = Radio(*self.broker) if radio else None
        self.traffic = Traffic(self.street, [_bay(spec) for spec in self.specs
                                             if spec.role == "parking"], seed) if traffic else None
        self._slots: dict[int, _Slot] = {}
        self._background: list[asyncio.Task[None]] = []
        self._shared = Shared(self.street)
        self.boot_rate = boot_rate

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        host, port = self.broker
        if self.radio is not None:
            host, port = "127.0.0.1", await self.radio.start()
        for index, spec in enumerate(self.specs):
            root = write_config(self.directory, spec, host, port)
            hal = StreetHal(self.street, spec.role, _bay(spec), seed=hash((self.seed, index)),
                            shared=self._shared)
            slot = _Slot(spec, hal, root)
            self._slots[spec.node_id] = slot
            delay = index / self.boot_rate if self.boot_rate else 0.0
            slot.task = asyncio.create_task(self._run(slot, delay))
        if self.traffic is not None:
            self._background.append(asyncio.create_task(self.traffic.run()))
        self._background.append(asyncio.create_task(self._watch()))

    async def stop(self) -> None:
        """Stop every node cleanly (no wills), flushing their queues to their folders."""
        for task in self._background:
            task.cancel()
        self._background = []
        for slot in self._slots.values():
            await self._halt(slot)
            node = slot.node
            if node is not None and node.client is not None and node.client.connected:
                await node.client.disconnect()
            if node is not None and getattr(node, "store", None) is not None:
                node.store.flush()
        if self.radio is not None:
            await self.radio.close()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- looking at and acting on nodes -------------------------------------------------

    def hal(self, node_id: int) -> StreetHal:
        return self._slots[node_id].hal

    def node(self, node_id: int) -> Any:
        """The firmware's app.Node running now (a new one after every restart)."""
        return self._slots[node_id].node

    def boots(self, node_id: int) -> int:
        return self._slots[node_id].boots

    def set_link(self, up: bool) -> None:
        """The street's network comes and goes; with radio=True, live links drop too."""
        self.street.wifi.up = up
        if self.radio is not None:
            self.radio.set_up(up)

    async def restart(self, node_id: int, cause: int = messages.RESET_EXTERNAL,
                      power_cut: bool = False) -> None:
        """Reset a node (reset button, watchdog...); a power cut also loses its RTC time."""
        slot = self._slots[node_id]
        await self._halt(slot)
        if power_cut:
            slot.hal.power_cycle()
        slot.hal.cause = cause
        slot.task = asyncio.create_task(self._run(slot))

    async def _halt(self, slot: _Slot) -> None:
        if slot.task is not None:
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot.task
            slot.task = None
        if slot.node is not None:
            slot.node.power_off()
        slot.hal.watchdog_start(24 * 3600 * 1000)  # off until the next boot starts it

    async def _run(self, slot: _Slot, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)  # powered on later
        while True:
            node = _app.Node(slot.hal, str(slot.root), self.fw, slot.spec.role)
            slot.node = node
            slot.boots += 1
            try:
                await node.run()
            except Reset:
                continue  # the app reset the board (commanded reboot); it boots again
            except Exception:  # a firmware crash: a board panics and reboots
                log.exception("node %d crashed", slot.spec.node_id)
                node.power_off()
                slot.crashes += 1
                slot.hal.cause = messages.RESET_PANIC
                await asyncio.sleep(CRASH_PAUSE_S)

    async def _watch(self) -> None:
        """The boards' watchdogs: a node that stopped feeding it is reset."""
        while True:
            await asyncio.sleep(1.0)
            for index, (node_id, slot) in enumerate(list(self._slots.items())):
                if slot.hal.watchdog_expired():
                    log.warning("node %d: watchdog reset", node_id)
                    await self.restart(node_id, messages.RESET_WATCHDOG)
                elif index % WATCH_SLICE == WATCH_SLICE - 1:
                    await asyncio.sleep(0)  # thousands of boards: let the others run between

    async def run_for(self, seconds: float | None) -> None:
        """Run until `seconds` (real) have passed, or forever."""
        await asyncio.sleep(float("inf") if seconds is None else seconds)


def _bay(spec: NodeSpec) -> str:
    return f"bay-{spec.node_id}"


def _default_version() -> str:
    return importlib.metadata.version("citisense")


# -- several processes ----------------------------------------------------------------------

NODES_PER_PROCESS = 4000  # what one CPython process runs while leaving its event loop idle


def default_processes(nodes: int) -> int:
    """Worker processes for `nodes` nodes: one per NODES_PER_PROCESS, at most one per CPU."""
    return max(1, min(os.cpu_count() or 1, -(-nodes // NODES_PER_PROCESS)))


def run_processes(specs: Sequence[NodeSpec], broker: str, directory: Path, processes: int, *,
                  speed: float = 1.0, seed: int = 0, seconds: float | None = None,
                  boot_rate: float | None = None) -> None:
    """Split the nodes over `processes` worker processes; returns after `seconds` (or at
    Ctrl-C), once every worker stopped its nodes cleanly."""
    from citisense_tools.fleet_procs import FleetProcess, split

    async def main() -> None:
        now = time.time()
        rate = None if boot_rate is None else boot_rate / processes
        workers = [FleetProcess(share, broker, directory, speed=speed, seed=seed,
                                anchor=(now, now), boot_rate=rate)
                   for share in split(specs, processes)]
        for worker in workers:
            worker.start()
        try:
            await asyncio.sleep(float("inf") if seconds is None else seconds)
        finally:
            await asyncio.gather(*(worker.stop() for worker in workers))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# -- the command ----------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, int]:
    """'lighting=6,parking=3,air=1' -> weights."""
    mix = {}
    for part in text.split(","):
        role, _, weight = part.partition("=")
        role = role.strip()
        if role not in registry.ROLES or not weight.strip().isdigit():
            raise CommandError(f"role mix {text!r}: write it like lighting=6,parking=3,air=1")
        mix[role] = int(weight)
    return mix


def _provision(args: argparse.Namespace, count: int) -> list[NodeSpec]:
    async def work() -> list[NodeSpec]:
        store = open_store(store_url(args))
        await store.open()
        try:
            return await provision_nodes(store, count, mix=parse_mix(args.mix), user=args.user,
                                         zone=args.zone, street=args.street,
                                         origin=(args.lat, args.lon))
        finally:
            await store.close()

    try:
        return asyncio.run(work())
    except (StoreError, registry.RegistryError) as err:
        raise CommandError(f"the gateway's node registry: {err}") from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet", help="run simulated nodes (the real firmware app) against a broker",
        description="Run simulated lighting, parking and air-quality nodes: the firmware app "
                    "itself under CPython, on a simulated street, each node with its own key "
                    "and MQTT connection. Nodes missing from --dir are registered with the "
                    "gateway first, like real ones.")
    parser.add_argument("--nodes", type=int, required=True, help="how many nodes to run")
    parser.add_argument("--broker", required=True, help="MQTT broker, mqtt://HOST:PORT")
    parser.add_argument("--dir", type=Path, default=Path("fleet"),
                        help="the nodes' flash folders, reused by later runs "
                             "(default: %(default)s)")
    parser.add_argument("--store", help="the gateway's store URL, to register new nodes "
                                        "(default: from the gateway's configuration)")
    parser.add_argument("--gateway-config", help="the gateway's TOML configuration file")
    parser.add_argument("--mix", default="lighting=6,parking=3,air=1",
                        help="role weights of new nodes (default: %(default)s)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="street seconds per real second (default: %(default)s)")
    parser.add_argument("--duration", type=float,
                        help="real seconds to run (default: until Ctrl-C)")
    parser.add_argument("--processes", type=int,
                        help="worker processes to spread the nodes over (default: one per "
                             f"{NODES_PER_PROCESS} nodes, at most one per CPU)")
    parser.add_argument("--boot-rate", type=float, default=500.0,
                        help="nodes powered on per second at the start, so that thousands do "
                             "not hit the broker in the same instant (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="street randomness (default: 0)")
    parser.add_argument("--lat", type=float, default=51.05,
                        help="where the street starts (default: %(default)s)")
    parser.add_argument("--lon", type=float, default=3.72)
    parser.add_argument("--zone", default="fleet", help="zone of new nodes (default: fleet)")
    parser.add_argument("--street", default="Simulated street", help="street of new nodes")
    parser.add_argument("--user", default="fleet", help="who registers new nodes (audit log)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        raise CommandError("--nodes must be at least 1")
    if args.processes is None:
        args.processes = default_processes(args.nodes)
    if args.speed <= 0 or args.processes < 1:
        raise CommandError("--speed must be positive and --processes at least 1")
    host, port = parse_broker(args.broker)
    specs = specs_from_directory(args.dir) if args.dir.exists() else []
    if len(specs) < args.nodes:
        made = _provision(args, args.nodes - len(specs))
        for spec in made:
            write_config(args.dir, spec, host, port)  # keep the secrets before anything else
        specs += made
        plural = "" if len(made) == 1 else "s"
        print(f"fleet: registered {len(made)} new node{plural}; give the broker their accounts "
              "(citisense gateway broker-config) before they can connect")
    specs = specs[:args.nodes]
    roles = {role: sum(1 for spec in specs if spec.role == role) for role in registry.ROLES}
    print(f"fleet: {len(specs)} nodes ({json.dumps(roles)[1:-1]}) on {args.broker}, street "
          f"time x{args.speed:g}; flash folders in {args.dir}")
    try:
        if args.processes == 1:
            asyncio.run(_run_here(specs, args))
        else:
            run_processes(specs, args.broker, args.dir, args.processes, speed=args.speed,
                          seed=args.seed, seconds=args.duration, boot_rate=args.boot_rate)
    except KeyboardInterrupt:
        pass
    return 0


async def _run_here(specs: list[NodeSpec], args: argparse.Namespace) -> None:
    async with Fleet(specs, args.broker, args.dir, speed=args.speed, seed=args.seed,
                     boot_rate=args.boot_rate) as fleet:
        await fleet.run_for(args.duration)
