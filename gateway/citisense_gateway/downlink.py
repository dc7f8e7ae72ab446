"""Downlink transport: commands and uplink-acks to a node over MQTT or its serial link.

MQTT publishing uses aiomqtt: a QoS 1 publish returns once the broker has the message,
which then waits in the node's persistent session. That is all a command needs, because
the command itself is tracked in the database and retried until acked or expired.
A node last heard on a serial link gets its downlink there.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Protocol

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from citisense_gateway.mqtt_client import CREDENTIALS_REFUSED, renewed_password
from citisense_gateway.store.base import IngestBatch
from citisense_protocols import topics

log = logging.getLogger("citisense.downlink")


def _credentials_refused(err: aiomqtt.MqttError) -> bool:
    if not isinstance(err, MqttConnectError):
        return False
    rc = err.rc
    return (rc.value if isinstance(rc, ReasonCode) else rc) in CREDENTIALS_REFUSED


class FrameSink(Protocol):
    name: str

    async def write_message(self, message: bytes) -> None: ...


class Downlinks:
    """Routes each node's downlink to where the node was last heard."""

    def __init__(self, host: str, port: int, *, client_id: str, username: str | None,
                 password: str | None, protocol: int = 5, tls: ssl.SSLContext | None = None,
                 publish_timeout: float = 10.0,
                 reread_password: Callable[[], str] | None = None) -> None:
        """`reread_password`: as for MqttIngestLink, read again when the broker refuses."""
        self._host, self._port, self._tls = host, port, tls
        self._client_id, self._username, self._password = client_id, username, password
        self._reread_password = reread_password
        self._protocol = (aiomqtt.ProtocolVersion.V5 if protocol == 5
                          else aiomqtt.ProtocolVersion.V311)
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._serial: dict[str, FrameSink] = {}
        self._routes: dict[int, str] = {}  # node -> source name it was last heard on
        self.publish_timeout = publish_timeout

    def add_serial(self, sink: FrameSink) -> None:
        self._serial[sink.name] = sink

    def route(self, node_id: int, via: str) -> None:
        self._routes[node_id] = via

    async def observe(self, batch: IngestBatch) -> None:
        for update in batch.twins.values():
            self._routes[update.node_id] = update.via

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with aiomqtt.Client(
                    self._host, self._port, identifier=self._client_id, username=self._username,
                    password=self._password, tls_context=self._tls, protocol=self._protocol,
                    timeout=self.publish_timeout,
                ) as client:
                    self._client = client
                    self._lost.clear()
                    self._ready.set()
                    delay = 0.5
                    log.info("downlink connected")
                    await self._lost.wait()  # a failed publish means the connection is gone
            except aiomqtt.MqttError as err:
                log.warning("downlink connection: %s", err)
                if _credentials_refused(err):
                    password = renewed_password(self._reread_password, self._password,
                                                "downlink")
                    if password is not None:
                        self._password = password
                        continue  # at once (the finally clause runs first)
            finally:
                self._ready.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def send(self, node_id: int, kind: int, message: bytes) -> None:
        sink = self._serial.get(self._routes.get(node_id, ""))
        if sink is not None:
            await sink.write_message(message)
            return
        await asyncio.wait_for(self._ready.wait(), self.publish_timeout)
        assert self._client is not None
        try:
            await self._client.publish(topics.topic(node_id, kind), message, qos=1)
        except aiomqtt.MqttError:
            self._ready.clear()
            self._lost.set()
            raise
