"""A lean asyncio MQTT connection that acknowledges QoS 1 messages when told to.

Why not paho-mqtt or aiomqtt for ingest: aiomqtt acknowledges QoS 1 inside paho's callback,
before the application has stored anything, and has no manual acknowledgement. paho-mqtt
2.x has manual_ack, but it reads a packet with three recv() calls and one select() per
packet: measured on this machine it drains a queued stream at 6.8k msg/s (10.6k msg/s from a
hand-driven read loop) where mosquitto_sub drains 87k msg/s. This connection parses every
packet in a received chunk at once and sends the PUBACKs of a committed batch in one write,
so acknowledgement after commit costs one syscall per batch.

Used for ingest (subscribe, QoS 1, ack after commit) and by the node simulator and the
benchmark publisher. Commands are published with aiomqtt (see downlink.py), whose QoS 1
publish (wait for PUBACK) is all they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from citisense_gateway import mqtt_wire as wire

log = logging.getLogger("citisense.mqtt")


class MqttError(Exception):
    """The broker refused or dropped the connection; the message says what to check.
    `reason`: the CONNACK reason code when the broker refused the connection."""

    def __init__(self, message: str, reason: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def credentials_refused(self) -> bool:
        return self.reason in CREDENTIALS_REFUSED


CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorised",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x95: "packet too large",
    0x97: "quota exceeded",
}
# CONNACK reasons (MQTT 3.1.1 and 5) that say the user name or password is not accepted.
CREDENTIALS_REFUSED = frozenset({4, 5, 0x86, 0x87})


def renewed_password(reread: Callable[[], str] | None, used: str | None,
                     link: str) -> str | None:
    """After the broker refused the gateway's credentials: the password `reread` finds now
    (mqtt.password_file, rotated by `broker-config --new-gateway-password`) if it is not the
    one that was refused; None when there is nothing new to try (retry later as usual)."""
    if reread is None:
        return None
    try:
        password = reread()
    except (OSError, ValueError) as err:  # config.ConfigError is a ValueError
        log.warning("%s: the broker refused the gateway's password, and rereading it "
                    "failed: %s", link, err)
        return None
    if password == used:
        log.warning("%s: the broker refused the gateway's password; its password file holds "
                    "the same one", link)
        return None
    log.warning("%s: the broker refused the gateway's password; reread its password file, "
                "which holds a new one: retrying with it", link)
    return password


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    version: int = wire.MQTT_5
    keepalive: int = 30
    clean_start: bool = False
    session_expiry: int = 0  # seconds the broker keeps the session (MQTT 5)
    receive_maximum: int = 0  # unacknowledged QoS 1 messages the broker may send (MQTT 5)
    max_packet: int = 1 << 20
    tls: ssl.SSLContext | None = None
    connect_timeout: float = 10.0


PublishHandler = Callable[["MqttConnection", list[wire.Publish]], None]


class MqttConnection(asyncio.Protocol):
    """One connected session. on_publish(connection, packets) runs once per received chunk
    with its PUBLISH packets, in order."""

    # v3.1.1 brokers have no Receive Maximum: stop reading past this many unacknowledged.
    PAUSE_ABOVE = 4000

    def __init__(self, settings: MqttSettings, on_publish: PublishHandler) -> None:
        self.settings = settings
        self.on_publish = on_publish
        self._reader = wire.PacketReader(settings.version, settings.max_packet)
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[wire.Connack] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._waiting: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._next_id = 0
        self._send_quota: asyncio.Semaphore | None = None
        self.send_maximum = 65535
        self._unacked = 0
        self._paused = False
        self._received_at = loop.time()
        self._keepalive: asyncio.Task[None] | None = None
        self.session_present = False

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._received_at = asyncio.get_running_loop().time()
        reader = self._reader
        try:
            packets = reader.feed(data)
        except wire.MqttProtocolError as err:
            self._fail(MqttError(f"broker sent malformed MQTT: {err}"))
            return
        if not reader.others:  # PUBLISH packets only: nearly every read while ingesting
            self._unacked += reader.acknowledged
            if packets:
                self.on_publish(self, cast(list[wire.Publish], packets))
            self._pause_if_full()
            return
        publishes: list[wire.Publish] = []
        for packet in packets:
            if type(packet) is wire.Publish:
                publishes.append(packet)
                if packet.qos:
                    self._unacked += 1
            elif isinstance(packet, wire.Puback):
                self._resolve(packet.packet_id, (packet.reason,))
            elif isinstance(packet, wire.Suback):
                self._resolve(packet.packet_id, packet.reasons)
            elif isinstance(packet, wire.Connack):
                if not self._connack.done():
                    self._connack.set_result(packet)
            elif isinstance(packet, wire.Disconnect):
                self._fail(MqttError(f"broker disconnected us (reason 0x{packet.reason:02x})"))
        if publishes:
            self.on_publish(self, publishes)
        self._pause_if_full()

    def _pause_if_full(self) -> None:
        if self._unacked > self.PAUSE_ABOVE and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(MqttError(f"connection lost: {exc}" if exc else "connection closed"))

    # -- API ------------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls, settings: MqttSettings, on_publish: PublishHandler
    ) -> MqttConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: cls(settings, on_publish), settings.host, settings.port,
                    ssl=settings.tls,
                ),
                settings.connect_timeout,
            )
        except (OSError, TimeoutError) as err:
            raise MqttError(
                f"cannot reach MQTT broker {settings.host}:{settings.port}: {err}"
            ) from err
        await conn._handshake()
        return conn

    async def _handshake(self) -> None:
        s = self.settings
        self._write(wire.encode_connect(
            s.client_id, version=s.version, keepalive=s.keepalive, clean_start=s.clean_start,
            username=s.username, password=s.password, session_expiry=s.session_expiry,
            receive_maximum=s.receive_maximum, maximum_packet_size=s.max_packet,
        ))
        try:
            connack = await asyncio.wait_for(
                asyncio.shield(self._connack), s.connect_timeout
            )
        except TimeoutError as err:
            self.abort()
            raise MqttError(f"no CONNACK from {s.host}:{s.port}") from err
        except MqttError:
            self.abort()
            raise
        if connack.reason:
            self.abort()
            why = CONNACK_REASONS.get(connack.reason, f"reason 0x{connack.reason:02x}")
            raise MqttError(f"broker {s.host}:{s.port} refused client {s.client_id!r}: {why}",
                            connack.reason)
        self.session_present = connack.session_present
        quota = connack.properties.get(wire.PROP_RECEIVE_MAXIMUM, 65535)
        self.send_maximum = int(quota) if isinstance(quota, int) else 65535
        self._send_quota = asyncio.Semaphore(self.send_maximum)
        keepalive = connack.properties.get(wire.PROP_SERVER_KEEP_ALIVE, s.keepalive)
        if isinstance(keepalive, int) and keepalive > 0:
            self._keepalive = asyncio.create_task(self._ping(keepalive))

    async def subscribe(self, filters: list[tuple[str, int]]) -> tuple[int, ...]:
        """Subscribe; returns the granted QoS (or failure reason >= 0x80) per filter."""
        packet_id = self._allocate()
        waiter = self._expect(packet_id)
        self._write(wire.encode_subscribe(packet_id, filters, self.settings.version))
        return await self._await(waiter)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Publish; for QoS 1 wait for PUBACK and return its reason code (0 = accepted)."""
        if qos == 0:
            self._write(wire.encode_publish(topic, payload, 0, 0, self.settings.version, retain))
            return 0
        assert self._send_quota is not None
        async with self._send_quota:
            packet_id = self._allocate()
            waiter = self._expect(packet_id)
            self._write(wire.encode_publish(
                topic, payload, 1, packet_id, self.settings.version, retain
            ))
            return (await self._await(waiter))[0]

    async def publish_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        """Publish at QoS 1 in windows of the broker's Receive Maximum; PUBACK reasons.

        For bulk publishers (benchmark, tests): not to be mixed with concurrent publish().
        """
        window = max(1, min(self.send_maximum, 1000))
        reasons: list[int] = []
        for start in range(0, len(items), window):
            waiters = []
            packets = []
            for topic, payload in items[start : start + window]:
                packet_id = self._allocate()
                waiters.append(self._expect(packet_id))
                packets.append(wire.encode_publish(topic, payload, 1, packet_id,
                                                   self.settings.version))
            self._write(b"".join(packets))
            for waiter in waiters:
                reasons.append((await self._await(waiter))[0])
        return reasons

    def ack(self, packet_ids: list[int]) -> None:
        """Send PUBACK for received QoS 1 messages, in the order they were received."""
        if not packet_ids or self.closed.done():
            return
        self._write(wire.encode_pubacks(packet_ids))
        self._unacked -= len(packet_ids)
        if self._paused and self._unacked < self.PAUSE_ABOVE // 2 and self._transport:
            self._paused = False
            self._transport.resume_reading()

    async def disconnect(self) -> None:
        transport = self._transport
        if not self.closed.done() and transport is not None and not transport.is_closing():
            transport.write(wire.DISCONNECT_PACKET)
            transport.close()
        with contextlib.suppress(MqttError):
            await self.closed

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- internals --------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise MqttError("not connected")
        self._transport.write(data)

    def _allocate(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._waiting:
                return self._next_id
        raise MqttError("no free packet identifier")

    def _expect(self, packet_id: int) -> asyncio.Future[tuple[int, ...]]:
        waiter: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        self._waiting[packet_id] = waiter
        return waiter

    async def _await(self, waiter: asyncio.Future[tuple[int, ...]]) -> tuple[int, ...]:
        closed: asyncio.Future[Any] = self.closed
        await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            exc = self.closed.exception()
            raise MqttError(str(exc) if exc is not None else "connection closed") from exc
        return waiter.result()

    def _resolve(self, packet_id: int, value: tuple[int, ...]) -> None:
        waiter = self._waiting.pop(packet_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    def _fail(self, error: MqttError) -> None:
        if not self.closed.done():
            self.closed.set_exception(error)
            self.closed.exception()  # mark retrieved: a lost connection is not a bug
        if not self._connack.done():
            self._connack.set_exception(error)
            self._connack.exception()
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()
        self._waiting.clear()
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._transport is not None:
            self._transport.abort()

    async def _ping(self, keepalive: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(keepalive / 2)
            if loop.time() - self._received_at > keepalive * 1.5:
                self._fail(MqttError(f"broker silent for {keepalive * 1.5:.0f} s"))
                return
            with contextlib.suppress(MqttError):
                self._write(wire.PINGREQ_PACKET)
