"""Exactly-once under crashes: the gateway (a subprocess) is killed with SIGKILL five times
while a QoS 1 stream of 50,000 messages flows; every message ends up stored exactly once.
With ingest.workers = 2 its two worker processes go down with it.

CITISENSE_KILL_MESSAGES changes the stream length (default 50,000).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gwkit import Fleet, opened, provision, start_mosquitto

from citisense_gateway import acl, bench_ingest
from citisense_gateway.mosquitto import free_port
from citisense_gateway.mqtt_client import MqttConnection, MqttSettings
from citisense_protocols import topics

pytestmark = pytest.mark.broker

MESSAGES = int(os.environ.get("CITISENSE_KILL_MESSAGES", "50000"))
KILLS = 5
NODES = 100


class GatewayProcess:
    def __init__(self, config_path: Path, metrics_port: int, log_dir: Path) -> None:
        self.config_path = config_path
        self.metrics_port = metrics_port
        self.log_dir = log_dir
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.runs += 1
        log = (self.log_dir / f"gateway-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "citisense_gateway", "run", "--config",
             str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                text = urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).read().decode()
                if "citisense_mqtt_connected 1.0" in text:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"gateway not ready: {self.log()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no shutdown code runs
        self.process.wait()

    def stop(self) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(30)

    def log(self) -> str:
        return (self.log_dir / f"gateway-{self.runs}.log").read_text()[-3000:]


def stored(db: Path) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM uplinks").fetchone()[0])


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_five_times_during_a_stream_loses_and_duplicates_nothing(tmp_path: Path,
                                                                        workers: int) -> None:
    db = tmp_path / "gateway.db"
    store_url = f"sqlite:///{db}"
    publisher_password = acl.new_password()
    publisher = acl.Account("publisher", acl.hash_password(publisher_password), read=(),
                            write=(f"{topics.PREFIX}+/{topics.UP}/#",))

    async def setup() -> list[tuple[str, bytes]]:
        async with opened(store_url) as store:
            fleet = await provision(store, [(5000 + i, "lighting") for i in range(NODES)])
        return bench_ingest.build_stream(MESSAGES, list(fleet.nodes.values()))

    stream = asyncio.run(setup())
    broker = start_mosquitto(tmp_path / "mq", provision_none(), [publisher])
    assert broker.mosquitto is not None
    (tmp_path / "gateway.password").write_text(broker.gateway_password + "\n")
    metrics_port = free_port()
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(f"""
[gateway]
instance = "kill-{secrets.token_hex(3)}"
data_dir = "{tmp_path}"
log_level = "info"
[store]
url = "{store_url}"
[mqtt]
url = "mqtt://127.0.0.1:{broker.port}"
password_file = "{tmp_path / 'gateway.password'}"
[metrics]
port = {metrics_port}
[ingest]
workers = {workers}
[api]
port = -1
""")
    gateway = GatewayProcess(config_path, metrics_port, tmp_path)
    try:
        gateway.start()

        async def run() -> None:
            conn = await MqttConnection.connect(MqttSettings(
                "127.0.0.1", broker.port, "publisher", username="publisher",
                password=publisher_password, clean_start=True), lambda c, p: None)
            publishing = asyncio.create_task(conn.publish_many(stream))
            for k in range(1, KILLS + 1):
                threshold = MESSAGES * k // (KILLS + 1)
                while stored(db) < threshold:
                    await asyncio.sleep(0.02)
                await asyncio.to_thread(gateway.kill)
                await asyncio.to_thread(gateway.start)
            reasons = await publishing
            assert all(r == 0 for r in reasons)
            await conn.disconnect()
            deadline = time.monotonic() + 120
            while stored(db) < MESSAGES and time.monotonic() < deadline:
                await asyncio.sleep(0.1)

        asyncio.run(run())
        assert gateway.runs == KILLS + 1
        with sqlite3.connect(db) as conn:
            total, distinct = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT node_id * 4294967296 + seq) FROM uplinks"
            ).fetchone()
            per_node = conn.execute(
                "SELECT node_id, COUNT(*), MIN(seq), MAX(seq) FROM uplinks GROUP BY node_id"
            ).fetchall()
            quarantined = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        assert (total, distinct) == (MESSAGES, MESSAGES)
        assert len(per_node) == NODES
        assert all(n == hi - lo + 1 == MESSAGES // NODES for _, n, lo, hi in per_node)
        assert quarantined == 0  # redeliveries after a crash are duplicates, never "replays"
        assert gateway.stop() == 0
    finally:
        if gateway.process is not None and gateway.process.poll() is None:
            gateway.kill()
        broker.mosquitto.stop()


def provision_none() -> Fleet:
    """No node accounts are needed: the publisher account speaks for every node."""
    return Fleet()
