"""Fleet benchmarks: command latency and a reconnect storm, gateway and nodes end to end.

Setup, as a city would run it on one machine: N nodes registered in the gateway's
registry (SQLite), a private Mosquitto configured from that registry the way
`citisense gateway broker-config` does it (password file, ACL), the gateway in this
process with its HTTP API, and the nodes (fleet.Fleet: the firmware app under CPython,
each with its own key and MQTT connection) spread over worker processes
(fleet_procs), booted BOOT_RATE a second; each worker can cut its nodes' network
(fleet_procs.Radio), so the links of the whole street can drop at once. This machine
plays both sides: the figures include the nodes' own CPU, which on a real deployment is
on the boards.

commands: one identify command at a time to a random node, `samples` of them, while
all N are connected: from the HTTP API call (POST /nodes/ID/commands) to the gateway
having committed the node's ack to its store (the instant the API reports it acked).
Each is split into: API call to transmission, transmission to the ack's arrival (broker,
node, broker), arrival to commit. Then one command to each of `burst` nodes at once.

storm: every link drops at once for `outage_s`, then comes back; the nodes reconnect by
their own jittered backoff. Timed from the links' return to the gateway's view being
complete and consistent: every node online in its twin with the birth it sent last;
every node's will (the broker's word that it dropped) stored; every message the nodes
queued since the drop that is more than a second old stored, none lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from citisense_gateway import acl, config
from citisense_gateway.api.accounts import Accounts
from citisense_gateway.api.app import PREFIX
from citisense_gateway.mosquitto import PrivateMosquitto
from citisense_gateway.service import Gateway, tune_process
from citisense_gateway.store import open_store
from citisense_gateway.store.base import IngestBatch
from citisense_gateway.store.sql import SqlStore
from citisense_protocols import messages
from citisense_tools.fleet import NodeSpec, default_processes, provision_nodes
from citisense_tools.fleet_procs import (
    FleetProcess,
    peak_rss_mib,
    process_usage,
    raise_open_files,
    split,
)

GATEWAY_USER = "gateway"
API_USER = "bench"
IDENTIFY_S = 1  # the command: blink for a second (every role supports it)
POLL_S = 0.5  # how often the storm looks at the gateway's view (a read-only connection)
SETTLE_GRACE_S = 1.0  # a message queued this recently may still be on its way
IDLE_WINDOW_S = 10.0
SETTLE_S = 10.0
BOOT_RATE = 500.0  # nodes powered on per second, all workers together


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of non-empty `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def latency_figures(latencies: list[float]) -> dict[str, float]:
    return {"p50_ms": _ms(percentile(latencies, 0.5)), "p99_ms": _ms(percentile(latencies, 0.99)),
            "max_ms": _ms(max(latencies)), "mean_ms": _ms(statistics.mean(latencies))}


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Api:
    """The gateway's HTTP API as an operator's script uses it: one kept-alive connection,
    in a thread (the gateway serves it from this process's event loop)."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._token = ""

    def _call(self, method: str, path: str, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            self._conn.request(method, PREFIX + path, json.dumps(body), headers)
            response = self._conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):
            # The server closes a kept-alive connection after a quiet while: open a new one.
            self._conn.close()
            self._conn.request(method, PREFIX + path, json.dumps(body), headers)
            response = self._conn.getresponse()
        data = json.loads(response.read() or b"null")
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data}")
        return data

    async def login(self, user: str, password: str) -> None:
        answer = await asyncio.to_thread(self._call, "POST", "/auth/login",
                                         {"username": user, "password": password})
        self._token = str(answer["token"])

    async def identify(self, node_id: int, seconds: int) -> int:
        answer = await asyncio.to_thread(self._call, "POST", f"/nodes/{node_id}/commands",
                                         {"op": "identify", "seconds": seconds})
        return int(answer["command_id"])

    def close(self) -> None:
        self._conn.close()


