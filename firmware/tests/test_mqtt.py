"""The node's MQTT 3.1.1 client: packets, delivery, keepalive, reconnects, Mosquitto.

Two halves: a scripted fake broker (asyncio server) checks what is on the wire (DUP,
packet ids, PUBACK order, the in-flight bound); the `broker` tests run the client against
a real Mosquitto started on a free port with a password file and no anonymous access.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from citisense_firmware import mqtt
from citisense_firmware.mqtt import ConnectRefused, MQTTClient
from citisense_tools.fleet import Radio

TIMEOUT = 10


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


class QuickBackoff:
    """Records each delay asked for; retries after 10 ms."""

    def __init__(self) -> None:
        self.delays = 0
        self.resets = 0

    def next_ms(self) -> int:
        self.delays += 1
        return 10

    def reset(self) -> None:
        self.resets += 1


# ---- packet encoding -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [  # MQTT 3.1.1 §2.2.3, table 2.4
        (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length(value: int, encoded: bytes) -> None:
    assert mqtt._length(value) == encoded


def test_connect_packet_carries_will_credentials_and_session_flag() -> None:
    packet = mqtt.connect_packet(b"n1", 60, False, b"u", b"p", ("w/t", b"gone"))
    assert packet[0] == 0x10
    variable = packet[2:12]
    assert variable[:7] == b"\x00\x04MQTT\x04"
    assert variable[7] == 0x80 | 0x40 | 0x08 | 0x04  # user, password, will QoS 1, will
    assert variable[8:10] == b"\x00\x3c"
    assert packet[12:] == b"\x00\x02n1\x00\x03w/t\x00\x04gone\x00\x01u\x00\x01p"
    assert mqtt.connect_packet(b"n1", 0, True)[9] == 0x02  # clean session only


# ---- scripted fake broker ----------------------------------------------------------


class FakeBroker:
    """Speaks just enough MQTT to script the cases a real broker will not produce."""

    def __init__(self) -> None:
        self.refuse: list[int] = []  # CONNACK codes for the next connections
        self.ack_publishes = True
        self.answer_pings = True
        self.packets: list[tuple[int, bytes]] = []  # (first byte, body) from the client
        self.connections = 0
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.drop()
        assert self.server is not None
        self.server.close()

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = None

    def publishes(self) -> list[tuple[int, bytes]]:
        return [(first, body) for first, body in self.packets if first & 0xF0 == 0x30]

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        first = (await reader.readexactly(1))[0]
        size, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, await reader.readexactly(size)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writer = writer
        try:
            first, body = await self._read(reader)
            assert first == 0x10
            code = self.refuse.pop(0) if self.refuse else 0
            writer.write(bytes([0x20, 2, 0, code]))
            if code:
                writer.close()
                return
            while True:
                first, body = await self._read(reader)
                self.packets.append((first, body))
                kind = first & 0xF0
                if kind == 0x30 and first & 0x06 and self.ack_publishes:
                    topic_len = int.from_bytes(body[:2], "big")
                    writer.write(b"\x40\x02" + body[2 + topic_len : 4 + topic_len])
                elif kind == 0x80:
                    writer.write(b"\x90\x03" + body[:2] + b"\x01")
                elif kind == 0xC0 and self.answer_pings:
                    writer.write(b"\xd0\x00")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


@pytest.fixture
async def fake() -> AsyncIterator[FakeBroker]:
    broker = FakeBroker()
    await broker.start()
    yield broker
    await broker.close()


def fake_client(broker: FakeBroker, **kwargs: Any) -> MQTTClient:
    kwargs.setdefault("backoff", QuickBackoff())
    return MQTTClient("node-1", "127.0.0.1", broker.port, "node-1", "pw", **kwargs)


async def test_unacked_publishes_are_resent_with_dup_after_reconnect(fake: FakeBroker) -> None:
    client = fake_client(fake)
    runner = asyncio.create_task(client.run())
    await until(lambda: client.connected)
    fake.ack_publishes = False
    for n in range(3):
        await client.publish("t/up", b"m%d" % n, qos=1)
    await until(lambda: len(fake.publishes()) == 3)
    first_ids = [body[6:8] for _, body in fake.publishes()]
    assert [first & 0x08 for first, _ in fake.publishes()] == [0, 0, 0]
    fake.ack_publishes = True
    fake.drop()
    await asyncio.wait_for(client.drain(), TIMEOUT)
    resent = fake.publishes()[3:]
    assert [first & 0x08 for first, _ in resent] == [0x08] * 3  # DUP set
    assert [body[6:8] for _, body in resent] == first_ids  # same packet ids, same order
    assert [body[8:] for _, body in resent] == [b"m0", b"m1", b"m2"]
    assert client.connects == 2
    await client.disconnect()
    await asyncio.wait_for(runner, TIMEOUT)


async def test_publishes_made_offline_go_out_once_connected_without_dup(
    fake: FakeBroker,
) -> None:
    client = fake_client(fake)
    await client.publish("t/up", b"early", qos=1)
    assert await client.publish("t/up", b"lost", qos=0) is False
    await client.connect()
    await asyncio.wait_for(client.drain(), TIMEOUT)
    ((first, body),) = fake.publishes()
    assert first == 0x32 and body.endswith(b"early")
    await client.disconnect()


async def test_in_flight_window_is_bounded(fake: FakeBroker) -> None:
    client = fake_client(fake, max_inflight=2)
    await client.connect()
    fake.ack_publishes = False
    tasks = [asyncio.create_task(client.publish("t", b"%d" % n, qos=1)) for n in range(5)]
    await until(lambda: len(fake.publishes()) == 2)
    await asyncio.sleep(0.05)
    assert len(fake.publishes()) == 2 and client.inflight == 2
    fake.ack_publishes = True
    for _, body in fake.publishes():  # acknowledge the two held ones by hand
        await fake.send(b"\x40\x02" + body[3:5])
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    await asyncio.wait_for(client.drain(), TIMEOUT)
    assert [body[5:] for _, body in fake.publishes()] == [b"%d" % n for n in range(5)]
    await client.disconnect()


async def test_incoming_qos1_is_acked_after_the_handler_returns(fake: FakeBroker) -> None:
    events: list[str] = []

    async def handler(topic: str, payload: bytes) -> None:
        events.append(f"handler {topic} {payload.decode()}")
        await asyncio.sleep(0.02)
        events.append(f"puback sent so far: {sum(1 for f, _ in fake.packets if f == 0x40)}")

    client = fake_client(fake, on_message=handler)
    await client.connect()
    assert await client.subscribe("n/1/down/#") == 1
    await fake.send(b"\x32\x0b\x00\x05n/1/x\x12\x34hi")
    await until(lambda: any(f == 0x40 for f, _ in fake.packets))
    assert events == ["handler n/1/x hi", "puback sent so far: 0"]
    assert (0x40, b"\x12\x34") in fake.packets
    await client.disconnect()


async def test_silent_broker_is_detected_by_keepalive(fake: FakeBroker) -> None:
    fake.answer_pings = False
    client = fake_client(fake, keepalive=1)
    await client.connect()
    await until(lambda: not client.connected, timeout=5)
    assert "keepalive" in str(client.last_error)
    assert any(first == 0xC0 for first, _ in fake.packets)


@pytest.mark.parametrize(
    ("code", "words"), [(4, "bad user name or password"), (5, "not authorised"), (2, "identifier")]
)
async def test_connack_refusal_is_a_clear_error(fake: FakeBroker, code: int, words: str) -> None:
    fake.refuse = [code]
    client = fake_client(fake)
    with pytest.raises(ConnectRefused, match=words) as refused:
        await client.connect()
    assert refused.value.code == code and not client.connected


async def test_run_backs_off_between_failed_attempts(fake: FakeBroker) -> None:
    fake.refuse = [5, 5, 3]
    backoff = QuickBackoff()
    wills: list[int] = []
    accepted: list[int] = []
    client = fake_client(
        fake, backoff=backoff,
        will=lambda: wills.append(1) or ("n/1/will", b"w"),
        on_connect=lambda: accepted.append(len(wills)),
    )
    runner = asyncio.create_task(client.run())
    await until(lambda: client.connected)
    assert (backoff.delays, backoff.resets) == (3, 1)
    assert fake.connections == 4
    assert len(wills) == 4 and accepted == [4]  # a will per attempt, on_connect once
    await client.disconnect()
    await asyncio.wait_for(runner, TIMEOUT)


# ---- real Mosquitto ------------------------------------------------------------------

USER = "node-4711"
PASSWORD = "correct horse"  # test-only


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """A Mosquitto on a free port: password file, no anonymous access, persistence on."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists() or shutil.which("mosquitto_passwd") is None:
            pytest.fail("Mosquitto is missing: apt-get install mosquitto mosquitto-clients")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        passwords = folder / "passwd"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True
        )
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), "tester", "tester"], check=True)
        passwords.chmod(0o600)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "user root\n"
            "log_dest stderr\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=(self.folder / "log").open("ab"),
        )
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.2
            ):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail("Mosquitto did not start: " + (self.folder / "log").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: saves the persistent sessions
            self.proc.wait(TIMEOUT)

    def sub(self, topic: str, *args: str) -> list[str]:
        """mosquitto_sub as tester with a persistent session; returns received payloads."""
        result = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-u", "tester",
             "-P", "tester", "-i", "tester-sub", "-c", "-q", "1", "-t", topic, *args],
            capture_output=True, timeout=TIMEOUT + 5, check=False,
        )
        return result.stdout.decode().splitlines()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def node_client(port: int, **kwargs: Any) -> MQTTClient:
    kwargs.setdefault("backoff", QuickBackoff())
    return MQTTClient(USER, "127.0.0.1", port, USER, PASSWORD, **kwargs)


