"""The MQTT side of ingest: one persistent QoS 1 session, reconnected forever.

The session survives us (clean start off, session expiry), so the broker keeps queuing
while the gateway restarts, and everything received but not acknowledged before a crash
is delivered again. With MQTT 5 the subscription is shared ($share/<group>/...): the
broker splits the stream between gateway instances. Receive Maximum bounds what is in
flight, hence the largest batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import operator
import random
from collections.abc import Callable

from citisense_gateway import mqtt_wire
from citisense_gateway.ingest import Ingest, Outcome
from citisense_gateway.metrics import Metrics
from citisense_gateway.mqtt_client import (
    MqttConnection,
    MqttError,
    MqttSettings,
    renewed_password,
)
from citisense_protocols import topics

log = logging.getLogger("citisense.mqtt")
_TOKEN = operator.itemgetter(0)  # Outcome.token


class _Session:
    """Ingest source for one connection: acks go to the connection that received."""

    name = "mqtt"

    def __init__(self, conn: MqttConnection) -> None:
        self.conn = conn

    def acknowledge(self, outcomes: list[Outcome]) -> None:
        # After a reconnect the broker redelivers these on the new connection instead.
        # Tokens are packet ids: 0 only for QoS 0, which takes no PUBACK.
        self.conn.ack(list(filter(None, map(_TOKEN, outcomes))))


def uplink_filter(share_group: str) -> str:
    if share_group:
        return topics.gateway_filter(share_group)
    return f"{topics.PREFIX}+/{topics.UP}/#"


class MqttIngestLink:
    def __init__(self, settings: MqttSettings, share_group: str, ingest: Ingest,
                 metrics: Metrics, on_connection: Callable[[bool], None] | None = None,
                 reread_password: Callable[[], str] | None = None) -> None:
        """`reread_password`: where the password comes from (mqtt.password_file), read again
        when the broker refuses it: a rotated password is used without a restart."""
        self.settings = settings
        self.reread_password = reread_password
        self.topic_filter = uplink_filter(share_group)
        self.ingest = ingest
        self.metrics = metrics
        self.connected = asyncio.Event()
        self.on_connection = on_connection or (lambda up: self.metrics.mqtt_connected.set(up))

    def _on_publish(self, conn: MqttConnection, packets: list[mqtt_wire.Publish]) -> None:
        session = self._sessions.get(conn)
        if session is None:
            session = self._sessions[conn] = _Session(conn)
        self.ingest.offer_many(session, packets)

    async def run(self) -> None:
        self._sessions: dict[MqttConnection, _Session] = {}
        delay = 0.5
        while True:
            try:
                conn = await MqttConnection.connect(self.settings, self._on_publish)
                granted = await conn.subscribe([(self.topic_filter, 1)])
                if granted[0] >= 0x80:
                    await conn.disconnect()
                    raise MqttError(
                        f"broker refused subscription {self.topic_filter} (reason "
                        f"0x{granted[0]:02x}): check the gateway account's ACL"
                    )
                log.info("ingest subscribed", extra={
                    "broker": f"{self.settings.host}:{self.settings.port}",
                    "filter": self.topic_filter, "session_present": conn.session_present})
                self.on_connection(True)
                self.connected.set()
                delay = 0.5
                try:
                    await conn.closed
                except MqttError as err:
                    log.warning("ingest connection lost: %s", err)
                finally:
                    self.connected.clear()
                    self.on_connection(False)
                    self._sessions.pop(conn, None)
            except MqttError as err:
                log.warning("ingest cannot connect: %s", err)
                if err.credentials_refused:
                    password = renewed_password(self.reread_password, self.settings.password,
                                                "ingest")
                    if password is not None:
                        self.settings = dataclasses.replace(self.settings, password=password)
                        continue  # at once: a new password, not the refused one again
            # Jitter: gateways restarted together do not reconnect in the same instant.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)
