"""The station a board under test talks to: Mosquitto, the real gateway service and its
node registry (SQLite), as a city runs them, on the rig's host.

The gateway runs in a thread of its own (its asyncio loop); tests call it synchronously.
Its command clock is the street clock, so commands expire and time syncs carry street
time: on a virtual board whose street runs faster than real time, the node's time and
the gateway's agree, as they do on a real street.

    station.allow(node)                          a node `citisense provision` registered
    station.dim(node, 40, 600)                   -> command id (wait_command for its ack)
    station.telemetry(node), station.events(node), station.births(node)
    station.link_down() / link_up()              the node's network path is cut / restored
    station.restart_gateway(pause=...)           stop the gateway, wait, start it again
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from citisense_boards.street import StreetClock
from citisense_gateway import acl, config, schedules
from citisense_gateway.mosquitto import PrivateMosquitto, free_port
from citisense_gateway.service import Gateway
from citisense_gateway.store import open_store
from citisense_gateway.store.base import Command, Store, Twin, UplinkRow
from citisense_protocols import messages
from citisense_tools import commissioning
from hilkit.link import NodeLink

T = TypeVar("T")

POLL_S = 0.1  # how often waits look at the store (real seconds)
SLACK_S = 20.0  # real seconds added to every wait: boots, reconnects, a loaded machine


class Station:
    def __init__(self, directory: Path, clock: StreetClock, *, bind: str = "127.0.0.1",
                 node_host: str | None = None) -> None:
        """`bind`: where the broker listens; `node_host`: the address nodes are given for it
        (a real board reaches the rig's host over the network, a virtual one over loopback)."""
        self.directory = directory
        self.clock = clock
        self.node_host = node_host or bind
        self._gateway_password = acl.new_password()
        # One fixed port: after a broker restart nodes come back to the address they were
        # given; persistence keeps the gateway's session, as a production broker does.
        self.broker = PrivateMosquitto(
            directory / "broker",
            [acl.gateway_account("gateway", acl.hash_password(self._gateway_password))],
            bind=bind, port=free_port(), persistence=True, stop_timeout=10)
        # Nodes reach the broker through a relay the rig can cut (link.py).
        self.link = NodeLink((bind, free_port()), (self.broker.local_host, self.broker.port))
        self.store_url = f"sqlite:///{directory / 'gateway.db'}"
        self._instance = f"hil{secrets.token_hex(3)}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hil-gateway",
                                        daemon=True)
        self._store: Store | None = None
        self.gateway: Gateway | None = None

    # ---- life cycle ------------------------------------------------------------
    def start(self) -> Station:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self.broker.start()
        self._call(self.link.start())
        self._store = self._call(self._open_store())
        self.start_gateway()
        return self

    def close(self) -> None:
        try:
            if self.gateway is not None:
                self.stop_gateway()
            if self._store is not None:
                self._call(self._store.close())
        finally:
            self._call(self.link.cut())
            self.broker.stop()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def start_gateway(self) -> None:
        assert self.gateway is None, "the gateway is running already"
        self.gateway = self._call(self._start_gateway())

    def stop_gateway(self) -> None:
        """A clean stop: it commits what it holds; the broker keeps its session's queue."""
        gateway, self.gateway = self.gateway, None
        if gateway is not None:
            self._call(gateway.stop())

    def restart_gateway(self, pause_s: float = 0.0) -> None:
        """Stop the gateway, leave it down `pause_s` real seconds, start it again."""
        self.stop_gateway()
        time.sleep(pause_s)
        self.start_gateway()

    def link_down(self) -> None:
        """The node's network path is cut: its connection breaks, new ones are refused."""
        self._call(self.link.cut())

    def link_up(self) -> None:
        self._call(self.link.start())

    @property
    def node_port(self) -> int:
        """The port nodes are given for the broker (the relay's)."""
        return self.link.listen[1]

    @property
    def birth_source(self) -> commissioning.MqttBirthSource:
        """Where `citisense flash` watches for the node's birth: the station's broker."""
        return commissioning.MqttBirthSource(commissioning.Broker(
            self.broker.local_host, self.broker.port, False, "gateway",
            self._gateway_password))

    @property
    def broker_url(self) -> str:
        return f"mqtt://{self.broker.local_host}:{self.broker.port}"

    # ---- registry ----------------------------------------------------------------
    def allow(self, node: int) -> None:
        """Let a node registered by `citisense provision` into the broker (what `citisense
        gateway broker-config` and a broker reload do for a city)."""
        registered = self._call(self._open().get_node(node))
        self.broker.add_account(acl.node_account(node, registered.broker_hash))

    # ---- commands ------------------------------------------------------------------
    def command(self, node: int, op: int, args: object, *, ttl: float | None = None) -> int:
        """Issue a command as an operator would; its id (the gateway sends and retries it)."""
        gateway = self._running()
        issued = self._call(gateway.commands.issue([node], op, args, user="hil", ttl=ttl,
                                                   note="HIL scenario"))
        return issued[0].command_id

    def time_sync(self, node: int) -> int:
        return self.command(node, messages.OP_TIME_SYNC, int(self.clock.now()), ttl=600)

    def dim(self, node: int, level: int, seconds: int) -> int:
        return self.command(node, messages.OP_DIM, [level, seconds])

    def reserve(self, node: int, start: float, until: float) -> int:
        cid = self.command(node, messages.OP_RESERVE, [int(start), int(until)])
        self._call(self._open().set_reservation(node, float(until)))
        return cid

    def release(self, node: int) -> int:
        cid = self.command(node, messages.OP_RELEASE, None)
        self._call(self._open().set_reservation(node, None))
        return cid

    def assign_schedule(self, node: int, source: dict[str, Any], name: str = "hil-night"
                        ) -> int:
        """Save a schedule (a new version) and make it the node's, as an operator does; the
        version. The gateway pushes it (and again on drift)."""
        gateway = self._running()

        async def work() -> int:
            store = self._open()
            version = await store.next_schedule_version()
            await store.add_schedule(schedules.record(name, source, version, "hil",
                                                      now=self.clock.now()))
            await gateway.reconciler.assign_schedule(name, [node], "hil")
            return version

        return self._call(work())

    def run_schedule(self, node: int, source: dict[str, Any], name: str = "hil-night"
                     ) -> int:
        """Assign a schedule and wait until the gateway knows the node runs it."""
        version = self.assign_schedule(node, source, name)
        self.wait_until(lambda: self.twin(node).reported_schedule == version, 120,
                        f"node {node} running schedule version {version}")
        return version

    def schedule_wire(self, name: str = "hil-night") -> dict[int, Any]:
        """The wire object of the schedule's latest version (what the node runs)."""
        return schedules.wire_of(self._call(self._open().get_schedule(name)))

    def get_command(self, command_id: int) -> Command:
        return self._call(self._open().get_command(command_id))

    def wait_command(self, command_id: int, street_s: float = 120.0) -> Command:
        """The command once the node answered it (acked or failed); AssertionError if it
        is still open after `street_s` street seconds (plus slack)."""
        done: list[Command] = []

        def answered() -> bool:
            command = self.get_command(command_id)
            if command.state in ("acked", "failed", "expired"):
                done.append(command)
                return True
            return False

        self.wait_until(answered, street_s, f"an answer to command {command_id}")
        return done[0]

    def run_command(self, command_id: int, street_s: float = 120.0) -> None:
        """Wait for the command and require the node to have carried it out."""
        command = self.wait_command(command_id, street_s)
        result = messages.RESULT_NAMES[command.result] if command.result is not None else "-"
        assert command.state == "acked" and command.result == messages.OK, (
            f"command {command_id} (op {command.opcode}) ended {command.state}, result {result}")

    # ---- what the gateway stored -----------------------------------------------------
    def uplinks(self, node: int, kind: int | None = None) -> list[UplinkRow]:
        """Stored uplinks of the node, oldest first."""
        rows = self._call(self._open().uplinks(node, kind=kind, limit=100_000))
        return sorted(rows, key=lambda r: (r.boot, r.seq))

    def telemetry(self, node: int) -> list[list[Any]]:
        return [json.loads(r.data) for r in self.uplinks(node, messages.TELEMETRY)]

    def events(self, node: int) -> list[tuple[int, int]]:
        """(event type, detail) in the order the node raised them."""
        return [tuple(json.loads(r.data)) for r in self.uplinks(node, messages.EVENT)]

    def births(self, node: int) -> list[dict[str, Any]]:
        """Birth data, field number (as text) -> value, oldest first."""
        found = []
        for row in self.uplinks(node, messages.BIRTH):
            data = json.loads(row.data)
            found.append(data if isinstance(data, dict) else dict(enumerate(data)))
        return [{str(k): v for k, v in birth.items()} for birth in found]

    def quarantined(self) -> list[str]:
        """Why the gateway refused messages (reason: detail), oldest first."""
        rows = self._call(self._open().quarantined())
        return [f"{r.reason}: {r.detail}" for r in reversed(rows)]

    def twin(self, node: int) -> Twin:
        return self._call(self._open().twin(node))

    def wait_until(self, check: Callable[[], bool], street_s: float, what: str) -> None:
        """Wait until check() holds, for `street_s` street seconds plus slack."""
        deadline = time.monotonic() + street_s / self.clock.speed + SLACK_S
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {street_s:g} street seconds "
                                     f"(x{self.clock.speed:g}) plus {SLACK_S:g} s")
            time.sleep(POLL_S)

    def wait_telemetry(self, node: int, check: Callable[[list[Any]], bool], street_s: float,
                       what: str) -> list[Any]:
        """The first stored telemetry record (oldest first) that satisfies `check`."""
        found: list[list[Any]] = []

        def seen() -> bool:
            found[:] = [t for t in self.telemetry(node) if check(t)]
            return bool(found)

        self.wait_until(seen, street_s, what)
        return found[0]

    # ---- plumbing ------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _open(self) -> Store:
        assert self._store is not None, "the station is not started"
        return self._store

    def _running(self) -> Gateway:
        if self.gateway is None:
            raise AssertionError("the gateway is stopped: start_gateway() first")
        return self.gateway

    async def _open_store(self) -> Store:
        store = open_store(self.store_url)
        await store.open()
        return store

    async def _start_gateway(self) -> Gateway:
        # Retries in street seconds (the command clock): about 3 and 20 real seconds.
        speed = self.clock.speed
        overrides: dict[str, object] = {
            "gateway.data_dir": str(self.directory), "gateway.instance": self._instance,
            "gateway.log_format": "text",
            "store.url": self.store_url, "metrics.port": -1, "api.port": -1,
            "mqtt.url": self.broker_url, "mqtt.password": self._gateway_password,
            "commands.retry_base": 3.0 * speed, "commands.retry_cap": 20.0 * speed,
        }
        gateway = Gateway(config.load(environ={}, overrides=overrides))
        await gateway.start()
        if not gateway.mqtt.connected.is_set():
            await gateway.stop()
            raise AssertionError(f"the gateway could not connect to the station's broker at "
                                 f"{self.broker_url}: {self.broker.log()[-1000:]}")
        gateway.commands.clock = self.clock.now
        return gateway
