"""Ingest benchmark: the gateway against mosquitto_sub, draining the same queued stream.

A private Mosquitto queues N signed telemetry messages (QoS 1) for three persistent
sessions: the gateway's shared subscription and two mosquitto_sub sessions (also MQTT 5,
QoS 1, same broker, same N). Each then drains its queue alone, timed from its start to
the last message: one mosquitto_sub before the gateway and one after (the machine's load
drifts), mosquitto_sub only receiving and acking; the gateway checks the topic, verifies
the MAC, decodes and validates, de-duplicates, commits to the store and acks after the
commit. Both timings include connecting. Prints what the figures mean, then one JSON line.

    python -m citisense_gateway.bench_ingest --messages 50000 [--store sqlite|postgres]
        [--workers W] [--instances K]

--workers W is the gateway's ingest.workers (default: one per core, at most 4): W processes,
each one member of the gateway's shared subscription (ingest_workers.py).

--instances K adds a second, separate measurement (under "scale_out"; the single-instance
figures stay at the top level): a new broker and stream, K gateway processes sharing the
stream through one MQTT 5 shared subscription, each with its own SQLite file (--store
sqlite) or all with one PostgreSQL schema (--store postgres), against mosquitto_sub again.
The K processes import and load everything before the clock starts, as the in-process
single instance has.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from citisense_gateway import acl, config
from citisense_gateway.ingest_workers import IngestWorkers
from citisense_gateway.mosquitto import PrivateMosquitto
from citisense_gateway.mqtt_client import MqttConnection, MqttSettings
from citisense_gateway.mqtt_ingest import uplink_filter
from citisense_gateway.service import Gateway, tune_process
from citisense_gateway.simnode import SimNode
from citisense_gateway.store import open_store
from citisense_gateway.store.base import Node, Store
from citisense_protocols import messages, topics

NODES = 100
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
SCALE_GROUP = "bench-scale"  # its own share group: no session of the single run joins it
SUB_SESSIONS = ("bench-mosquitto-sub-1", "bench-mosquitto-sub-2")
WORKERS = min(4, os.cpu_count() or 1)
EXPLAIN = """
gateway_msgs_per_s: a private Mosquitto holds N signed telemetry messages (QoS 1) queued for
  the gateway's persistent sessions; the gateway drains them: MQTT read, topic and MAC checked
  (COSE_Mac0, HMAC-SHA256 with each node's key), CBOR decoded and validated against the
  catalogue, de-duplicated on (node, boot, seq), committed to the store (SQLite: WAL,
  synchronous=FULL), PUBACK only after the commit. Timed from its ingest connections starting
  to connect to the last commit; ingest_workers processes share the stream (MQTT 5 shared
  subscription), gateway_cpu_us_per_msg adds up all of them.
mosquitto_sub_msgs_per_s: the same N messages, same broker, QoS 1, MQTT 5 persistent session,
  drained by mosquitto_sub (receive, PUBACK, print to /dev/null), its start included; the mean
  rate of one drain before the gateway's and one after (mosquitto_sub_before_after).
ratio: gateway / mosquitto_sub. Both pay the same broker; other programs on the machine
  (load_avg_1min_before_after) slow both.
"""


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def build_stream(n: int, nodes: list[SimNode]) -> list[tuple[str, bytes]]:
    """n telemetry messages, round-robin over the nodes, in each node's sequence order."""
    return [(topics.topic(node.node_id, messages.TELEMETRY), node.telemetry())
            for node in (nodes[i % len(nodes)] for i in range(n))]


async def publish(port: int, user: str, password: str, stream: list[tuple[str, bytes]]) -> None:
    conn = await MqttConnection.connect(
        MqttSettings("127.0.0.1", port, f"bench-pub-{os.getpid()}", username=user,
                     password=password, clean_start=True), lambda c, p: None)
    try:
        refused = [r for r in await conn.publish_many(stream) if r >= 0x80]
        if refused:
            raise RuntimeError(f"broker refused {len(refused)} messages")
    finally:
        await conn.disconnect()


def mosquitto_sub(port: int, password: str, count: int | None,
                  session: str = "bench-mosquitto-sub") -> list[str]:
    args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-c",
            "-i", session, "-x", "3600", "-q", "1", "-u", "gateway", "-P",
            password, "-t", f"{topics.PREFIX}+/{topics.UP}/#"]
    return args + (["-C", str(count)] if count else ["-W", "1", "-C", "1"])


def time_mosquitto_sub(port: int, password: str, n: int,
                       session: str = "bench-mosquitto-sub") -> float:
    """mosquitto_sub's rate draining its queue of n messages."""
    t0 = time.perf_counter()
    subprocess.run(mosquitto_sub(port, password, n, session), stdout=subprocess.DEVNULL,
                   check=True)
    return n / (time.perf_counter() - t0)


