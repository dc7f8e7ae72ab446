"""Commissioning: after a flash, wait for the node's birth message and check that the
node is the one expected (id, role, firmware, board, config, location).

Where births come from is pluggable (BirthSource): MqttBirthSource subscribes to the
node's birth topic on the broker the gateway uses. A source watches before the board is
reset, because births are not retained: one published before the subscription is lost.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from citisense_protocols import catalogue, mac, messages, topics
from citisense_protocols.errors import WireError
from citisense_tools.errors import CommandError

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Birth:
    node: int
    fw: str
    role: str
    board: str
    cfg: str  # hex of the 8-byte config hash
    reset: int
    loc: tuple[int, int] | None  # 10^-7 degrees
    verified: bool  # MAC checked with the node's key


@dataclass(frozen=True)
class Expected:
    node: int
    fw: str
    role: str
    board: str
    cfg: str | None = None  # hex; None: not checked
    loc: tuple[int, int] | None = None


Wait = Callable[[float], Birth | None]


class BirthSource(Protocol):
    def watch(self, node: int, key: bytes | None) -> AbstractContextManager[Wait]:
        """Start listening for `node`'s births; the context gives wait(timeout)."""
        ...


def parse_birth(topic: str, payload: bytes, key: bytes | None) -> Birth:
    """A birth message from the wire; WireError if it is not a valid one."""
    if key is None:
        body = catalogue.decode_body(mac.unwrap(payload)[0])
    else:
        body = messages.decode_signed(key, payload)
    topics.check(topic, body)
    if body[messages.KEY_KIND] != messages.BIRTH:
        raise messages.MessageError("not a birth message")
    data: dict[int, Any] = body[messages.KEY_DATA]  # type: ignore[assignment]
    loc = data[5]
    return Birth(
        node=int(body[messages.KEY_NODE]),  # type: ignore[call-overload]
        fw=data[0], role=messages.ROLE_NAMES[data[1]], board=data[2], cfg=data[3].hex(),
        reset=data[4], loc=None if loc is None else (loc[0], loc[1]), verified=key is not None,
    )


def differences(birth: Birth, expected: Expected) -> list[str]:
    """What in the birth is not as expected, in words; empty when it all matches."""
    found = []
    if birth.node != expected.node:
        found.append(f"it is node {birth.node}, not node {expected.node}")
    if birth.fw != expected.fw:
        found.append(f"it runs firmware {birth.fw}, not {expected.fw}: the new application "
                     "did not start and the board went back to the previous one")
    if birth.role != expected.role:
        found.append(f"it runs the {birth.role} role, not {expected.role}")
    if birth.board != expected.board:
        found.append(f"it says it is board {birth.board}, not {expected.board}")
    if expected.cfg is not None and birth.cfg != expected.cfg:
        found.append(f"its config hash is {birth.cfg}, not {expected.cfg}: it runs another "
                     "config than the one written")
    if expected.loc is not None and birth.loc != expected.loc:
        found.append(f"it reports location {_degrees(birth.loc)}, not {_degrees(expected.loc)}")
    return found


def _degrees(loc: tuple[int, int] | None) -> str:
    return "none" if loc is None else f"{loc[0] / 1e7:.7f}, {loc[1] / 1e7:.7f}"


def describe(birth: Birth) -> str:
    mac_note = "" if birth.verified else " (MAC not checked: no key given)"
    return (f"node {birth.node}: firmware {birth.fw}, {birth.role} on {birth.board}, "
            f"at {_degrees(birth.loc)}, config {birth.cfg}, reset cause "
            f"{_RESET_NAMES.get(birth.reset, birth.reset)}{mac_note}")


_RESET_NAMES = {
    messages.RESET_UNKNOWN: "unknown", messages.RESET_POWER_ON: "power-on",
    messages.RESET_EXTERNAL: "external", messages.RESET_WATCHDOG: "watchdog",
    messages.RESET_DEEP_SLEEP: "deep sleep", messages.RESET_SOFT: "soft reset",
    messages.RESET_BROWNOUT: "brownout", messages.RESET_PANIC: "panic",
    messages.RESET_COMMANDED: "commanded", messages.RESET_UPDATE: "app update",
}


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Broker:
        """mqtt://[user[:password]@]host[:port] or mqtts://..."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise CommandError(f"broker URL {_safe(url)!r}: use mqtt://user:password@host:1883 "
                               "or mqtts://host:8883")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


class MqttBirthSource:
    """Births from the MQTT broker (plain subscription to the node's birth topic)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    @contextmanager
    def watch(self, node: int, key: bytes | None) -> Iterator[Wait]:
        topic = topics.topic(node, messages.BIRTH)
        received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed = threading.Event()
        connected: list[Any] = []
        ready = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"citisense-commission-{secrets.token_hex(4)}")
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set()

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            connected.append(reason)
            ready.set()
            if not reason.is_failure:
                c.subscribe(topic, qos=1)

        client.on_connect = on_connect
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_message = lambda _c, _u, msg: received.put((msg.topic, bytes(msg.payload)))
        where = f"{self.broker.host}:{self.broker.port}"
        try:
            client.connect(self.broker.host, self.broker.port, keepalive=30)
        except OSError as err:
            raise CommandError(f"cannot reach the MQTT broker at {where}: "
                               f"{err.strerror or err}") from None
        client.loop_start()
        try:
            if not ready.wait(CONNECT_TIMEOUT) or connected[0].is_failure:
                reason = connected[0] if connected else "no answer"
                raise CommandError(f"the MQTT broker at {where} refused the connection "
                                   f"({reason}): check the broker user and password")
            if not subscribed.wait(CONNECT_TIMEOUT):
                raise CommandError(f"the MQTT broker at {where} did not confirm the "
                                   f"subscription to {topic}")
            yield _waiter(received, node, key)
        finally:
            client.disconnect()
            client.loop_stop()


def _waiter(received: queue.Queue[tuple[str, bytes]], node: int, key: bytes | None) -> Wait:
    def wait(timeout: float) -> Birth | None:
        """The next valid birth within `timeout` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        rejected: list[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                topic, payload = received.get(timeout=left)
            except queue.Empty:
                break
            try:
                return parse_birth(topic, payload, key)
            except WireError as err:
                rejected.append(str(err))
        if rejected:
            raise CommandError(
                f"node {node} published a birth the tools refused ({rejected[-1]}): if the MAC "
                "check failed, the node holds another key than its config file; provision it "
                "again"
            )
        return None

    return wait


class ApiClient(Protocol):
    def get(self, path: str, **query: Any) -> Any: ...


class ApiBirthSource:
    """Births as the gateway accepted them, read through its HTTP API: a technician logged
    in with `citisense login` needs no broker account, and the gateway checked each birth's
    MAC with the node's key (so a re-flash without the config file is verified too)."""

    POLL_S = 1.0

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def _births(self, node: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api.get(f"/nodes/{node}/births", limit=5)
        return found

    @contextmanager
    def watch(self, node: int, key: bytes | None) -> Iterator[Wait]:
        known = {(b["boot"], b["seq"]) for b in self._births(node)}  # before anything moves

        def wait(timeout: float) -> Birth | None:
            deadline = time.monotonic() + timeout
            while True:
                for found in self._births(node):  # newest first
                    if (found["boot"], found["seq"]) not in known:
                        loc = found["location"]
                        return Birth(node=node, fw=found["firmware"], role=found["role"],
                                     board=found["board"], cfg=found["config_hash"],
                                     reset=found["reset_cause"],
                                     loc=None if loc is None else (loc[0], loc[1]),
                                     verified=True)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                time.sleep(min(self.POLL_S, left))

        yield wait