@contextlib.asynccontextmanager
async def subscriber(broker: Mosquitto, topic: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, username="tester", password="tester", identifier="tester"
    ) as client:
        await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async def first() -> aiomqtt.Message:
        async for message in client.messages:
            return message
        raise AssertionError("no message")

    return await asyncio.wait_for(first(), TIMEOUT)


@pytest.mark.broker
async def test_qos1_publish_reaches_a_subscriber(mosquitto: Mosquitto) -> None:
    async with subscriber(mosquitto, "citisense/v1/4711/up/#") as sub:
        client = node_client(mosquitto.port)
        assert await client.connect() is False  # first connect: no stored session
        await client.publish("citisense/v1/4711/up/telemetry", b"\x84\x40\xa0hello", qos=1)
        await asyncio.wait_for(client.drain(), TIMEOUT)
        message = await next_message(sub)
        assert str(message.topic) == "citisense/v1/4711/up/telemetry"
        assert message.payload == b"\x84\x40\xa0hello" and message.qos == 1
        await client.disconnect()


@pytest.mark.broker
async def test_subscription_receives_downlink(mosquitto: Mosquitto) -> None:
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def on_message(topic: str, payload: bytes) -> None:
        await received.put((topic, payload))

    client = node_client(mosquitto.port, on_message=on_message)
    await client.connect()
    assert await client.subscribe("citisense/v1/4711/down/#") == 1
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto.port, username="tester", password="tester"
    ) as gateway:
        await gateway.publish("citisense/v1/4711/down/command", b"\x01\x02", qos=1)
    assert await asyncio.wait_for(received.get(), TIMEOUT) == (
        "citisense/v1/4711/down/command", b"\x01\x02",
    )
    await client.disconnect()


