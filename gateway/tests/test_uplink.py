"""Uplink checks: the compiled telemetry fast path agrees with the contract's validator, and
every refusal carries the reason the metrics count."""

from __future__ import annotations

import json
import secrets
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_gateway import auth, uplink
from citisense_gateway.simnode import SimNode
from citisense_protocols import catalogue, mac, messages
from citisense_protocols.errors import MessageError

values = st.one_of(st.none(), st.integers(-10_000, 70_000), st.booleans(),
                   st.just(4294967295), st.just(2**64), st.text(max_size=2))


@st.composite
def telemetry_bodies(draw: st.DrawFn) -> dict[Any, Any]:
    length = draw(st.sampled_from([5, 6, 7, 4, 8]))
    body: dict[Any, Any] = messages.uplink(
        messages.TELEMETRY, draw(st.integers(0, 2**32)), draw(st.integers(0, 2**32)),
        draw(st.integers(0, 2**32)), draw(st.integers(0, 2**32)), draw(st.integers(-1, 3)),
        draw(st.lists(values, min_size=length, max_size=length)))
    if draw(st.booleans()):
        body[draw(st.sampled_from([0, 1, 8, "x", 1.5]))] = draw(values)
    return body


@given(telemetry_bodies())
def test_fast_path_never_accepts_what_the_validator_refuses(body: dict[Any, Any]) -> None:
    if uplink._plainly_valid_telemetry(body):
        catalogue.decode_body(body)  # must not raise
    try:
        catalogue.decode_body(body)
    except MessageError:
        return
    # Valid per the contract: the fast path may defer, but validate() must accept it.
    assert uplink.validate(cbor2.dumps(body, canonical=True)) == body


@st.composite
def near_valid_telemetry(draw: st.DrawFn) -> dict[Any, Any]:
    """Valid telemetry with its values at their bounds, then at most one value broken."""
    length = draw(st.sampled_from([5, 6, 7]))
    data: list[Any] = [draw(st.sampled_from([lo, hi] + ([None] if nullable else [])))
                       for nullable, lo, hi in uplink._LAYOUTS[length]]
    u32 = st.sampled_from([0, 1, 2**32 - 1])
    body: dict[Any, Any] = messages.uplink(messages.TELEMETRY, draw(u32), draw(u32), draw(u32),
                                           draw(u32), draw(st.integers(0, 2)), data)
    broken = st.sampled_from([-1, 2**32, 2**64, True, None, 1.0, "x"])
    where = draw(st.sampled_from(["none", "data", "envelope", "key"]))
    if where == "data":
        data[draw(st.integers(0, length - 1))] = draw(broken)
    elif where == "envelope":
        body[draw(st.integers(0, 6))] = draw(broken)
    elif where == "key":
        body[draw(st.sampled_from([8, 1.5, "x"]))] = 0
    return body


@given(st.one_of(telemetry_bodies(), near_valid_telemetry()), st.sampled_from([5, 6, 7]))
def test_plain_telemetry_lane_agrees_with_the_validator(body: dict[Any, Any], length: int
                                                         ) -> None:
    raw = cbor2.dumps(body, canonical=True)
    node = body.get(messages.KEY_NODE)
    node = node if type(node) is int else 7
    value = uplink.plain_telemetry(raw, node, length)
    if value is not None:
        assert uplink.decode(raw, node) == value  # what the lane takes, the validator takes
        assert value[messages.KEY_KIND] == messages.TELEMETRY
        assert len(value[messages.KEY_DATA]) == length


def draw_telemetry(length: int, data: st.DataObject) -> tuple[int, dict[int, Any], bytes]:
    """(node, body, deterministic CBOR) of valid telemetry with a data array of `length`,
    its numbers often at the CBOR head-size edges and at their fields' limits."""
    edges = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1]
    values: list[int | None] = [
        data.draw(st.integers(lo, hi) | st.sampled_from([e for e in edges + [-e for e in edges]
                                                         if lo <= e <= hi] + [lo, hi])
                  | (st.none() if nullable else st.nothing()))
        for nullable, lo, hi in uplink._LAYOUTS[length]]
    u32 = st.integers(0, 2**32 - 1) | st.sampled_from(edges)
    node = data.draw(st.integers(1, 2**32 - 1) | st.sampled_from(edges[1:]))
    body = messages.uplink(messages.TELEMETRY, node, data.draw(u32), data.draw(u32),
                           data.draw(u32), data.draw(st.integers(0, 2)), values)
    return node, body, cbor2.dumps(body, canonical=True)


@given(st.sampled_from([5, 6, 7]), st.data())
def test_plain_telemetry_lane_takes_all_valid_telemetry_in_deterministic_encoding(
        length: int, data: st.DataObject) -> None:
    node, body, raw = draw_telemetry(length, data)
    assert uplink.plain_telemetry(raw, node, length) == body
    assert uplink.plain_telemetry(raw, node + 1, length) is None  # another node's body


def test_duplicate_map_keys_are_refused(lamp: SimNode) -> None:
    body = messages.uplink(messages.TELEMETRY, 42, 1, 9, 1767225600, 2, [1, 0, 0, 0, 0, 0])
    raw = cbor2.dumps(body, canonical=True)
    # A 9th entry repeating key 2 (node): cbor2 would keep the last one, the contract refuses.
    doubled = bytes([0xA9]) + raw[1:] + cbor2.dumps(2) + cbor2.dumps(42)
    message = mac.sign(lamp.key, doubled)
    assert uplink.plain_telemetry(doubled, 42, 6) is None
    assert reason(message, lamp.key) == uplink.MALFORMED


