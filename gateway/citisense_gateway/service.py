"""The gateway service: wires store, broker link, ingest, commands and housekeeping.

Start order: store, metrics, (embedded broker), consumers, then the links that receive.
Stop order is the reverse: links stop receiving, ingest commits what it holds (and acks
it), then the rest. A SIGKILL at any point loses nothing: unacknowledged messages are
redelivered by the broker to the persistent session.

With ingest.workers > 1 the MQTT ingest runs in worker processes (ingest_workers.py) that
report their commits here; serial links and everything else stay in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import sys
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from citisense_gateway import acl, retention, twin
from citisense_gateway.commands import CommandPolicy, Commands
from citisense_gateway.config import GatewayConfig, broker_address
from citisense_gateway.downlink import Downlinks
from citisense_gateway.ingest import Ingest
from citisense_gateway.ingest_workers import IngestWorkers
from citisense_gateway.keyring import KeyRing
from citisense_gateway.metrics import Metrics
from citisense_gateway.mqtt_client import MqttSettings
from citisense_gateway.mqtt_ingest import MqttIngestLink
from citisense_gateway.parking import Parking
from citisense_gateway.reconcile import Reconciler
from citisense_gateway.serial_link import SerialLink
from citisense_gateway.store import open_store
from citisense_gateway.store.base import Store

if TYPE_CHECKING:
    from citisense_gateway import embedded_broker

log = logging.getLogger("citisense.gateway")
HOUSEKEEPING_S = 15.0
GC_YOUNG = 20_000  # allocations between two collections of the youngest generation
SWEEP_S = 300.0


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.metrics_port: int | None = None
        self.api_port: int | None = None
        self._api_ready = asyncio.Event()
        self.store: Store | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._receivers: list[asyncio.Task[Any]] = []
        self._broker: embedded_broker.EmbeddedBroker | None = None
        self._book: embedded_broker.AccountBook | None = None
        self._gateway_hash = ""
        self.ready = asyncio.Event()
        self.receiving_since = 0.0  # perf_counter when MQTT ingest began connecting

    async def start(self) -> None:
        c = self.config
        store = open_store(c.store_url, quarantine_limit=c.store.quarantine_limit,
                           sqlite_synchronous=c.store.sqlite_synchronous)
        await store.open()
        self.store = store
        keyring = KeyRing(store)
        await keyring.refresh()
        self.keyring = keyring

        tls: ssl.SSLContext | None = None
        # A password from mqtt.password_file is read again when the broker refuses it: after
        # `broker-config --new-gateway-password` and a broker reload, no restart is needed.
        reread = c.mqtt_password if c.mqtt.url and c.mqtt.password_file else None
        if c.mqtt.url:
            host, port, use_tls = broker_address(c)
            if use_tls:
                tls = ssl.create_default_context(cafile=c.mqtt.ca_file or None)
            username, password = c.mqtt.username, c.mqtt_password()
            version, share_group = c.mqtt.protocol, c.mqtt.share_group
        else:
            # The gateway's account on its own broker: a random password held in memory.
            host, port = c.embedded_broker.host, c.embedded_broker.port
            username, password = c.mqtt.username, acl.new_password()
            self._gateway_hash = acl.hash_password(password)
            from citisense_gateway import embedded_broker as embedded  # amqtt: only when used

            self._book = embedded.AccountBook()
            await self._refresh_accounts()
            self._broker = embedded.EmbeddedBroker(host, port, self._book)
            await self._broker.start()
            version, share_group = 4, ""

        self.downlinks = Downlinks(host, port, client_id=f"{c.client_id}-down", username=username,
                                   password=password, protocol=version, tls=tls,
                                   reread_password=reread)
        cc = c.commands
        self.commands = Commands(store, keyring, self.downlinks, self.metrics, CommandPolicy(
            ttl=cc.ttl, retry_base=cc.retry_base, retry_cap=cc.retry_cap,
            max_attempts=cc.max_attempts))
        self.reconciler = Reconciler(store, self.commands)
        self.parking = Parking(store)
        for t in await store.twins():
            if t.via:
                self.downlinks.route(t.node_id, t.via)
        observers = [self.downlinks.observe, self.commands.observe, self.reconciler.observe,
                     self.parking.observe]
        self.ingest = Ingest(
            store, keyring, self.metrics, batch_size=c.ingest.batch_size, observers=observers,
            retention=retention.RetentionPolicy.of(c.retention),
        )
        self.mqtt: MqttIngestLink | IngestWorkers
        if c.ingest.workers > 1:  # config.check: an external MQTT 5 broker, a share group
            self.mqtt = IngestWorkers(c, password, self.metrics, observers)
        else:
            settings = MqttSettings(
                host, port, c.client_id, username=username, password=password,
                version=version, keepalive=c.mqtt.keepalive, clean_start=False,
                session_expiry=c.mqtt.session_expiry, receive_maximum=c.mqtt.receive_maximum,
                tls=tls,
            )
            self.mqtt = MqttIngestLink(settings, share_group, self.ingest, self.metrics,
                                       reread_password=reread)
        self.serial = [SerialLink(p, c.serial.baudrate, self.ingest, keyring, store, self.metrics)
                       for p in c.serial.ports]
        for link in self.serial:
            self.downlinks.add_serial(link)

        if c.metrics.port >= 0:
            self.metrics_port = self.metrics.serve(c.metrics.host, c.metrics.port)
        self._tasks = [self._spawn(self.ingest.run(), "ingest"),
                       self._spawn(self.downlinks.run(), "downlink"),
                       self._spawn(self.commands.run(), "commands"),
                       self._spawn(self._housekeeping(), "housekeeping")]
        if c.api.port >= 0:
            api = self._spawn(self._serve_api(), "api")
            self._tasks.append(api)
            ready = asyncio.ensure_future(self._api_ready.wait())
            await asyncio.wait({ready, api}, return_when=asyncio.FIRST_COMPLETED)
            if api.done():  # it could not bind: say why instead of waiting forever
                ready.cancel()
                api.result()
        self.receiving_since = time.perf_counter()
        self._receivers = [self._spawn(self.mqtt.run(), "mqtt")]
        self._receivers += [self._spawn(s.run(), s.name) for s in self.serial]
        await self._wait_connected()
        log.info("gateway ready", extra={"store": _redact(c.store_url),
                                         "broker": f"{host}:{port}",
                                         "embedded_broker": self._broker is not None,
                                         "metrics_port": self.metrics_port,
                                         "api_port": self.api_port,
                                         "serial": list(c.serial.ports)})
        self.ready.set()

    async def _serve_api(self) -> None:
        from citisense_gateway.api import create_app, serve  # FastAPI: only when served

        assert self.store is not None
        c = self.config
        app = create_app(self.store, self.commands, self.reconciler, self.parking,
                         stale_after=c.liveness.stale_after, session_ttl=c.api.session_ttl,
                         registry_changed=self._registry_changed)

        def ready(port: int) -> None:
            self.api_port = port
            self._api_ready.set()

        await serve(app, c.api.host, c.api.port, ready=ready)

    async def _wait_connected(self) -> None:
        # Worker processes import and load first: give them longer.
        timeout = 10 if isinstance(self.mqtt, MqttIngestLink) else 30
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.mqtt.connected.wait(), timeout)
        if isinstance(self.mqtt, IngestWorkers) and self.mqtt.receiving_since is not None:
            self.receiving_since = self.mqtt.receiving_since

    @property
    def committed(self) -> int:
        """Uplinks settled (stored, duplicate or quarantined) since start, in every process."""
        workers = self.mqtt.committed if isinstance(self.mqtt, IngestWorkers) else 0
        return self.ingest.committed + workers

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._crashed)
        return task

    def _crashed(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s stopped", task.get_name(), exc_info=task.exception())

    async def _registry_changed(self) -> None:
        """A node was added or removed through the API: keys and broker accounts follow now."""
        await self.keyring.refresh()
        if self._book is not None:
            await self._refresh_accounts()

    async def _refresh_accounts(self) -> None:
        assert self.store is not None and self._book is not None
        accounts = [acl.gateway_account(self.config.mqtt.username, self._gateway_hash)]
        accounts += [acl.node_account(n.node_id, n.broker_hash) for n in await self.store.nodes()]
        self._book.replace(accounts)

    async def _housekeeping(self) -> None:
        assert self.store is not None
        last_sweep = last_retention = time.time()
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                now = time.time()
                await self.keyring.refresh()
                if self._book is not None:
                    await self._refresh_accounts()
                await self.update_liveness(now)
                if now - last_sweep >= SWEEP_S:
                    last_sweep = now
                    await self.reconciler.sweep()
                if now - last_retention >= self.config.retention.interval_s:
                    last_retention = now
                    await retention.run_once(
                        self.store, retention.RetentionPolicy.of(self.config.retention), now)
            except Exception:
                log.exception("housekeeping failed")

    async def update_liveness(self, now: float) -> dict[str, int]:
        assert self.store is not None
        counts = dict.fromkeys(twin.STATUSES, 0)
        for t in await self.store.twins():
            counts[twin.liveness(t, now, self.config.liveness.stale_after)] += 1
        for status, n in counts.items():
            self.metrics.nodes.labels(status).set(n)
        return counts

    async def stop(self) -> None:
        for task in self._receivers:
            task.cancel()
        await asyncio.gather(*self._receivers, return_exceptions=True)
        consumer = self._tasks[0]  # ingest.run: stop it, then commit what it still holds
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        try:
            await asyncio.wait_for(self.ingest.flush(), 30)
        except Exception:
            log.exception("could not commit the last batch; the broker will redeliver it")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._broker is not None:
            await self._broker.stop()
        if self.store is not None:
            await self.store.close()
        self.metrics.stop()
        log.info("gateway stopped")

    async def run_until_signalled(self) -> None:
        tune_process()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        gc.freeze()  # what start loaded lives on: keep it out of every later collection
        try:
            await stop.wait()
        finally:
            await self.stop()


def tune_process() -> None:
    """Process-wide settings for a gateway process (not for a library user's process).

    The SQLite worker thread gives up the GIL around every row it steps and must get it
    back while the event loop thread decodes the next batch; with CPython's default 5 ms
    switch interval it waits that long each time. 0.5 ms doubled ingest throughput here.

    Each message makes a few container objects (its PUBLISH, outcome, row) that live until
    its batch commits: with the default threshold (700) the young generation is collected
    every ~150 messages and traverses what a batch holds each time.
    """
    sys.setswitchinterval(0.0005)
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def _redact(url: str) -> str:
    """A store URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url
