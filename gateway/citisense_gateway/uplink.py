"""Pure checks that turn a received payload into a validated uplink body, or a Rejection.

Order (protocols/SPEC.md, counters and replay): size, topic, key, tag, body, topic
match; the ingest pipeline then asks "already stored?" and the replay window. Bodies are
decoded with cbor2 (C speed) only after their tag verified; any body cbor2 cannot turn
into a map goes to the contract's own decoder for the precise error.
"""

from __future__ import annotations

import json
from typing import Any

import cbor2

from citisense_gateway import auth
from citisense_gateway.store.base import UplinkRow
from citisense_protocols import cbor, framing, messages, topics
from citisense_protocols.errors import DecodeError, WireError
from citisense_protocols.messages import MessageError

# Rejection reasons: the `reason` label of citisense_ingest_rejected_total.
OVERSIZE = "oversize"
TOPIC = "topic"
UNKNOWN_NODE = "unknown-node"
MALFORMED = "malformed"
BAD_MAC = "bad-mac"
INVALID = "invalid"
REPLAY = "replay"
REASONS = (OVERSIZE, TOPIC, UNKNOWN_NODE, MALFORMED, BAD_MAC, INVALID, REPLAY)

UPLINK_KINDS = (messages.BIRTH, messages.TELEMETRY, messages.EVENT, messages.HEALTH,
                messages.ACK, messages.WILL)


def _compile(table: str) -> tuple[tuple[int, bool, int, int], ...]:
    """(slot, nullable, lo, hi) of a contract field table of integer fields."""
    return tuple((slot, kind == "n", lo, hi) for slot, _, kind, lo, hi, _ in messages.fields(table))


# Telemetry is nearly all of the traffic: its envelope and layouts, compiled from the
# contract's own tables. A body they pass is valid; any other goes to the validator.
_ENVELOPE = _compile(messages.UPLINK_ENVELOPE)
_LAYOUTS = {
    length: _compile(messages.TELEMETRY_FIELDS[role])
    for length, role in messages.ROLE_BY_LENGTH.items()
}


def _plainly_valid_telemetry(body: dict[Any, Any]) -> bool:
    if len(body) != 8:
        return False
    for key in body:
        if type(key) is not int:
            return False
    try:
        version, kind, data = body[messages.KEY_VERSION], body[messages.KEY_KIND], body[
            messages.KEY_DATA]
    except KeyError:
        return False
    if version != messages.VERSION or kind != messages.TELEMETRY or type(data) is not list:
        return False
    for slot, _, lo, hi in _ENVELOPE:
        value = body.get(slot)
        if type(value) is not int or value < lo or value > hi:
            return False
    layout = _LAYOUTS.get(len(data))
    if layout is None:
        return False
    for (_, nullable, lo, hi), value in zip(layout, data, strict=True):
        if value is None:
            if not nullable:
                return False
        elif type(value) is not int or value < lo or value > hi:
            return False
    return True


def validate(value: object, body: bytes) -> dict[int, Any]:
    """The checked body: `value` is cbor2's decoding of `body` (None if it failed)."""
    if type(value) is dict and _plainly_valid_telemetry(value):
        return value
    return messages.decode_body(value if type(value) is dict else body)


class Rejection(Exception):
    """Why a payload is not stored; detail is safe to log (bounded, no payload bytes)."""

    def __init__(self, reason: str, detail: str, node_id: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:200]
        self.node_id = node_id


def check_size(payload: bytes) -> None:
    if len(payload) > framing.MAX_MESSAGE:
        raise Rejection(OVERSIZE, f"{len(payload)} bytes, limit {framing.MAX_MESSAGE}")


_TOPICS: dict[str, tuple[int, int]] = {}  # valid uplink topic -> (node, kind)
_TOPIC_CACHE = 100_000  # a fleet has six uplink topics per node


def parse_topic(topic: str) -> tuple[int, int]:
    """(node, kind) of an uplink topic."""
    found = _TOPICS.get(topic)
    if found is not None:
        return found
    try:
        node, kind = topics.parse(topic)
    except MessageError as err:
        raise Rejection(TOPIC, str(err)) from err
    if kind not in UPLINK_KINDS:
        raise Rejection(TOPIC, "not an uplink topic", node)
    if len(_TOPICS) >= _TOPIC_CACHE:
        _TOPICS.clear()
    _TOPICS[topic] = (node, kind)
    return node, kind


def body_node(payload: bytes) -> int:
    """The node id claimed by a still unverified message (serial links): only to pick a key."""
    try:
        body, _ = auth.unwrap(payload)
        value = cbor.loads(body, max_depth=messages.MAX_DEPTH, max_items=messages.MAX_ITEMS,
                           max_size=framing.MAX_MESSAGE)
    except DecodeError as err:
        raise Rejection(MALFORMED, str(err)) from err
    node = value.get(messages.KEY_NODE) if isinstance(value, dict) else None
    if type(node) is not int or not 1 <= node <= messages.U32:
        raise Rejection(MALFORMED, "no node id in the body")
    return node


def open_message(payload: bytes, key: auth.MacKey, node: int) -> dict[int, Any]:
    """The validated uplink body of an authentic message from `node`."""
    try:
        body, tag = auth.unwrap(payload)
    except DecodeError as err:
        raise Rejection(MALFORMED, str(err), node) from err
    if not key.check(body, tag):
        raise Rejection(BAD_MAC, "MAC tag mismatch", node)
    try:
        value = cbor2.loads(body)
    except Exception:  # cbor2 raises many types on bad input; the contract decoder explains
        value = None
    try:
        decoded = validate(value, body)
    except DecodeError as err:
        raise Rejection(MALFORMED, str(err), node) from err
    except WireError as err:
        raise Rejection(INVALID, str(err), node) from err
    if decoded[messages.KEY_KIND] not in UPLINK_KINDS:
        raise Rejection(INVALID, "a downlink kind on the uplink", node)
    if decoded[messages.KEY_NODE] != node:
        raise Rejection(TOPIC, f"body node {decoded[messages.KEY_NODE]} is not {node}", node)
    return decoded


def check_kind(topic_kind: int, body: dict[int, Any]) -> None:
    """The body's kind must be the topic's (its node was checked by open_message)."""
    if body[messages.KEY_KIND] != topic_kind:
        raise Rejection(
            TOPIC, f"body kind does not match topic kind {topic_kind}", body[messages.KEY_NODE]
        )


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


data_json = json.JSONEncoder(separators=(",", ":"), default=_jsonable).encode


def to_row(body: dict[int, Any], received_at: float, source: str) -> UplinkRow:
    ts = body[messages.KEY_TS]
    tq = body[messages.KEY_TQ]
    kind = body[messages.KEY_KIND]
    data = body[messages.KEY_DATA]
    # Validated telemetry holds only integers and nulls: its repr is nearly JSON already.
    text = (repr(data).replace(" ", "").replace("None", "null") if kind == messages.TELEMETRY
            else data_json(data))
    return UplinkRow(body[messages.KEY_NODE], body[messages.KEY_BOOT], body[messages.KEY_SEQ],
                     kind, ts, tq, float(ts) if tq != messages.TQ_UPTIME else received_at,
                     received_at, text, source)