class FleetBench:
    """Registry, broker, gateway and N nodes, started by `start` and torn down by `stop`."""

    def __init__(self, nodes: int, workdir: Path, *, processes: int | None = None,
                 speed: float = 1.0, boot_rate: float = BOOT_RATE) -> None:
        self.n = nodes
        self.boot_rate = boot_rate
        self.workdir = workdir
        self.processes = processes or default_processes(nodes)
        self.speed = speed
        self.db = workdir / "gateway.db"
        self.specs: list[NodeSpec] = []
        self.gateway: Gateway | None = None
        self.broker: PrivateMosquitto | None = None
        self.workers: list[FleetProcess] = []
        self.api: Api | None = None
        self.setup: dict[str, Any] = {}
        self._acks: dict[int, tuple[float, float, str]] = {}  # id -> (committed, arrived, state)
        self._acked = asyncio.Event()

    # -- set up and tear down -----------------------------------------------------------

    async def start(self, timeout: float) -> None:
        began = time.monotonic()
        tune_process()  # this process is the gateway process
        files = raise_open_files(self.n + 1024)  # Mosquitto inherits it: a socket per node
        if files < self.n + 64:
            raise RuntimeError(f"the open-files limit is {files}: too low for {self.n} "
                               "connections to the broker (raise the hard limit: ulimit -Hn)")
        store_url = f"sqlite:///{self.db}"
        store = open_store(store_url)
        await store.open()
        try:
            self.specs = await provision_nodes(store, self.n)
            accounts = [acl.node_account(node.node_id, node.broker_hash)
                        for node in await store.nodes()]
            assert isinstance(store, SqlStore)
            users = Accounts(store.db)
            await users.open()
            api_password = acl.new_password()
            await users.add_user(API_USER, api_password, "technician", by="bench")
        finally:
            await store.close()
        self.setup["provision_s"] = round(time.monotonic() - began, 1)
        gateway_password = acl.new_password()
        accounts.insert(0, acl.gateway_account(GATEWAY_USER, acl.hash_password(gateway_password)))
        # A connection per node: no cap on connections (the open-files limit it inherits
        # from us is raised first).
        self.broker = PrivateMosquitto(self.workdir / "broker", accounts,
                                       extra_conf="max_connections -1\n", start_timeout=30,
                                       stop_timeout=10)
        self.broker.start()
        cfg = config.load(environ={}, overrides={
            "gateway.data_dir": str(self.workdir), "store.url": store_url,
            "gateway.log_level": "warning",
            "mqtt.url": f"mqtt://127.0.0.1:{self.broker.port}", "mqtt.username": GATEWAY_USER,
            "mqtt.password": gateway_password, "metrics.port": -1, "api.port": 0})
        self.gateway = Gateway(cfg)
        await self.gateway.start()
        self.gateway.ingest.observers.append(self._observe)
        assert self.gateway.api_port is not None
        self.api = Api(self.gateway.api_port)
        await self.api.login(API_USER, api_password)
        started = time.monotonic()
        now = time.time()
        broker_url = f"mqtt://127.0.0.1:{self.broker.port}"
        self.workers = [FleetProcess(share, broker_url, self.workdir / "fleet", speed=self.speed,
                                     anchor=(now, now), radio=True,
                                     boot_rate=self.boot_rate / self.processes)
                        for share in split(self.specs, self.processes)]
        for worker in self.workers:
            worker.start()
        connected = await asyncio.gather(*(w.request("wait_connected", timeout)
                                           for w in self.workers))
        if sum(connected) < self.n:
            raise RuntimeError(f"only {sum(connected)} of {self.n} nodes connected to the "
                               f"broker within {timeout:.0f} s")
        self.setup["nodes_connected_s"] = round(time.monotonic() - started, 1)
        deadline = time.monotonic() + timeout
        while (online := await self._online()) < self.n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {online} of {self.n} nodes online in the gateway "
                                   f"within {timeout:.0f} s")
            await asyncio.sleep(POLL_S)
        self.setup["all_online_s"] = round(time.monotonic() - started, 1)
        self.setup["worker_processes"] = self.processes
        self.setup["boot_rate_per_s"] = self.boot_rate
        # Every node reports at boot (birth, telemetry, health): let the gateway take that
        # in before looking at the fleet at rest.
        await asyncio.sleep(SETTLE_S)
        await self.loop_lag()
        self.setup["idle"] = await self.usage(IDLE_WINDOW_S)
        self.setup["idle"]["fleet_loop_lag"] = await self.loop_lag()

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.workers),
                             return_exceptions=True)
        if self.api is not None:
            self.api.close()
        if self.gateway is not None:
            await self.gateway.stop()
        if self.broker is not None:
            self.broker.stop()

    # -- looking at the gateway and the processes ---------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read-only look at the gateway's database, beside the gateway's own connection."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
            return db.execute(sql, params).fetchall()

    async def _online(self) -> int:
        [(count,)] = await asyncio.to_thread(self._query,
                                             "SELECT count(*) FROM twins WHERE online = 1")
        return int(count)

    async def _cpu(self) -> dict[str, float]:
        statuses = await asyncio.gather(*(w.request("status") for w in self.workers))
        assert self.broker is not None
        return {"gateway": process_usage()["cpu_s"],
                "fleet": sum(float(s["cpu_s"]) for s in statuses),
                "broker": _proc_cpu_s(self.broker.pid)}

    async def usage(self, seconds: float) -> dict[str, Any]:
        """CPU (% of one core) of gateway, fleet and broker over the next `seconds`, and
        the peak memory of each."""
        before, began = await self._cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        return await self.usage_since(before, began)

    async def usage_since(self, before: dict[str, float], began: float) -> dict[str, Any]:
        after, took = await self._cpu(), time.monotonic() - began
        statuses = await asyncio.gather(*(w.request("status") for w in self.workers))
        assert self.broker is not None
        return {
            "cpu_percent_of_one_core": {k: round((after[k] - before[k]) / took * 100, 1)
                                        for k in after},
            "peak_rss_mib": {"gateway": process_usage()["max_rss_mib"],
                             "fleet": round(sum(float(s["max_rss_mib"]) for s in statuses), 1),
                             "broker": peak_rss_mib(self.broker.pid)},
            "window_s": round(took, 1),
        }

    async def loop_lag(self) -> list[dict[str, float]]:
        """Each worker's event loop lag since the last look (what a message to a node waits
        before its node runs)."""
        return list(await asyncio.gather(*(w.request("lag") for w in self.workers)))

    async def _observe(self, batch: IngestBatch) -> None:
        """Ingest observer: the acks of each committed batch, as the API will report them."""
        now = time.time()
        for ack in batch.acks:
            if ack.state != "sent":
                self._acks[ack.command_id] = (now, ack.at, ack.state)
        if batch.acks:
            self._acked.set()

    async def _until_acked(self, ids: set[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ids <= self._acks.keys():
            self._acked.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), left)

    # -- command latency ----------------------------------------------------------------

    async def commands(self, samples: int, burst: int, timeout: float) -> dict[str, Any]:
        assert self.gateway is not None and self.gateway.store is not None
        assert self.api is not None
        store = self.gateway.store
        rng = random.Random(1)
        total: list[float] = []
        parts: dict[str, list[float]] = {"api_to_sent": [], "sent_to_ack_received": [],
                                         "received_to_committed": []}
        missed = 0
        await self.loop_lag()
        before, began = await self._cpu(), time.monotonic()
        for _ in range(samples):
            node_id = rng.choice(self.specs).node_id
            start = time.time()
            command_id = await self.api.identify(node_id, IDENTIFY_S)
            await self._until_acked({command_id}, timeout)
            if command_id not in self._acks:
                missed += 1
                continue
            committed, arrived, _ = self._acks[command_id]
            sent_at = (await store.get_command(command_id)).sent_at or start
            total.append(committed - start)
            parts["api_to_sent"].append(sent_at - start)
            parts["sent_to_ack_received"].append(arrived - sent_at)
            parts["received_to_committed"].append(committed - arrived)
        single_usage = await self.usage_since(before, began)
        single_usage["fleet_loop_lag"] = await self.loop_lag()
        # Burst: one command to each of `burst` nodes at once (an operator's whole zone).
        targets = [spec.node_id for spec in self.specs[:burst]]
        start = time.time()
        issued = await self.gateway.commands.issue(targets, messages.OP_IDENTIFY, IDENTIFY_S + 1,
                                                   user=API_USER)
        issued_s = time.time() - start
        ids = {c.command_id for c in issued}
        await self._until_acked(ids, timeout)
        done = [self._acks[i][0] - start for i in ids if i in self._acks]
        return {
            "nodes": self.n, "setup": self.setup,
            "single": {"samples": samples, "acked": len(total), "missed": missed,
                       **(latency_figures(total) if total else {}),
                       "parts_p50_p99_ms": {k: [_ms(percentile(v, 0.5)), _ms(percentile(v, 0.99))]
                                            for k, v in parts.items() if v},
                       "usage": single_usage},
            "burst": {"commands": len(ids), "acked": len(done), "issue_s": round(issued_s, 2),
                      "all_acked_s": round(max(done), 2) if len(done) == len(ids) else None,
                      **(latency_figures(done) if done else {})},
        }

    # -- reconnect storm ----------------------------------------------------------------

    def _stored_since(self, since: float) -> set[tuple[int, int, int]]:
        rows = self._query("SELECT node_id, boot, seq FROM uplinks WHERE received_at >= ?",
                           (since,))
        return {(int(n), int(b), int(s)) for n, b, s in rows}

    def _births(self) -> dict[int, tuple[int, int, bool]]:
        rows = self._query("SELECT node_id, boot, birth_seq, online FROM twins")
        return {int(n): (int(b), int(s), bool(o)) for n, b, s, o in rows if b is not None}

    async def storm(self, outage_s: float, timeout: float) -> dict[str, Any]:
        # The will of each node's live connection: signed just before its birth.
        wills = {(n, boot, seq - 1) for n, (boot, seq, _) in
                 (await asyncio.to_thread(self._births)).items()}
        queued_before = sum([int(s["queued"]) for s in await asyncio.gather(
            *(w.request("status") for w in self.workers))])
        await self.loop_lag()
        await asyncio.gather(*(w.request("record") for w in self.workers))
        pushed: dict[int, list[tuple[int, int, int, float]]] = {}
        before, began = await self._cpu(), time.monotonic()
        dropped_at = time.time()
        await asyncio.gather(*(w.request("link", False) for w in self.workers))
        await asyncio.sleep(outage_s)
        await asyncio.gather(*(w.request("link", True) for w in self.workers))
        back = time.monotonic()
        offline_seen = await asyncio.to_thread(self._stored_since, dropped_at - 1)
        milestones: dict[str, float | None] = {"all_online_s": None, "consistent_s": None}
        missing: set[tuple[int, int, int]] = set()
        while time.monotonic() - back < timeout:
            await asyncio.sleep(POLL_S)
            now = time.time()
            for worker in self.workers:
                for node, records in (await worker.request("recorded")).items():
                    pushed.setdefault(node, []).extend(records)
            online = await self._online()
            if online == self.n and milestones["all_online_s"] is None:
                milestones["all_online_s"] = round(time.monotonic() - back, 1)
            stored = await asyncio.to_thread(self._stored_since, dropped_at - 1)
            missing = {(n, b, s) for n, records in pushed.items() for _, b, s, at in records
                       if at < now - SETTLE_GRACE_S and (n, b, s) not in stored}
            missing |= wills - stored
            births = await asyncio.to_thread(self._births)
            behind = [n for n, records in pushed.items()
                      if (last := max(((b, s) for k, b, s, _ in records
                                       if k == messages.BIRTH), default=None)) is not None
                      and births.get(n, (-1, -1, False))[:2] != last]
            if online == self.n and not missing and not behind:
                milestones["consistent_s"] = round(time.monotonic() - back, 1)
                break
        usage = await self.usage_since(before, began)
        usage["fleet_loop_lag"] = await self.loop_lag()
        statuses = await asyncio.gather(*(w.request("status") for w in self.workers))
        return {
            "nodes": self.n, "setup": self.setup, "outage_s": outage_s, **milestones,
            "wills_stored_while_down": len(wills & offline_seen),
            "messages_queued_since_drop": sum(len(r) for r in pushed.values()),
            "queued_before_drop": queued_before,
            "lost": len(missing), "node_queue_drops": sum(int(s["drops"]) for s in statuses),
            "node_boots": sum(int(s["boots"]) for s in statuses), "usage": usage,
        }
