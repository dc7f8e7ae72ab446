"""Fleet benchmarks: command latency and a reconnect storm, gateway and nodes end to end.

One process runs the gateway (SQLite store) and N simulated nodes (fleet.Fleet: the
firmware app under CPython, each with its own MQTT connection through a relay that can
drop every link at once); a private Mosquitto runs beside it. So the figures include the
nodes' own CPU: on a real deployment the nodes are boards, and this machine plays both.

commands: one command at a time to a random node (`samples` of them) while all N are
connected, timed from Commands.issue to the ack seen committed in the store; then one
command to every node at once (a burst), timed the same way for each.

storm: every link drops at once for `outage_s`, then comes back. Timed from the moment
the links return to the gateway's view being complete and consistent: every node online
again in its twin, and every message the nodes queued since the drop (wills, births,
telemetry) stored, none lost.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import resource
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from citisense_gateway import acl, config, twin
from citisense_gateway.service import Gateway
from citisense_gateway.store import open_store
from citisense_protocols import messages
from citisense_tools.fleet import Fleet, NodeSpec, local_broker, provision_nodes

_uplink: Any = importlib.import_module("citisense_firmware.uplink")

GATEWAY_USER = "gateway"
POLL_S = 0.05
IDENTIFY_S = 1  # the command: blink for a second (every role supports it)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of non-empty `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def latency_figures(latencies: list[float]) -> dict[str, float]:
    return {"p50_ms": _ms(percentile(latencies, 0.5)), "p99_ms": _ms(percentile(latencies, 0.99)),
            "max_ms": _ms(max(latencies)), "mean_ms": _ms(statistics.mean(latencies))}


async def _wait(condition: Callable[[], Any], timeout: float) -> bool:
    """Poll the async `condition` until it is true or `timeout` s pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(POLL_S)
    return False