@pytest.mark.broker
async def test_last_will_is_published_when_the_link_drops(mosquitto: Mosquitto) -> None:
    radio = Radio("127.0.0.1", mosquitto.port)  # a relay whose links drop like a dead radio
    port = await radio.start()
    async with subscriber(mosquitto, "citisense/v1/4711/up/will") as sub:
        client = node_client(port, will=lambda: ("citisense/v1/4711/up/will", b"signed-will"))
        await client.connect()
        radio.set_up(False)
        message = await next_message(sub)
        assert message.payload == b"signed-will" and message.qos == 1 and not message.retain
    await radio.close()


@pytest.mark.broker
async def test_clean_disconnect_sends_no_will(mosquitto: Mosquitto) -> None:
    async with subscriber(mosquitto, "citisense/v1/4711/up/#") as sub:
        client = node_client(mosquitto.port, will=("citisense/v1/4711/up/will", b"gone"))
        await client.connect()
        await client.disconnect()
        marker = node_client(mosquitto.port)
        marker._client_id = b"marker"
        await marker.connect()
        await marker.publish("citisense/v1/4711/up/health", b"after", qos=1)
        await asyncio.wait_for(marker.drain(), TIMEOUT)
        assert (await next_message(sub)).payload == b"after"
        await marker.disconnect()


