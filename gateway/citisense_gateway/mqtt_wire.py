"""MQTT 3.1.1 / 5.0 packet codec for the ingest link (pure: bytes in, values out).

Only what a QoS 1 subscriber-publisher needs: CONNECT, CONNACK, SUBSCRIBE, SUBACK,
PUBLISH, PUBACK, PINGREQ/PINGRESP, DISCONNECT. The gateway never enables topic aliases
(it sends no Topic Alias Maximum), so PUBLISH properties can be skipped by length.
Malformed input from the broker raises MqttProtocolError; the link then reconnects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

MQTT_311 = 4
MQTT_5 = 5

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

# MQTT 5 property identifiers used here, and the wire type of every property so that
# unknown ones can be skipped (MQTT 5 §2.2.2.2).
PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21
PROP_MAXIMUM_PACKET_SIZE = 0x27
PROP_ASSIGNED_CLIENT_ID = 0x12
PROP_SERVER_KEEP_ALIVE = 0x13
PROP_REASON_STRING = 0x1F
_BYTE, _U16, _U32, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE, 0x17: _BYTE, 0x19: _BYTE, 0x24: _BYTE, 0x25: _BYTE, 0x28: _BYTE,
    0x29: _BYTE, 0x2A: _BYTE,
    0x13: _U16, 0x21: _U16, 0x22: _U16, 0x23: _U16,
    0x02: _U32, 0x11: _U32, 0x18: _U32, 0x27: _U32,
    0x0B: _VARINT,
    0x03: _UTF8, 0x08: _UTF8, 0x12: _UTF8, 0x15: _UTF8, 0x1A: _UTF8, 0x1C: _UTF8, 0x1F: _UTF8,
    0x09: _BINARY, 0x16: _BINARY,
    0x26: _PAIR,
}

MAX_REMAINING = 268_435_455  # largest length a 4-byte variable integer holds


class MqttProtocolError(Exception):
    """The broker sent bytes that are not valid MQTT for this session."""


class Publish(NamedTuple):
    """One received PUBLISH; packet_id is 0 for QoS 0 (a tuple: made once per message)."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    dup: bool
    retain: bool


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason: int  # 0 accepted; v3.1.1 return codes 1..5, v5 reason codes >= 0x80
    properties: dict[int, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    reasons: tuple[int, ...]  # granted QoS (0..2) or failure (>= 0x80) per filter


@dataclass(frozen=True, slots=True)
class Puback:
    packet_id: int
    reason: int  # 0 success; >= 0x80 refused (e.g. 0x87 not authorised)


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: int


Packet = Publish | Connack | Suback | Puback | Disconnect | None  # None: PINGRESP


def varint(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError(f"variable integer out of range: {n}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT string longer than 65535 bytes")
    return struct.pack(">H", len(raw)) + raw


def _binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("MQTT binary field longer than 65535 bytes")
    return struct.pack(">H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def _properties(props: dict[int, int]) -> bytes:
    out = bytearray()
    for ident, value in props.items():
        kind = _PROPERTY_TYPES[ident]
        out.append(ident)
        if kind == _U16:
            out += struct.pack(">H", value)
        elif kind == _U32:
            out += struct.pack(">I", value)
        else:
            raise ValueError(f"property 0x{ident:02x} is not an integer property")
    return varint(len(out)) + bytes(out)


def encode_connect(
    client_id: str,
    *,
    version: int,
    keepalive: int,
    clean_start: bool,
    username: str | None = None,
    password: str | None = None,
    session_expiry: int = 0,
    receive_maximum: int = 0,
    maximum_packet_size: int = 0,
) -> bytes:
    if version not in (MQTT_311, MQTT_5):
        raise ValueError(f"unsupported MQTT version {version}")
    flags = 0x02 if clean_start else 0
    payload = _utf8(client_id)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
    if password is not None:
        flags |= 0x40
        payload += _binary(password.encode("utf-8"))
    header = _utf8("MQTT") + bytes((version, flags)) + struct.pack(">H", keepalive)
    if version == MQTT_5:
        props: dict[int, int] = {}
        if session_expiry:
            props[PROP_SESSION_EXPIRY] = session_expiry
        if receive_maximum:
            props[PROP_RECEIVE_MAXIMUM] = receive_maximum
        if maximum_packet_size:
            props[PROP_MAXIMUM_PACKET_SIZE] = maximum_packet_size
        header += _properties(props)
    return _packet(CONNECT << 4, header + payload)


def encode_subscribe(packet_id: int, filters: list[tuple[str, int]], version: int) -> bytes:
    body = bytearray(struct.pack(">H", packet_id))
    if version == MQTT_5:
        body.append(0)  # no properties
    for topic_filter, qos in filters:
        body += _utf8(topic_filter) + bytes((qos,))
    return _packet((SUBSCRIBE << 4) | 0x02, bytes(body))


def encode_publish(
    topic: str, payload: bytes, qos: int, packet_id: int, version: int, retain: bool = False
) -> bytes:
    body = bytearray(_utf8(topic))
    if qos:
        body += struct.pack(">H", packet_id)
    if version == MQTT_5:
        body.append(0)
    body += payload
    return _packet((PUBLISH << 4) | (qos << 1) | int(retain), bytes(body))


_PUBACK = (PUBACK << 28) | (2 << 16)  # a short-form PUBACK as a big-endian u32, id 0
_PUBACKS: dict[int, struct.Struct] = {}  # by count


def encode_pubacks(packet_ids: list[int]) -> bytes:
    """PUBACKs for every id, in order, as one write (the short form is valid in v3.1.1 and 5)."""
    n = len(packet_ids)
    packer = _PUBACKS.get(n)
    if packer is None:
        packer = struct.Struct(f">{n}I")
        if len(_PUBACKS) < 64:  # batch sizes recur; a flood of odd ones must not grow this
            _PUBACKS[n] = packer
    return packer.pack(*map(_PUBACK.__or__, packet_ids))


PINGREQ_PACKET = bytes((PINGREQ << 4, 0))
DISCONNECT_PACKET = bytes((DISCONNECT << 4, 0))


class PacketReader:
    """Splits a byte stream into packets; feed() returns every packet it completes.

    PUBLISH packets, nearly all of the traffic, are decoded straight from the received
    chunk: one copy of the payload, none of the packet.
    """

    def __init__(self, version: int, max_packet: int) -> None:
        self.version = version
        self.max_packet = max_packet
        self._rest = bytearray()  # the start of a packet the last chunk did not complete
        self._need = 0  # length the rest must reach to hold that packet (0: unknown yet)
        # Of the packets the last feed() returned: how many are not PUBLISH, how many are
        # PUBLISH at QoS 1 or 2 (acknowledged by the receiver).
        self.others = 0
        self.acknowledged = 0

    def feed(self, data: bytes) -> list[Packet]:
        if self._rest:
            self._rest += data
            if len(self._rest) < self._need:  # a large packet arriving in many chunks
                self.others = self.acknowledged = 0
                return []
            buf = bytes(self._rest)
        else:
            buf = bytes(data)
        packets: list[Packet] = []
        pos = 0
        end = len(buf)
        need = 0
        # PUBLISH QoS 1 (neither DUP nor RETAIN), MQTT 5: nearly all traffic.
        common = 0x32 if self.version == MQTT_5 else -1
        max_packet = self.max_packet
        new = tuple.__new__  # a NamedTuple's own __new__ is a Python call, paid per message
        others = unacknowledged = 0  # counted where they are rare: not in the common case
        while end - pos >= 2:
            first = buf[pos]
            length = buf[pos + 1]
            i = pos + 2
            if length & 0x80:  # a longer remaining length
                length, i = _remaining_length(buf, pos + 1, end)
                if i < 0:
                    break
            if length > max_packet:
                raise MqttProtocolError(f"packet of {length} bytes exceeds {max_packet}")
            stop = i + length
            if stop > end:
                need = stop - pos
                break
            if first == common:
                topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
                start = topic_end + 3
                packet_id = (buf[topic_end] << 8) | buf[topic_end + 1] if start <= stop else 0
                if packet_id and buf[topic_end + 2] == 0:  # and no properties
                    try:
                        topic = buf[i + 2 : topic_end].decode()
                    except UnicodeDecodeError:
                        topic = ""
                    if topic:
                        packets.append(new(Publish, (topic, buf[start:stop], 1, packet_id,
                                                     False, False)))
                        pos = stop
                        continue
                packets.append(self._publish(first, buf, i, stop))
            elif first >> 4 == PUBLISH:
                packets.append(self._publish(first, buf, i, stop))
            else:
                packets.append(self._decode(first, buf[i:stop]))
                others += 1
            if first >> 4 == PUBLISH and not first & 0x06:  # QoS 0
                unacknowledged += 1
            pos = stop
        self._rest = bytearray(buf[pos:])
        self._need = need
        self.others = others
        self.acknowledged = len(packets) - others - unacknowledged
        return packets

    def _decode(self, first: int, body: bytes) -> Packet:
        kind = first >> 4
        if kind == PUBACK:
            if len(body) < 2:
                raise MqttProtocolError("PUBACK too short")
            reason = body[2] if len(body) > 2 else 0
            return Puback(struct.unpack_from(">H", body)[0], reason)
        if kind == PINGRESP:
            return None
        if kind == CONNACK:
            return self._connack(body)
        if kind == SUBACK:
            return self._suback(body)
        if kind == DISCONNECT:
            return Disconnect(body[0] if body else 0)
        raise MqttProtocolError(f"unexpected packet type {kind}")

    def _publish(self, first: int, buf: bytes, start: int, stop: int) -> Publish:
        """The PUBLISH whose variable header and payload are buf[start:stop]."""
        qos = (first >> 1) & 3
        if qos == 3:
            raise MqttProtocolError("PUBLISH with QoS 3")
        if stop - start < 2:
            raise MqttProtocolError("PUBLISH too short")
        topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
        pos = topic_end
        packet_id = 0
        if qos:
            packet_id = (buf[pos] << 8) | buf[pos + 1] if pos + 2 <= stop else -1
            pos += 2
        if self.version == MQTT_5:
            if pos < stop and buf[pos] < 0x80:
                pos += 1 + buf[pos]
            else:
                prop_len, pos = _read_varint(buf, pos)
                pos += prop_len
        if pos > stop or packet_id < 0 or (qos and packet_id == 0):
            raise MqttProtocolError("PUBLISH header runs past the packet")
        try:
            topic = buf[start + 2 : topic_end].decode("utf-8")
        except UnicodeDecodeError as err:
            raise MqttProtocolError("PUBLISH topic is not UTF-8") from err
        # tuple.__new__: a NamedTuple's own __new__ is a Python call, paid per message here.
        return tuple.__new__(Publish, (topic, buf[pos:stop], qos, packet_id, bool(first & 0x08),
                                       bool(first & 1)))

    def _connack(self, body: bytes) -> Connack:
        if len(body) < 2:
            raise MqttProtocolError("CONNACK too short")
        props: dict[int, object] = {}
        if self.version == MQTT_5 and len(body) > 2:
            props = _read_properties(body, 2)[0]
        return Connack(bool(body[0] & 1), body[1], props)

    def _suback(self, body: bytes) -> Suback:
        if len(body) < 3:
            raise MqttProtocolError("SUBACK too short")
        pos = 2
        if self.version == MQTT_5:
            pos = _read_properties(body, pos)[1]
        return Suback(struct.unpack_from(">H", body)[0], tuple(body[pos:]))


def _remaining_length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the variable integer at pos; (0, -1) if buf ends first."""
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= end:
            return 0, -1
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise MqttProtocolError("variable integer longer than 4 bytes")


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A variable integer inside a complete packet: running past its end is malformed."""
    value, after = _remaining_length(data, pos, len(data))
    if after < 0:
        raise MqttProtocolError("variable integer runs past the packet")
    return value, after


def _read_properties(data: bytes, pos: int) -> tuple[dict[int, object], int]:
    length, pos = _read_varint(data, pos)
    end = pos + length
    if end > len(data):
        raise MqttProtocolError("properties run past the packet")
    props: dict[int, object] = {}
    try:
        while pos < end:
            ident = data[pos]
            pos += 1
            kind = _PROPERTY_TYPES.get(ident)
            value: object
            if kind == _BYTE:
                value = data[pos]
                pos += 1
            elif kind == _U16:
                value = struct.unpack_from(">H", data, pos)[0]
                pos += 2
            elif kind == _U32:
                value = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            elif kind == _VARINT:
                value, pos = _read_varint(data, pos)
            elif kind in (_UTF8, _BINARY):
                size = struct.unpack_from(">H", data, pos)[0]
                raw = data[pos + 2 : pos + 2 + size]
                value = raw.decode("utf-8", "replace") if kind == _UTF8 else raw
                pos += 2 + size
            elif kind == _PAIR:
                for _ in range(2):
                    pos += 2 + struct.unpack_from(">H", data, pos)[0]
                continue
            else:
                raise MqttProtocolError(f"unknown property 0x{ident:02x}")
            props[ident] = value
    except (IndexError, struct.error) as err:
        raise MqttProtocolError("property runs past the packet") from err
    if pos != end:
        raise MqttProtocolError("property runs past its section")
    return props, end