class Bench:
    """A private broker with the gateway and publisher accounts, and the fleet's keys."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.gw_password = acl.new_password()
        self.pub_password = acl.new_password()
        self.accounts = [acl.gateway_account("gateway", acl.hash_password(self.gw_password)),
                         acl.Account("bench", acl.hash_password(self.pub_password), read=(),
                                     write=(f"{topics.PREFIX}+/{topics.UP}/#",))]
        self.sims = [SimNode(1000 + i, secrets.token_bytes(32)) for i in range(NODES)]

    def store_url(self, kind: str, name: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{self.workdir / f'{name}.db'}"
        return f"{POSTGRES}?schema=bench_{os.getpid()}_{secrets.token_hex(3)}"

    async def provision(self, url: str) -> None:
        store = open_store(url)
        await store.open()
        try:
            for sim in self.sims:
                await store.add_node(Node(sim.node_id, "lighting", sim.key, "$7$unused",
                                          zone="bench", created_at=time.time()), "bench")
        finally:
            await store.close()

    def overrides(self, broker: PrivateMosquitto, url: str, instance: str,
                  share_group: str) -> dict[str, Any]:
        return {"gateway.data_dir": str(self.workdir), "store.url": url,
                "mqtt.url": f"mqtt://127.0.0.1:{broker.port}", "mqtt.password": self.gw_password,
                "mqtt.share_group": share_group, "metrics.port": -1, "api.port": -1,
                "gateway.instance": instance, "gateway.log_level": "warning"}

    async def queue_stream(self, broker: PrivateMosquitto, n: int,
                           sessions: tuple[str, ...] = ("bench-mosquitto-sub",)) -> None:
        """Register mosquitto_sub's sessions, then publish the stream."""
        for session in sessions:
            subprocess.run(mosquitto_sub(broker.port, self.gw_password, None, session),
                           capture_output=True, check=False)
        await publish(broker.port, "bench", self.pub_password, build_stream(n, self.sims))


async def run(n: int, store_kind: str, workdir: Path, workers: int) -> dict[str, object]:
    """One gateway: in this process, with `workers` ingest worker processes if above 1."""
    bench = Bench(workdir)
    store_url = bench.store_url(store_kind, "bench")
    with PrivateMosquitto(workdir / "broker", bench.accounts) as broker:
        cfg = config.load(environ={}, overrides=bench.overrides(
            broker, store_url, f"bench{os.getpid()}", "gateways") | {"ingest.workers": workers})
        await bench.provision(store_url)
        # Register the gateway's persistent sessions, so the broker queues the stream for it.
        gateway = Gateway(cfg)
        await gateway.start()
        await gateway.stop()
        # mosquitto_sub drains one copy of the stream before the gateway and one after it:
        # the load other programs put on the machine changes during a run.
        await bench.queue_stream(broker, n, SUB_SESSIONS)
        load_before = os.getloadavg()[0]
        sub_before = time_mosquitto_sub(broker.port, bench.gw_password, n, SUB_SESSIONS[0])

        cpu0 = time.process_time()
        gateway = Gateway(cfg)
        await gateway.start()
        gc.freeze()  # as a gateway process does after its start
        while gateway.committed < n:
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - gateway.receiving_since
        cpu = time.process_time() - cpu0
        await gateway.stop()
        if isinstance(gateway.mqtt, IngestWorkers):
            cpu += gateway.mqtt.cpu
        sub_after = time_mosquitto_sub(broker.port, bench.gw_password, n, SUB_SESSIONS[1])
        load_after = os.getloadavg()[0]
        async with Stored([store_url]) as stores:
            stored = await stores.count()
        if store_kind == "postgres":
            drop_schema(store_url.rsplit("=", 1)[1])
    sub_rate = 2 / (1 / sub_before + 1 / sub_after)  # n messages twice over their total time
    return _figures(n, stored, store_kind, n / elapsed, sub_rate, cpu, elapsed) | {
        "batch_size": cfg.ingest.batch_size, "receive_maximum": cfg.mqtt.receive_maximum,
        "ingest_workers": workers,
        "mosquitto_sub_before_after": [round(sub_before), round(sub_after)],
        "load_avg_1min_before_after": [round(load_before, 2), round(load_after, 2)]}


