"""Ingest benchmark: the gateway against mosquitto_sub, draining the same queued stream.

A private Mosquitto queues N signed telemetry messages (QoS 1) for two persistent
sessions: the gateway's shared subscription and a mosquitto_sub client. Each then drains
its queue alone, timed from start to the last message: mosquitto_sub only receives and
acks; the gateway checks the topic, verifies the MAC, decodes and validates, de-duplicates,
commits to the store and acks after the commit. Prints one JSON line.

    python -m citisense_gateway.bench_ingest --messages 50000 [--store sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from citisense_gateway import acl, config
from citisense_gateway.mosquitto import PrivateMosquitto
from citisense_gateway.mqtt_client import MqttConnection, MqttSettings
from citisense_gateway.service import Gateway, tune_process
from citisense_gateway.simnode import SimNode
from citisense_gateway.store import open_store
from citisense_gateway.store.base import Node
from citisense_protocols import messages, topics

NODES = 100
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


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


def mosquitto_sub(port: int, password: str, count: int | None) -> list[str]:
    args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-c",
            "-i", "bench-mosquitto-sub", "-x", "3600", "-q", "1", "-u", "gateway", "-P",
            password, "-t", f"{topics.PREFIX}+/{topics.UP}/#"]
    return args + (["-C", str(count)] if count else ["-W", "1", "-C", "1"])


async def run(n: int, store_kind: str, workdir: Path) -> dict[str, object]:
    gw_password = acl.new_password()
    pub_password = acl.new_password()
    accounts = [acl.gateway_account("gateway", acl.hash_password(gw_password)),
                acl.Account("bench", acl.hash_password(pub_password), read=(),
                            write=(f"{topics.PREFIX}+/{topics.UP}/#",))]
    store_url = (f"sqlite:///{workdir / 'bench.db'}" if store_kind == "sqlite"
                 else f"{POSTGRES}?schema=bench_{os.getpid()}_{secrets.token_hex(3)}")
    with PrivateMosquitto(workdir / "broker", accounts) as broker:
        cfg = config.load(environ={}, overrides={
            "gateway.data_dir": str(workdir), "store.url": store_url,
            "mqtt.url": f"mqtt://127.0.0.1:{broker.port}", "mqtt.password": gw_password,
            "metrics.port": -1, "gateway.instance": f"bench{os.getpid()}"})
        store = open_store(store_url)
        await store.open()
        sims = [SimNode(1000 + i, secrets.token_bytes(32)) for i in range(NODES)]
        for sim in sims:
            await store.add_node(Node(sim.node_id, "lighting", sim.key, "$7$unused", zone="bench",
                                      created_at=time.time()), "bench")
        # Register both persistent sessions, so the broker queues the stream for both.
        gateway = Gateway(cfg)
        await gateway.start()
        await gateway.stop()
        subprocess.run(mosquitto_sub(broker.port, gw_password, None), capture_output=True,
                       check=False)
        stream = build_stream(n, sims)
        await publish(broker.port, "bench", pub_password, stream)

        t0 = time.perf_counter()
        subprocess.run(mosquitto_sub(broker.port, gw_password, n), stdout=subprocess.DEVNULL,
                       check=True)
        sub_rate = n / (time.perf_counter() - t0)

        t0, cpu0 = time.perf_counter(), time.process_time()
        gateway = Gateway(cfg)
        await gateway.start()
        while gateway.ingest.committed < n:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
        gw_rate = n / elapsed
        cpu_per_message = (time.process_time() - cpu0) / n
        await gateway.stop()
        stored = await store.count_uplinks()
        await store.close()
        if store_kind == "postgres":
            drop_schema(store_url.rsplit("=", 1)[1])
    return {
        "messages": n, "stored": stored, "store": store_kind,
        "gateway_msgs_per_s": round(gw_rate), "mosquitto_sub_msgs_per_s": round(sub_rate),
        "ratio": round(gw_rate / sub_rate, 3),
        "gateway_cpu_us_per_msg": round(cpu_per_message * 1e6, 1),
        "gateway_cpu_share": round(cpu_per_message * n / elapsed, 2),
        "batch_size": cfg.ingest.batch_size,
        "receive_maximum": cfg.mqtt.receive_maximum,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m citisense_gateway.bench_ingest")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    tune_process()
    with tempfile.TemporaryDirectory(prefix="citisense-bench-") as tmp:
        result = asyncio.run(run(args.messages, args.store, Path(tmp)))
    print(json.dumps(result))
    return 0 if result["stored"] == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