@given(st.integers(0, 100), st.integers(0, 5), st.integers(0, 65535) | st.none(),
       st.integers(0, 63))
def test_fast_path_takes_ordinary_telemetry(level: int, source: int, power: int | None,
                                            faults: int) -> None:
    body = messages.uplink(messages.TELEMETRY, 7, 1, 2, 1767225600, 2,
                           [level, source, power, 1234, None, faults])
    assert uplink._plainly_valid_telemetry(body)


@pytest.fixture
def lamp() -> SimNode:
    return SimNode(42, secrets.token_bytes(32))


def reason(payload: bytes, key: bytes, node: int = 42) -> str:
    with pytest.raises(uplink.Rejection) as caught:
        uplink.check_size(payload)
        uplink.open_message(payload, auth.MacKey(key), node)
    return caught.value.reason


def test_refusals_name_their_reason(lamp: SimNode) -> None:
    good = lamp.telemetry()
    body = uplink.open_message(good, auth.MacKey(lamp.key), 42)
    assert body[messages.KEY_DATA] == [80, 0, 412, 123456, 3, 0]
    assert reason(good, secrets.token_bytes(32)) == uplink.BAD_MAC
    assert reason(good[:-1], lamp.key) == uplink.MALFORMED
    assert reason(b"\x00" * 509, lamp.key) == uplink.OVERSIZE
    assert reason(good, lamp.key, node=43) == uplink.TOPIC  # signed by 42's key, body says 42
    bad_level = messages.encode_signed(lamp.key, messages.uplink(
        messages.TELEMETRY, 42, 1, 9, 1767225600, 2, [101, 0, 0, 0, 0, 0]))
    with pytest.raises(uplink.Rejection, match=r"level out of range 0\.\.100") as caught:
        uplink.open_message(bad_level, auth.MacKey(lamp.key), 42)
    assert caught.value.reason == uplink.INVALID


@pytest.mark.parametrize("topic", [
    "citisense/v1/042/up/telemetry", "citisense/v1/0/up/telemetry", "citisense/v2/1/up/event",
    "citisense/v1/1/down/command", "citisense/v1/1/up/telemetry/extra", "elsewhere",
    "citisense/v1/4294967296/up/health",
])
def test_only_uplink_topics_parse(topic: str) -> None:
    with pytest.raises(uplink.Rejection) as caught:
        uplink.parse_topic(topic)
    assert caught.value.reason == uplink.TOPIC


def test_uplink_topic_parses_to_node_and_kind() -> None:
    assert uplink.parse_topic("citisense/v1/4294967295/up/will") == (4294967295, messages.WILL)


def test_rows_use_node_time_only_when_it_is_real(lamp: SimNode) -> None:
    body = messages.uplink(messages.TELEMETRY, 42, 1, 0, 120, messages.TQ_UPTIME, [1] * 6)
    assert uplink.to_row(body, 1767225600.5, "mqtt").at == 1767225600.5
    body[messages.KEY_TQ] = messages.TQ_NTP
    assert uplink.to_row(body, 1767225600.5, "mqtt").at == 120.0


@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**64)), min_size=5, max_size=7))
def test_stored_telemetry_is_json(data: list[int | None]) -> None:
    body = messages.uplink(messages.TELEMETRY, 1, 1, 1, 1, 2, data)
    assert json.loads(uplink.to_row(body, 0.0, "mqtt").data) == data


@given(st.sampled_from([5, 6, 7]), st.data())
def test_a_telemetry_shape_takes_what_its_message_holds_and_unpacks_what_cbor2_decodes(
        length: int, data: st.DataObject) -> None:
    node, body, raw = draw_telemetry(length, data)
    key = secrets.token_bytes(32)
    message = mac.sign(key, raw)
    decoded = (node, body[3], body[4], body[5], body[6], *body[messages.KEY_DATA])
    shape = uplink.telemetry_shape(decoded, len(raw))
    if not 24 <= len(raw) <= 255:  # no fixed COSE head: the long way
        assert shape is None
        return
    assert shape is not None
    assert shape.pattern.fullmatch(message) is not None
    assert auth.MacKey(key).verify_usual(message)
    assert not auth.MacKey(secrets.token_bytes(32)).verify_usual(message)
    assert uplink.shaped_values(shape, message) == decoded
    # Whatever else the shape's pattern takes is plainly valid telemetry, unpacked as cbor2
    # decodes it: each byte of the message changed in turn.
    for pos in range(len(message) - mac.TAG_LENGTH):
        changed = bytearray(message)
        changed[pos] = data.draw(st.integers(0, 255), label=f"byte {pos}")
        if shape.pattern.fullmatch(changed) is None:
            continue
        found, _ = auth.unwrap(bytes(changed))
        value = uplink.plain_telemetry(found, node, length)
        if value is None:  # another node's body
            value = uplink.decode(found, cbor2.loads(found)[messages.KEY_NODE])
        assert uplink.shaped_values(shape, bytes(changed)) == (
            value[2], value[3], value[4], value[5], value[6], *value[7])


def test_telemetry_shapes_are_refused_for_values_out_of_range() -> None:
    # Lighting's level (0..100) as a two-byte number, energy null (not nullable: source).
    assert uplink.telemetry_shape((1000, 1, 30, 1767225600, 2, 300, 0, 0, 0, 0, 0), 40) is None
    assert uplink.telemetry_shape((1000, 1, 30, 1767225600, 2, 80, None, 0, 0, 0, 0), 40) is None
    # Values whose encoding does not fill the body size given.
    assert uplink.telemetry_shape((1000, 1, 30, 1767225600, 2, 80, 0, 0, 0, 0, 0), 60) is None
