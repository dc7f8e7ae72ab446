"""Ingest worker processes: MQTT ingest on several cores (ingest.workers > 1).

One Python process checks, decodes and stores a few tens of thousands of messages a
second, its event loop thread being the limit. With ingest.workers = N the gateway starts
N worker processes instead of its own MQTT ingest link. Each is one more member of the
gateway's MQTT 5 shared subscription, exactly as a separate gateway instance would be: its
own persistent session, its own Ingest pipeline and store connection, and it acknowledges
its messages only after its own commit. The store's key (node, boot, seq) keeps the stream
exactly-once across them. After each commit a worker sends the gateway process what the
rest of the gateway learns from ingest: the batch's counts (metrics), its twin updates and
command acks (observers: downlink routes, command outcomes, reconciliation, parking).

Worker 0 takes the gateway's own client id, so going from 1 to N workers keeps the
session and its queue. Workers exit at once when the gateway process dies (their stdin
closes): what they had not acknowledged is redelivered, as after a SIGKILL of the gateway.

Between gateway and worker: the gateway writes the worker's settings as one JSON line on
its stdin, then "go" once every worker has loaded, and "stop" to end it; the worker
writes length-prefixed pickles on its stdout. Both ends are this module, over a pipe
private to the two processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import operator
import os
import pickle
import ssl
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from citisense_gateway import config as config_module
from citisense_gateway import logs
from citisense_gateway.config import GatewayConfig, broker_address
from citisense_gateway.ingest import Ingest, Observer, Settled, count
from citisense_gateway.keyring import KeyRing
from citisense_gateway.metrics import Metrics
from citisense_gateway.mqtt_client import MqttSettings
from citisense_gateway.mqtt_ingest import MqttIngestLink
from citisense_gateway.retention import RetentionPolicy
from citisense_gateway.store import open_store
from citisense_gateway.store.base import CommandAck, IngestBatch, TwinUpdate

log = logging.getLogger("citisense.ingest.workers")
_LENGTH = struct.Struct(">I")
_TWIN_FIELDS = operator.attrgetter(*[f.name for f in fields(TwinUpdate)])  # in __init__ order
KEYRING_REFRESH_S = 15.0  # as the gateway's housekeeping: keys added or changed meanwhile
LOAD_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def client_id(config: GatewayConfig, index: int) -> str:
    return config.client_id if index == 0 else f"{config.client_id}-{index}"


def worker_settings(config: GatewayConfig, password: str) -> dict[str, Any]:
    """Every setting of `config` by dotted name, as a worker loads them; the broker password
    resolved (a worker reads mqtt.password_file, if set, only to reread a refused password),
    and nothing a worker must not serve."""
    values: dict[str, Any] = {}
    for section in fields(config):
        part = getattr(config, section.name)
        for f in fields(part):
            value = getattr(part, f.name)
            values[f"{section.name}.{f.name}"] = list(value) if isinstance(value, tuple) else value
    return values | {"mqtt.password": password, "serial.ports": [],
                     "metrics.port": -1, "api.port": -1}


class IngestWorkers:
    """The gateway's side: starts the workers, relays what they report, restarts one that
    dies. Runs as the gateway's MQTT receiver (as MqttIngestLink does with one process)."""

    def __init__(self, config: GatewayConfig, password: str, metrics: Metrics,
                 observers: Sequence[Observer]) -> None:
        self.count = config.ingest.workers
        self.settings = json.dumps(worker_settings(config, password)).encode() + b"\n"
        self.metrics = metrics
        self.observers = list(observers)
        self.connected = asyncio.Event()  # every worker is connected and subscribed
        self.committed = 0  # messages settled by the workers, as Ingest.committed
        self.cpu = 0.0  # CPU seconds the stopped workers spent from "go" to their end
        self.receiving_since: float | None = None  # perf_counter when they were told to go
        self.processes: dict[int, asyncio.subprocess.Process] = {}  # running, by index
        self._up = [False] * self.count
        self._loaded: set[int] = set()
        self._all_loaded = asyncio.Event()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._supervise(i), name=f"ingest-worker-{i}")
                 for i in range(self.count)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, index: int) -> None:
        delay = 0.5
        while True:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__, str(index),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            assert proc.stdin is not None
            self.processes[index] = proc
            proc.stdin.write(self.settings)
            relay = asyncio.create_task(self._relay(index, proc))
            try:
                await asyncio.shield(relay)
            except asyncio.CancelledError:
                await asyncio.shield(self._stop(index, proc, relay))
                raise
            finally:
                self._set_up(index, False)
            log.error("ingest worker %d exited with status %s; restarting it", index,
                      await proc.wait())
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _stop(self, index: int, proc: asyncio.subprocess.Process,
                    relay: asyncio.Task[None]) -> None:
        """Let the worker commit and acknowledge what it holds, then end."""
        assert proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        try:
            await asyncio.wait_for(relay, STOP_TIMEOUT_S)
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("ingest worker %d did not stop; killing it (the broker redelivers what "
                      "it had not acknowledged)", index)
            relay.cancel()
            proc.kill()
            await proc.wait()

    async def _relay(self, index: int, proc: asyncio.subprocess.Process) -> None:
        """What the worker reports, until its stdout closes."""
        assert proc.stdout is not None and proc.stdin is not None
        while True:
            try:
                size = _LENGTH.unpack(await proc.stdout.readexactly(_LENGTH.size))[0]
                report = pickle.loads(await proc.stdout.readexactly(size))
            except asyncio.IncompleteReadError:
                return
            what = report[0]
            if what == "batch":  # see _Reporter.observe
                await self._settled(Settled(*report[1]),
                                    [TwinUpdate(*fields) for fields in report[2]], report[3])
            elif what == "up":
                self._set_up(index, report[1])
            elif what == "loaded":
                await self._go(index, proc.stdin)
            elif what == "stopped":
                self.cpu += report[1]

    async def _go(self, index: int, stdin: asyncio.StreamWriter) -> None:
        """Let the workers connect together, once all have loaded (a restarted one at once)."""
        self._loaded.add(index)
        if len(self._loaded) == self.count:
            self._all_loaded.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_loaded.wait(), LOAD_TIMEOUT_S)
        if self.receiving_since is None:
            self.receiving_since = time.perf_counter()
        stdin.write(b"go\n")

    def _set_up(self, index: int, up: bool) -> None:
        self._up[index] = up
        if all(self._up):
            self.connected.set()
        else:
            self.connected.clear()
        self.metrics.mqtt_connected.set(1 if all(self._up) else 0)

    async def _settled(self, settled: Settled, twins: list[TwinUpdate],
                       acks: list[CommandAck]) -> None:
        count(self.metrics, settled)
        self.committed += settled.size
        batch = IngestBatch(twins={t.node_id: t for t in twins}, acks=acks)
        for observer in self.observers:
            try:
                await observer(batch)
            except Exception:
                log.exception("ingest observer failed")