async def run_scaled(n: int, store_kind: str, workdir: Path, instances: int
                     ) -> dict[str, object]:
    """`instances` gateway processes on one shared subscription."""
    bench = Bench(workdir)
    if store_kind == "sqlite":
        urls = [bench.store_url("sqlite", f"scale-{i}") for i in range(instances)]
    else:
        urls = [bench.store_url("postgres", "scale")] * instances
    with PrivateMosquitto(workdir / "broker-scale", bench.accounts) as broker:
        for url in sorted(set(urls)):
            await bench.provision(url)
        names = [f"bench{os.getpid()}-{i}" for i in range(instances)]
        for name in names:  # register each instance's session in the share group
            cfg = config.load(environ={}, overrides=bench.overrides(broker, urls[0], name,
                                                                    SCALE_GROUP))
            conn = await MqttConnection.connect(MqttSettings(
                "127.0.0.1", broker.port, cfg.client_id, username=cfg.mqtt.username,
                password=bench.gw_password, session_expiry=cfg.mqtt.session_expiry),
                lambda c, p: None)
            await conn.subscribe([(uplink_filter(SCALE_GROUP), 1)])
            await conn.disconnect()
        await bench.queue_stream(broker, n)
        sub_rate = time_mosquitto_sub(broker.port, bench.gw_password, n)

        workers = [subprocess.Popen(
            [sys.executable, "-m", "citisense_gateway.bench_ingest", "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in names]
        for worker, url, name in zip(workers, urls, names, strict=True):
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(json.dumps(bench.overrides(broker, url, name, SCALE_GROUP)) + "\n")
            worker.stdin.flush()
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a benchmark gateway process did not start")
        async with Stored(urls) as stores:
            t0 = time.perf_counter()
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            while await stores.count() < n:
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - t0
            cpu = 0.0
            for worker in workers:
                assert worker.stdin is not None and worker.stdout is not None
                worker.stdin.close()  # stop
                cpu += float(json.loads(worker.stdout.readline())["cpu"])
                worker.wait(60)
            stored = await stores.count()
        if store_kind == "postgres":
            drop_schema(urls[0].rsplit("=", 1)[1])
    return {"instances": instances} | _figures(
        n, stored, store_kind, n / elapsed, sub_rate, cpu, elapsed) | {
        "store": "one SQLite file per instance" if store_kind == "sqlite"
        else "one PostgreSQL schema shared by all instances"}


async def worker() -> None:
    """One gateway of run_scaled: overrides, then 'go', then stdin closes; prints its CPU."""
    loop = asyncio.get_running_loop()
    overrides = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    cfg = config.load(environ={}, overrides=overrides)
    gateway = Gateway(cfg)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu0 = time.process_time()
    await gateway.start()
    await loop.run_in_executor(None, sys.stdin.read)
    cpu = time.process_time() - cpu0
    await gateway.stop()
    print(json.dumps({"cpu": cpu}), flush=True)


class Stored:
    """Rows stored so far in a run's stores, cheap enough to poll."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = sorted(set(urls))
        self._sqlite: list[sqlite3.Connection] = []
        self._stores: list[Store] = []

    async def __aenter__(self) -> Stored:
        for url in self.urls:
            if url.startswith("sqlite:"):
                self._sqlite.append(sqlite3.connect(url[len("sqlite://"):], timeout=10))
            else:
                store = open_store(url)
                await store.open()
                self._stores.append(store)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self._sqlite:
            conn.close()
        for store in self._stores:
            await store.close()

    async def count(self) -> int:
        # The gateways only insert during a run: the highest rowid is the row count, read
        # without scanning the table at every poll.
        total = sum(int(c.execute("SELECT COALESCE(MAX(rowid), 0) FROM uplinks").fetchone()[0])
                    for c in self._sqlite)
        return total + sum([await store.count_uplinks() for store in self._stores])


def _figures(n: int, stored: int, store_kind: str, rate: float, sub_rate: float, cpu: float,
             elapsed: float) -> dict[str, object]:
    return {
        "messages": n, "stored": stored, "store": store_kind,
        "gateway_msgs_per_s": round(rate), "mosquitto_sub_msgs_per_s": round(sub_rate),
        "ratio": round(rate / sub_rate, 3),
        "gateway_cpu_us_per_msg": round(cpu / n * 1e6, 1),
        "gateway_cpu_share": round(cpu / elapsed, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m citisense_gateway.bench_ingest")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--instances", type=int, default=1,
                        help="also measure this many gateway processes on a shared subscription")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="the gateway's ingest.workers (default: one per core, at most 4)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tune_process()
    if args.worker:
        asyncio.run(worker())
        return 0
    print(EXPLAIN.strip())
    with tempfile.TemporaryDirectory(prefix="citisense-bench-") as tmp:
        result = asyncio.run(run(args.messages, args.store, Path(tmp), args.workers))
        ok = result["stored"] == args.messages
        if args.instances > 1:
            scaled = asyncio.run(run_scaled(args.messages, args.store, Path(tmp),
                                            args.instances))
            result["scale_out"] = scaled
            ok = ok and scaled["stored"] == args.messages
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