class FleetBench:
    """Gateway, broker and N nodes, started by `start` and torn down by `stop`."""

    def __init__(self, nodes: int, workdir: Path, *, speed: float = 1.0) -> None:
        self.n = nodes
        self.workdir = workdir
        self.speed = speed
        self.db = workdir / "gateway.db"
        self.specs: list[NodeSpec] = []
        self.gateway: Gateway | None = None
        self.fleet: Fleet | None = None
        self._broker: Any = None
        self.connect_s = 0.0

    async def start(self, timeout: float) -> None:
        store_url = f"sqlite:///{self.db}"
        store = open_store(store_url)
        await store.open()
        try:
            self.specs = await provision_nodes(store, self.n)
        finally:
            await store.close()
        password = acl.new_password()
        self._broker = local_broker(self.workdir / "broker", self.specs, GATEWAY_USER, password)
        self._broker.start()
        cfg = config.load(environ={}, overrides={
            "gateway.data_dir": str(self.workdir), "store.url": store_url,
            "gateway.log_level": "warning",
            "mqtt.url": f"mqtt://127.0.0.1:{self._broker.port}", "mqtt.username": GATEWAY_USER,
            "mqtt.password": password, "metrics.port": -1, "api.port": -1})
        self.gateway = Gateway(cfg)
        await self.gateway.start()
        began = time.monotonic()
        self.fleet = Fleet(self.specs, f"mqtt://127.0.0.1:{self._broker.port}",
                           self.workdir / "fleet", speed=self.speed, radio=True)
        await self.fleet.start()
        if not await _wait(self.all_online, timeout):
            raise RuntimeError(f"only {await self.online()} of {self.n} nodes came online "
                               f"within {timeout:.0f} s")
        self.connect_s = time.monotonic() - began

    async def stop(self) -> None:
        if self.fleet is not None:
            await self.fleet.stop()
        if self.gateway is not None:
            await self.gateway.stop()
        if self._broker is not None:
            self._broker.stop()

    async def online(self) -> int:
        assert self.gateway is not None
        counts = await self.gateway.update_liveness(time.time())
        return counts[twin.ONLINE]

    async def all_online(self) -> bool:
        return await self.online() == self.n

    def resources(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"process_max_rss_mib": round(usage.ru_maxrss / 1024, 1),
                "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}

    # -- command latency ----------------------------------------------------------------

    async def _acked_at(self, command_ids: set[int]) -> dict[int, float]:
        assert self.gateway is not None and self.gateway.store is not None
        done = {}
        for command in await self.gateway.store.commands(limit=len(command_ids) + 100):
            if command.command_id in command_ids and command.state == "acked":
                done[command.command_id] = command.done_at or 0.0
        return done

    async def one_command(self, node_id: int, timeout: float) -> float | None:
        """Seconds from issue to the ack committed; None if it did not come in time."""
        assert self.gateway is not None and self.gateway.store is not None
        store = self.gateway.store
        began = time.monotonic()
        [command] = await self.gateway.commands.issue([node_id], messages.OP_IDENTIFY,
                                                      IDENTIFY_S, user="bench")
        deadline = began + timeout
        while time.monotonic() < deadline:
            if (await store.get_command(command.command_id)).state == "acked":
                return time.monotonic() - began
            await asyncio.sleep(0.005)
        return None

    async def commands(self, samples: int, timeout: float) -> dict[str, Any]:
        assert self.gateway is not None
        rng = random.Random(1)
        single: list[float] = []
        missed = 0
        for _ in range(samples):
            took = await self.one_command(rng.choice(self.specs).node_id, timeout)
            if took is None:
                missed += 1
            else:
                single.append(took)
        # Burst: one command to every node; per command, issue to ack committed (gateway
        # clock at the ack's arrival), and the time until the last ack is in the store.
        issued_at = time.time()
        began = time.monotonic()
        issued = await self.gateway.commands.issue([s.node_id for s in self.specs],
                                                   messages.OP_IDENTIFY, IDENTIFY_S + 1,
                                                   user="bench")
        ids = {c.command_id for c in issued}
        done: dict[int, float] = {}

        async def all_acked() -> bool:
            done.update(await self._acked_at(ids))
            return len(done) == len(ids)

        await _wait(all_acked, timeout)
        burst_all_s = time.monotonic() - began
        burst = [max(0.0, at - issued_at) for at in done.values()]
        return {
            "nodes": self.n, "connect_all_s": round(self.connect_s, 1),
            "single": {"samples": samples, "acked": len(single), "missed": missed,
                       **(latency_figures(single) if single else {})},
            "burst": {"commands": len(ids), "acked": len(done),
                      "all_acked_s": round(burst_all_s, 2),
                      **(latency_figures(burst) if burst else {})},
            **self.resources(),
        }

    # -- reconnect storm ----------------------------------------------------------------

    def _record_pushes(self) -> dict[int, set[tuple[int, int]]]:
        """From now on, note (boot, seq) of every message each node queues for sending."""
        assert self.fleet is not None
        pushed: dict[int, set[tuple[int, int]]] = {}
        for spec in self.specs:
            node = self.fleet.node(spec.node_id)
            queue = node.store
            noted = pushed.setdefault(spec.node_id, set())
            original = queue.push

            def push(record: bytes, original: Any = original,
                     noted: set[tuple[int, int]] = noted) -> None:
                _, boot, seq, _ = _uplink.unpack_record(record)
                noted.add((boot, seq))
                original(record)

            queue.push = push  # the node object lives until the bench stops: no restarts
        return pushed

    def _stored_since(self, since: float) -> set[tuple[int, int, int]]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT node_id, boot, seq FROM uplinks WHERE received_at >= ?",
                              (since,)).fetchall()
        return {(int(n), int(b), int(s)) for n, b, s in rows}

    async def storm(self, outage_s: float, timeout: float) -> dict[str, Any]:
        assert self.fleet is not None
        queued_before = sum(self.fleet.node(s.node_id).store.depth for s in self.specs)
        pushed = self._record_pushes()
        dropped_at = time.time()
        self.fleet.set_link(False)
        went_offline = await _wait(self._none_online, outage_s + 30)
        offline_s = time.time() - dropped_at
        await asyncio.sleep(max(0.0, outage_s - offline_s))
        back_at = time.monotonic()
        self.fleet.set_link(True)
        online_s = None
        if await _wait(self.all_online, timeout):
            online_s = time.monotonic() - back_at
        lost: set[tuple[int, int, int]] = set()

        async def consistent() -> bool:
            lost.clear()
            stored = await asyncio.to_thread(self._stored_since, dropped_at - 1)
            lost.update((n, b, s) for n, seqs in pushed.items() for b, s in seqs
                        if (n, b, s) not in stored)
            return not lost and await self.all_online()

        remaining = max(1.0, timeout - (time.monotonic() - back_at))
        complete = await _wait(consistent, remaining)
        consistent_s = time.monotonic() - back_at
        drops = sum(self.fleet.node(s.node_id).store.drops for s in self.specs)
        return {
            "nodes": self.n, "outage_s": outage_s, "all_offline_seen": went_offline,
            "offline_detected_s": round(offline_s, 1),
            "all_online_s": None if online_s is None else round(online_s, 1),
            "consistent_s": round(consistent_s, 1) if complete else None,
            "messages_queued_during": sum(len(v) for v in pushed.values()),
            "queued_before_drop": queued_before,
            "lost": len(lost), "node_queue_drops": drops,
            **self.resources(),
        }

    async def _none_online(self) -> bool:
        return await self.online() == 0

