"""The ingest link's MQTT codec: packets survive any chunking; bad bytes raise one error."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_gateway import mqtt_wire as wire

topics_ = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1,
                  max_size=40).filter(lambda t: "\x00" not in t)
publishes = st.tuples(topics_, st.binary(max_size=300), st.sampled_from([0, 1]),
                      st.integers(1, 65535), st.booleans())


@given(st.integers(0, wire.MAX_REMAINING))
def test_varint_round_trip(n: int) -> None:
    encoded = wire.varint(n)
    value, end = wire._read_varint(encoded, 0)
    assert (value, end) == (n, len(encoded)) and len(encoded) <= 4


@given(st.lists(publishes, min_size=1, max_size=20), st.sampled_from([4, 5]),
       st.lists(st.integers(1, 50), min_size=1, max_size=30))
def test_publishes_survive_any_chunking(items: list[tuple[str, bytes, int, int, bool]],
                                        version: int, cuts: list[int]) -> None:
    stream = b"".join(wire.encode_publish(t, p, q, pid, version, r) for t, p, q, pid, r in items)
    reader = wire.PacketReader(version, 1 << 20)
    got: list[wire.Packet] = []
    acknowledged = 0  # what each feed() says of the packets it returned

    def feed(data: bytes) -> None:
        nonlocal acknowledged
        packets = reader.feed(data)
        assert reader.others == 0
        acknowledged += reader.acknowledged
        got.extend(packets)

    pos = 0
    for cut in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        feed(stream[pos : pos + cut])
        pos += cut
        if pos >= len(stream):
            break
    feed(stream[pos:])
    assert [(p.topic, p.payload, p.qos, p.packet_id if p.qos else 0, p.retain)
            for p in got if isinstance(p, wire.Publish)] == [
        (t, pl, q, pid if q else 0, r) for t, pl, q, pid, r in items]
    assert acknowledged == sum(1 for item in items if item[2])


@given(st.binary(max_size=200), st.sampled_from([4, 5]))
def test_garbage_raises_only_protocol_errors(data: bytes, version: int) -> None:
    reader = wire.PacketReader(version, 1000)
    with contextlib.suppress(wire.MqttProtocolError):
        reader.feed(data)


def test_connack_suback_puback_with_properties() -> None:
    reader = wire.PacketReader(wire.MQTT_5, 1000)
    # session present, accepted; Receive Maximum 20, Server Keep Alive 60
    connack = bytes([0x20, 9, 1, 0, 6, 0x21, 0x00, 0x14, 0x13, 0x00, 0x3C])
    suback = bytes([0x90, 5, 0x00, 0x07, 0, 0x01, 0x87])
    puback = bytes([0x40, 3, 0x00, 0x09, 0x87])
    publish = wire.encode_publish("t", b"x", 1, 5, wire.MQTT_5)
    packets = reader.feed(connack + suback + puback + bytes([0xD0, 0]) + publish)
    assert (reader.others, reader.acknowledged) == (4, 1)
    assert packets[0] == wire.Connack(True, 0, {0x21: 20, 0x13: 60})
    assert packets[1] == wire.Suback(7, (1, 0x87))
    assert packets[2] == wire.Puback(9, 0x87)
    assert packets[3] is None  # PINGRESP


def test_oversize_and_unknown_packets_are_refused() -> None:
    with pytest.raises(wire.MqttProtocolError, match="exceeds"):
        wire.PacketReader(4, 10).feed(wire.encode_publish("t", b"x" * 20, 0, 0, 4))
    with pytest.raises(wire.MqttProtocolError, match="unexpected packet type"):
        wire.PacketReader(4, 10).feed(bytes([0x10, 0]))


def test_pubacks_are_one_write_in_order() -> None:
    assert wire.encode_pubacks([1, 258]) == bytes([0x40, 2, 0, 1, 0x40, 2, 1, 2])
    assert wire.encode_pubacks([]) == b""


@given(st.lists(st.integers(1, 0xFFFF), max_size=3000), st.sampled_from([4, 5]))
def test_pubacks_read_back_as_sent(packet_ids: list[int], version: int) -> None:
    packets = wire.PacketReader(version, 1000).feed(wire.encode_pubacks(packet_ids))
    assert packets == [wire.Puback(pid, 0) for pid in packet_ids]


@pytest.mark.parametrize("first", [0x30, 0x31, 0x32, 0x33, 0x3A, 0x3B])
def test_publish_flags_are_read_whatever_the_path(first: int) -> None:
    """QoS 1 without DUP or RETAIN takes the short way in MQTT 5; every other form the long."""
    qos = (first >> 1) & 3
    for version in (wire.MQTT_311, wire.MQTT_5):
        body = b"\x00\x03a/b" + (b"\x01\x02" if qos else b"") + (
            b"\x00" if version == wire.MQTT_5 else b"") + b"data"
        [packet] = wire.PacketReader(version, 1000).feed(bytes([first, len(body)]) + body)
        assert packet == wire.Publish("a/b", b"data", qos, 0x0102 if qos else 0,
                                      bool(first & 0x08), bool(first & 1))


def test_a_large_packet_in_small_chunks_and_long_properties() -> None:
    big = wire.encode_publish("t/big", bytes(range(256)) * 2000, 1, 7, wire.MQTT_5)
    # A PUBLISH whose properties (a user property) need a two-byte length.
    pair = b"\x26" + b"\x00\x03key" + b"\x00\xc8" + b"v" * 200
    body = b"\x00\x03t/p" + b"\x00\x08" + wire.varint(len(pair)) + pair + b"payload"
    props = bytes([0x32]) + wire.varint(len(body)) + body
    reader = wire.PacketReader(wire.MQTT_5, 1 << 20)
    stream = big + props
    got: list[wire.Packet] = []
    for pos in range(0, len(stream), 1000):
        got += reader.feed(stream[pos : pos + 1000])
    assert [(p.topic, p.payload, p.packet_id) for p in got if isinstance(p, wire.Publish)] == [
        ("t/big", bytes(range(256)) * 2000, 7), ("t/p", b"payload", 8)]