@pytest.mark.broker
async def test_messages_queued_during_a_broker_restart_are_delivered(
    mosquitto: Mosquitto,
) -> None:
    topic = "citisense/v1/4711/up/telemetry"
    mosquitto.sub(topic, "-E")  # the tester's persistent session exists from now on
    client = node_client(mosquitto.port)
    runner = asyncio.create_task(client.run())
    await until(lambda: client.connected)
    await asyncio.to_thread(mosquitto.stop)
    await until(lambda: not client.connected)
    for n in range(5):  # the uplink keeps producing while the broker is away
        await client.publish(topic, b"queued-%d" % n, qos=1)
    assert client.inflight == 5
    await asyncio.to_thread(mosquitto.start)
    await asyncio.wait_for(client.drain(), TIMEOUT)
    assert client.connects == 2 and client.session_present
    got = await asyncio.to_thread(mosquitto.sub, topic, "-C", "5", "-W", str(TIMEOUT))
    assert got == [f"queued-{n}" for n in range(5)]
    await client.disconnect()
    await asyncio.wait_for(runner, TIMEOUT)


@pytest.mark.broker
async def test_bad_password_is_a_clear_error(mosquitto: Mosquitto) -> None:
    client = MQTTClient(USER, "127.0.0.1", mosquitto.port, USER, "wrong")
    with pytest.raises(ConnectRefused) as refused:
        await client.connect()
    assert refused.value.code in (4, 5)  # Mosquitto 2 answers 5 for a wrong password
    assert "check the node's user name and password" in str(refused.value)



FIRMWARE = Path(__file__).resolve().parents[1] / "citisense_firmware"

# The client on MicroPython's asyncio, its socket replaced by an in-memory broker that
# acknowledges QoS 1 publishes, grants subscriptions and sends one command.
MP_CLIENT = """
import asyncio, json
from citisense_firmware import mqtt

class Pipe:
    def __init__(self):
        self.buf = b''
        self.ready = asyncio.Event()
    def feed(self, data):
        self.buf += data
        self.ready.set()
    async def readexactly(self, n):
        while len(self.buf) < n:
            self.ready.clear()
            await self.ready.wait()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

to_client = Pipe()
seen = []

class Broker:
    def __init__(self):
        self.inbox = b''
    def write(self, data):
        self.inbox += data
        while len(self.inbox) >= 2 and len(self.inbox) >= 2 + self.inbox[1]:
            first, size = self.inbox[0], self.inbox[1]
            body, self.inbox = self.inbox[2:2 + size], self.inbox[2 + size:]
            seen.append(first)
            if first == 0x10:
                to_client.feed(b'\\x20\\x02\\x00\\x00')
            elif first & 0xF6 == 0x32:
                n = body[0] * 256 + body[1]
                to_client.feed(b'\\x40\\x02' + body[2 + n:4 + n])
            elif first == 0x82:
                to_client.feed(b'\\x90\\x03' + body[:2] + b'\\x01')
                to_client.feed(b'\\x32\\x0b\\x00\\x05n/1/x\\x00\\x07hi')
    async def drain(self):
        pass
    def close(self):
        pass

async def open_connection(host, port):
    return to_client, Broker()

asyncio.open_connection = open_connection
got = []
async def on_message(topic, payload):
    got.append([topic, payload.decode()])

out = []

async def main():
    client = mqtt.MQTTClient('n1', 'broker', 1883, 'u', 'p', on_message=on_message,
                             will=('n/1/will', b'w'), max_inflight=2)
    present = await client.connect()
    for n in range(4):
        await client.publish('n/1/up', b'm%d' % n, qos=1)
    await client.drain()
    granted = await client.subscribe('n/1/down/#')
    while not got or 0x40 not in seen:
        await asyncio.sleep(0.01)
    await client.disconnect()
    out.extend([present, granted, got, seen, client.inflight])

# In a task: the VM host's top-level coroutine cannot run asyncio.wait_for.
task = asyncio.create_task(main())
for _ in range(500):
    await asyncio.sleep(0.01)
    if task.done():
        break
print(json.dumps(out))
"""


