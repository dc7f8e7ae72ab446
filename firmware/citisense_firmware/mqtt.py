"""A small asyncio MQTT 3.1.1 client for the node, written from the OASIS MQTT 3.1.1 spec.

What the node needs and nothing more: CONNECT with user name, password, optional
persistent session and a last will (QoS 1, not retained); PUBLISH at QoS 0 and 1;
SUBSCRIBE at QoS 1; keepalive PINGREQ; reconnect with exponential backoff and jitter.

Delivery: a QoS 1 publish waits for a slot in a bounded in-flight window and stays
there until its PUBACK. After a reconnect every unacknowledged one is sent again, in
order, with DUP set (MQTT 3.1.1 §4.4). The broker acknowledges QoS 1 messages in the
order it received them (§4.6), so a caller that publishes a batch and awaits drain()
knows the whole batch is delivered. An incoming QoS 1 PUBLISH is acknowledged only
after the message handler returns, so a message the node did not process is redelivered.

Runs on MicroPython (asyncio.open_connection, StreamReader.readexactly,
StreamWriter.write + drain) and CPython alike. RAM: the in-flight window holds at most
`max_inflight` messages; nothing else is buffered.
"""

import asyncio
import random

from citisense_firmware.compat import const, ticks_diff, ticks_ms

CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBSCRIBE = const(0x82)
SUBACK = const(0x90)
PINGREQ = const(0xC0)
PINGRESP = const(0xD0)
DISCONNECT = const(0xE0)

# Incoming packets above this are skipped, not buffered: the largest downlink is a
# 508-byte message on a topic under 64 bytes.
_MAX_PACKET = const(1024)

REFUSALS = {
    1: "unacceptable protocol version (the broker does not speak MQTT 3.1.1)",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password: check the node's user name and password",
    # Mosquitto also answers 5 to a wrong password.
    5: "not authorised: check the node's user name and password and the broker's ACL",
}


class MQTTError(Exception):
    """The broker broke the protocol, or the connection failed."""


class ConnectRefused(MQTTError):
    """The broker answered CONNECT with a refusal; `code` is the CONNACK return code."""

    def __init__(self, code: int) -> None:
        super().__init__(
            f"MQTT connection refused (code {code}): {REFUSALS.get(code, 'unknown')}"
        )
        self.code = code


# Reconnect delays: exponential backoff with full jitter, pure given a random source. The
# ceiling doubles per failed attempt from `base_ms` up to `cap_ms`, and each delay is drawn
# uniformly from [0, ceiling] ("full jitter"): nodes that lost the broker together spread
# their first retries over `base_ms` and later ones over ever wider windows, so a district
# does not reconnect in the same second.
class Backoff:
    """`rand_below(n)` returns an integer in [0, n): pass random.randrange, or a stub."""

    def __init__(self, rand_below, base_ms: int = 2000, cap_ms: int = 300_000) -> None:
        if not 0 < base_ms <= cap_ms:
            raise ValueError("need 0 < base_ms <= cap_ms")
        self.rand_below = rand_below
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.attempt = 0

    def ceiling_ms(self) -> int:
        ceiling = self.base_ms
        for _ in range(self.attempt):  # stops at the cap: no huge shifts
            if ceiling >= self.cap_ms:
                break
            ceiling *= 2
        return min(ceiling, self.cap_ms)

    def next_ms(self) -> int:
        """Delay before the next attempt; each call counts one more failure."""
        ceiling = self.ceiling_ms()
        self.attempt += 1
        return self.rand_below(ceiling + 1)

    def reset(self) -> None:
        """After a successful connection: start again from `base_ms`."""
        self.attempt = 0