# -- the worker process ----------------------------------------------------------------------


class _Reporter:
    """Length-prefixed pickles to the gateway process on a private pipe."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self._settled: list[Settled] = []

    def send(self, *report: object) -> None:
        data = pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.write(_LENGTH.pack(len(data)) + data)

    def settled(self, settled: Settled) -> None:  # Ingest calls this just before observers
        self._settled.append(settled)

    async def observe(self, batch: IngestBatch) -> None:
        # Plain tuples: a batch's twins (one per node it saw) pickle five times faster so.
        self.send("batch", tuple(self._settled.pop(0)),
                  list(map(_TWIN_FIELDS, batch.twins.values())), batch.acks)


async def _worker(index: int) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    # Reports own the real stdout; anything printed by mistake goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    transport, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, out)
    reporter = _Reporter(transport)

    line = await commands.readline()
    if not line:
        return
    cfg = config_module.load(environ={}, overrides=json.loads(line))
    logs.setup(cfg.gateway.log_level, cfg.gateway.log_format,
               f"{cfg.gateway.instance}/ingest-{index}")
    store = open_store(cfg.store_url, quarantine_limit=cfg.store.quarantine_limit,
                       sqlite_synchronous=cfg.store.sqlite_synchronous)
    await store.open()
    keyring = KeyRing(store)
    await keyring.refresh()
    ingest = Ingest(store, keyring, Metrics(), batch_size=cfg.ingest.batch_size,
                    observers=[reporter.observe], on_settled=reporter.settled,
                    retention=RetentionPolicy.of(cfg.retention))
    host, port, use_tls = broker_address(cfg)
    tls = ssl.create_default_context(cafile=cfg.mqtt.ca_file or None) if use_tls else None
    settings = MqttSettings(
        host, port, client_id(cfg, index), username=cfg.mqtt.username,
        password=cfg.mqtt.password, version=cfg.mqtt.protocol, keepalive=cfg.mqtt.keepalive,
        clean_start=False, session_expiry=cfg.mqtt.session_expiry,
        receive_maximum=cfg.mqtt.receive_maximum, tls=tls)
    link = MqttIngestLink(settings, cfg.mqtt.share_group, ingest, ingest.metrics,
                          on_connection=lambda up: reporter.send("up", up),
                          reread_password=cfg.mqtt_password if cfg.mqtt.password_file else None)
    gc.freeze()  # what loading made lives on: keep it out of every later collection
    reporter.send("loaded")
    if (await commands.readline()).strip() != b"go":
        os._exit(0)  # the gateway is gone
    cpu0 = time.process_time()
    consumer = asyncio.create_task(ingest.run())
    receiver = asyncio.create_task(link.run())
    refresher = asyncio.create_task(_refresh(keyring))
    line = await commands.readline()
    if line.strip() != b"stop":
        # The gateway process died: end as it did. The broker redelivers what this worker
        # had not acknowledged; its open batch never committed.
        os._exit(0)
    receiver.cancel()
    await asyncio.gather(receiver, return_exceptions=True)
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    try:
        await asyncio.wait_for(ingest.flush(), STOP_TIMEOUT_S)
    except Exception:
        log.exception("could not commit the last batch; the broker will redeliver it")
    refresher.cancel()
    await store.close()
    reporter.send("stopped", time.process_time() - cpu0)
    transport.close()


async def _refresh(keyring: KeyRing) -> None:
    while True:
        await asyncio.sleep(KEYRING_REFRESH_S)
        try:
            await keyring.refresh()
        except Exception:
            log.exception("key refresh failed")


def main(argv: list[str]) -> int:
    from citisense_gateway.service import tune_process

    tune_process()
    asyncio.run(_worker(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