@pytest.mark.micropython
def test_client_runs_on_micropython_asyncio(mp: Any) -> None:
    mp.install_package(FIRMWARE)
    present, granted, got, seen, inflight = json.loads(mp.run(MP_CLIENT))
    assert present is False and granted == 1 and inflight == 0
    assert got == [["n/1/x", "hi"]]
    assert seen == [0x10, 0x32, 0x32, 0x32, 0x32, 0x82, 0x40, 0xE0]


@pytest.mark.broker
async def test_node_stack_round_trip_through_mosquitto(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Store, uplink, will/birth, downlink and forwarder wired as a node does it."""
    from citisense_firmware.commands import Downlink
    from citisense_firmware.config import Counter
    from citisense_firmware.store_forward import Store
    from citisense_firmware.uplink import Clock, Uplink, forward_mqtt, mqtt_will
    from citisense_protocols import messages, topics

    key, node = bytes(range(32)), 4711  # test-only key
    clock = Clock()
    clock.set(1_760_000_000, messages.TQ_NTP)
    store = Store(str(tmp_path / "queue"))
    uplink = Uplink(node, key, 1, clock, store)
    downlink = Downlink(node, key, Counter(str(tmp_path / "down")), clock, uplink)
    levels: list[Any] = []
    downlink.register(messages.OP_DIM, levels.append)
    birth = {0: "1.0.0", 1: messages.LIGHTING, 2: "esp32", 3: bytes(8), 4: 1, 5: None}
    will, on_connect = mqtt_will(uplink, lambda: birth)
    client = node_client(mosquitto.port, will=will, on_connect=on_connect,
                         on_message=lambda topic, payload: downlink.handle(payload))
    uplink.send(messages.TELEMETRY, [60, 0, 312, 1200, 3, 0])
    async with subscriber(mosquitto, "citisense/v1/+/up/#") as gateway:
        await client.subscribe(topics.node_filter(node))
        tasks = [asyncio.create_task(client.run()),
                 asyncio.create_task(forward_mqtt(store, client, node, idle=0.01))]
        kinds = []
        for _ in range(2):
            message = await next_message(gateway)
            body = messages.decode_signed(key, message.payload)
            topics.check(str(message.topic), body)
            kinds.append(body[messages.KEY_KIND])
        assert kinds == [messages.TELEMETRY, messages.BIRTH]
        command = messages.command(node, 99, 1_760_000_600, 1, messages.OP_DIM, [25, 60])
        await gateway.publish(topics.topic(node, messages.COMMAND),
                              messages.encode_signed(key, command), qos=1)
        ack = messages.decode_signed(key, (await next_message(gateway)).payload)
        assert ack[messages.KEY_KIND] == messages.ACK
        assert ack[messages.KEY_DATA] == [99, messages.OK] and levels == [[25, 60]]
        await client.disconnect()
        for task in tasks:
            task.cancel()