def _length(n: int) -> bytes:
    """The variable-length Remaining Length field (§2.2.3)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _to_bytes(value) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def connect_packet(
    client_id: bytes,
    keepalive: int,
    clean_session: bool,
    user: bytes | None = None,
    password: bytes | None = None,
    will: tuple | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if will is not None:
        flags |= 0x04 | 0x08  # will flag, will QoS 1, will retain 0
        payload += _string(_to_bytes(will[0])) + _string(_to_bytes(will[1]))
    if user is not None:
        flags |= 0x80
        payload += _string(user)
    if password is not None:
        flags |= 0x40
        payload += _string(password)
    variable = b"\x00\x04MQTT\x04" + bytes([flags]) + keepalive.to_bytes(2, "big")
    return bytes([CONNECT]) + _length(len(variable) + len(payload)) + variable + payload


def publish_header(topic: bytes, size: int, qos: int, retain: bool, pid: int, dup: bool) -> bytes:
    """Fixed and variable header of a PUBLISH whose payload has `size` bytes."""
    first = PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    variable = _string(topic) + (pid.to_bytes(2, "big") if qos else b"")
    return bytes([first]) + _length(len(variable) + size) + variable


class MQTTClient:
    """One connection to one broker, kept up by run().

    on_message: async callable (topic: str, payload: bytes), called for every PUBLISH
    received; the QoS 1 PUBACK goes out after it returns (or raises: a message the
    handler cannot take is not redelivered forever).
    will: (topic, payload), or a callable returning it at each connect (a signed will
    carries a fresh counter each time).
    on_connect: called (plain function) after each accepted CONNECT.
    """

    def __init__(
        self,
        client_id,
        host: str,
        port: int = 1883,
        user=None,
        password=None,
        keepalive: int = 60,
        clean_session: bool = False,
        will=None,
        on_message=None,
        on_connect=None,
        max_inflight: int = 8,
        backoff=None,
        timeout: int = 10,
    ) -> None:
        self._client_id = _to_bytes(client_id)
        self.host = host
        self.port = port
        self._user = None if user is None else _to_bytes(user)
        self._password = None if password is None else _to_bytes(password)
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.will = will
        self.on_message = on_message
        self.on_connect = on_connect
        self._max_inflight = max_inflight
        # Seeded from the ESP32 hardware RNG: nodes of a district draw different delays.
        self.backoff = backoff if backoff is not None else Backoff(random.randrange)
        self.timeout = timeout
        self.connected = False
        self.last_error = None  # the exception that ended the last connection attempt
        self.session_present = False
        self.connects = 0
        self.skipped = 0  # incoming packets over _MAX_PACKET, dropped unread
        self.handler_errors = 0
        self._reader = None
        self._writer = None
        self._tasks = []
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()  # an ack arrived or the connection went down
        self._down = asyncio.Event()
        self._closing = False
        self._inflight = []  # messages awaiting PUBACK, oldest first (see publish)
        self._subscriptions = []  # [topic, qos]: renewed when the broker lost the session
        self._suback = {}  # pid -> granted QoS (or None while waiting)
        self._pid = 0
        self._last_rx = 0

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- connection ---------------------------------------------------------------

    async def connect(self) -> bool:
        """One connection attempt; returns session_present. Raises ConnectRefused,
        MQTTError, OSError or asyncio.TimeoutError."""
        if self.connected:
            return self.session_present
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        self._reader, self._writer = reader, writer
        try:
            will = self.will() if callable(self.will) else self.will
            packet = connect_packet(
                self._client_id, self.keepalive, self.clean_session,
                self._user, self._password, will,
            )
            await self._write(packet)
            kind, body = await asyncio.wait_for(self._read_packet(), self.timeout)
            if kind != CONNACK or len(body) != 2:
                raise MQTTError(f"expected CONNACK, got packet type {kind:#04x}")
            if body[1]:
                raise ConnectRefused(body[1])
        except BaseException:
            self._close_streams()
            raise
        self.session_present = bool(body[0] & 1)
        self.connected = True
        self.connects += 1
        self._last_rx = ticks_ms()
        self._down.clear()
        if self.on_connect is not None:
            self.on_connect()
        self._tasks = [asyncio.create_task(self._receive(writer))]
        if self.keepalive:
            self._tasks.append(asyncio.create_task(self._ping(writer)))
        try:
            await self._send_unsent()  # §4.4: unacknowledged PUBLISH again, DUP set
            # Renewed even when the broker kept the session: SUBSCRIBE is idempotent.
            for topic, qos in self._subscriptions:
                await self._subscribe(topic, qos)
        except (OSError, EOFError, MQTTError, asyncio.TimeoutError) as error:  # noqa: UP041
            self._lost(error)
            raise
        return self.session_present

    async def run(self) -> None:
        """Stay connected until disconnect(): reconnect after every loss, backing off
        exponentially with jitter between failed attempts."""
        while not self._closing:
            if not self.connected:
                try:
                    await self.connect()
                    self.last_error = None
                    self.backoff.reset()
                except Exception as error:  # refused, unreachable, or a will() bug: retry
                    self.last_error = error
                    await asyncio.sleep(self.backoff.next_ms() / 1000)
                    continue
            await self._down.wait()

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker then drops the will) and stop run()."""
        self._closing = True
        if self.connected:
            try:
                await self._write(bytes([DISCONNECT, 0]))
            except OSError as error:
                self.last_error = error
        self._lost(None)

    def _lost(self, error) -> None:
        if error is not None:
            self.last_error = error
        was_connected = self.connected
        self.connected = False
        self._close_streams()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = []
        self._down.set()
        if was_connected:
            self._changed.set()

    def _close_streams(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        if writer is not None:
            writer.close()

    # -- sending ------------------------------------------------------------------

    async def _write(self, *parts) -> None:
        writer = self._writer
        if writer is None:
            raise OSError("MQTT not connected")
        async with self._lock:
            for part in parts:
                writer.write(part)
            await writer.drain()

    async def _send_unsent(self) -> None:
        """Send, oldest first, every in-flight message not yet sent on this connection."""
        while self.connected:
            for entry in self._inflight:
                if entry[4] != self.connects:
                    break
            else:
                return
            pid, topic, payload, retain, sent = entry
            entry[4] = self.connects  # marked before the await: no other task sends it too
            header = publish_header(topic, len(payload), 1, retain, pid, sent != 0)
            await self._write(header, payload)

    def _next_pid(self) -> int:
        busy = [entry[0] for entry in self._inflight]
        while True:
            self._pid = self._pid % 0xFFFF + 1
            if self._pid not in busy and self._pid not in self._suback:
                return self._pid

    async def publish(self, topic, payload, qos: int = 0, retain: bool = False) -> bool:
        """QoS 0: send now if connected (returns False if not). QoS 1: wait for a window
        slot, then the message is delivered at least once, across reconnects."""
        topic = _to_bytes(topic)
        payload = _to_bytes(payload)
        if qos == 0:
            if not self.connected:
                return False
            try:
                await self._write(publish_header(topic, len(payload), 0, retain, 0, False), payload)
            except OSError as error:
                self._lost(error)
                return False
            return True
        if qos != 1:
            raise ValueError("QoS must be 0 or 1")
        while len(self._inflight) >= self._max_inflight:
            self._changed.clear()
            await self._changed.wait()
        # [pid, topic, payload, retain, number of the connection that last sent it]
        self._inflight.append([self._next_pid(), topic, payload, retain, 0])
        try:
            await self._send_unsent()
        except OSError as error:
            self._lost(error)  # the message stays in flight: resent after the reconnect
        return True

    async def drain(self) -> None:
        """Wait until every QoS 1 message published so far is acknowledged."""
        while self._inflight:
            self._changed.clear()
            await self._changed.wait()

    async def subscribe(self, topic, qos: int = 1) -> int | None:
        """Subscribe now if connected and at every connect; returns the granted QoS
        (None when not connected yet)."""
        topic = _to_bytes(topic)
        if [topic, qos] not in self._subscriptions:
            self._subscriptions.append([topic, qos])
        if not self.connected:
            return None
        return await self._subscribe(topic, qos)

    async def _subscribe(self, topic: bytes, qos: int) -> int:
        pid = self._next_pid()
        self._suback[pid] = None
        try:
            body = pid.to_bytes(2, "big") + _string(topic) + bytes([qos])
            await self._write(bytes([SUBSCRIBE]) + _length(len(body)) + body)
            while self._suback.get(pid) is None:
                if not self.connected:
                    raise MQTTError("connection lost before SUBACK")
                self._changed.clear()
                await asyncio.wait_for(self._changed.wait(), self.timeout)
            granted = self._suback[pid]
        finally:
            self._suback.pop(pid, None)
        if granted == 0x80:
            raise MQTTError(f"subscription to {topic.decode()} refused by the broker")
        return granted

    # -- receiving ----------------------------------------------------------------

    async def _read_packet(self) -> tuple:
        reader = self._reader
        first = (await reader.readexactly(1))[0]
        size = 0
        for shift in (0, 7, 14, 21):
            byte = (await reader.readexactly(1))[0]
            size |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            raise MQTTError("malformed remaining length")
        if size > _MAX_PACKET:
            while size:  # skip without buffering it all
                size -= len(await reader.readexactly(min(size, 256)))
            self.skipped += 1
            return -1, b""
        return first, (await reader.readexactly(size)) if size else b""

    async def _receive(self, writer) -> None:
        try:
            while self._writer is writer:
                first, body = await self._read_packet()
                self._last_rx = ticks_ms()
                if first < 0:
                    continue
                kind = first & 0xF0
                if kind == PUBLISH:
                    await self._incoming(first, body)
                elif kind == PUBACK and len(body) == 2:
                    pid = int.from_bytes(body, "big")
                    for index, entry in enumerate(self._inflight):
                        if entry[0] == pid:
                            del self._inflight[index]
                            self._changed.set()
                            break
                elif kind == SUBACK and len(body) == 3:
                    pid = int.from_bytes(body[:2], "big")
                    if pid in self._suback:
                        self._suback[pid] = body[2]
                        self._changed.set()
                elif kind != PINGRESP:
                    raise MQTTError(f"unexpected packet type {first:#04x}")
        except Exception as error:  # EOF, reset, protocol error: all mean reconnect
            if self._writer is writer:
                self._lost(error)

    async def _incoming(self, first: int, body: bytes) -> None:
        qos = (first >> 1) & 3
        size = int.from_bytes(body[:2], "big")
        start = 2 + size + (2 if qos else 0)
        if qos > 1 or start > len(body):
            raise MQTTError("malformed or QoS 2 PUBLISH")
        topic = body[2 : 2 + size].decode()
        try:
            if self.on_message is not None:
                await self.on_message(topic, body[start:])
        except Exception:  # a bad handler must not take the connection down
            self.handler_errors += 1
        if qos:
            await self._write(bytes([PUBACK, 2]) + body[start - 2 : start])

    async def _ping(self, writer) -> None:
        """§3.1.2.10: a PINGREQ every half keepalive; silence for a whole keepalive
        means the link is dead even if TCP has not noticed."""
        period = self.keepalive * 500
        while self._writer is writer:
            await asyncio.sleep(period / 1000)
            if self._writer is not writer:
                return
            if ticks_diff(ticks_ms(), self._last_rx) >= 2 * period:
                self._lost(MQTTError("no answer from the broker within the keepalive"))
                return
            try:
                await self._write(bytes([PINGREQ, 0]))
            except OSError as error:
                self._lost(error)
                return
