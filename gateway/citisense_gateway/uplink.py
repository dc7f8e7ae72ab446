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


def _compile(table: str) -> tuple[tuple[bool, int, int], ...]:
    """(nullable, lo, hi) of each field of a contract table of integer fields, in slot order."""
    entries = messages.fields(table)
    assert [slot for slot, *_ in entries] == list(range(len(entries)))
    return tuple((kind == "n", lo, hi) for _, _, kind, lo, hi, _ in entries)


# Telemetry is nearly all of the traffic: its envelope and layouts, taken from the
# contract's own tables. A body they pass is valid; any other goes to the validator.
_ENVELOPE = {slot: (lo, hi) for slot, _, _, lo, hi, _ in messages.fields(messages.UPLINK_ENVELOPE)}
_NODE_LO, _NODE_HI = _ENVELOPE.pop(messages.KEY_NODE)
_BOOT_LO, _BOOT_HI = _ENVELOPE.pop(messages.KEY_BOOT)
_SEQ_LO, _SEQ_HI = _ENVELOPE.pop(messages.KEY_SEQ)
_TS_LO, _TS_HI = _ENVELOPE.pop(messages.KEY_TS)
_TQ_LO, _TQ_HI = _ENVELOPE.pop(messages.KEY_TQ)
assert not _ENVELOPE, "an envelope field the telemetry fast path does not check"
_LAYOUTS = {
    length: _compile(messages.TELEMETRY_FIELDS[role])
    for length, role in messages.ROLE_BY_LENGTH.items()
}
_MAP_OF_8 = 0xA8  # CBOR head of the 8-entry envelope map
# The fast path reads the envelope by these keys as literals.
assert tuple(range(8)) == (messages.KEY_VERSION, messages.KEY_KIND, messages.KEY_NODE,
                           messages.KEY_BOOT, messages.KEY_SEQ, messages.KEY_TS, messages.KEY_TQ,
                           messages.KEY_DATA)


def _plainly_valid_telemetry(body: dict[Any, Any]) -> bool:
    if len(body) != 8:
        return False
    for key in body:
        if type(key) is not int:  # false, true and 1.0 equal 0 and 1 in Python
            return False
    get = body.get
    version, kind, node, boot = get(0), get(1), get(2), get(3)
    seq, ts, tq, data = get(4), get(5), get(6), get(7)
    if not (type(version) is type(kind) is type(node) is type(boot) is type(seq) is type(ts)
            is type(tq) is int and version == messages.VERSION and kind == messages.TELEMETRY
            and _NODE_LO <= node <= _NODE_HI and _BOOT_LO <= boot <= _BOOT_HI
            and _SEQ_LO <= seq <= _SEQ_HI and _TS_LO <= ts <= _TS_HI and _TQ_LO <= tq <= _TQ_HI
            and type(data) is list):
        return False
    layout = _LAYOUTS.get(len(data))
    if layout is None:
        return False
    for i, (nullable, lo, hi) in enumerate(layout):
        value = data[i]
        if value is None:
            if not nullable:
                return False
        elif type(value) is not int or not lo <= value <= hi:
            return False
    return True


def plain_telemetry(body: bytes, node: int, length: int) -> dict[int, Any] | None:
    """The decoded `body` if it is plainly valid telemetry from `node` with a data array of
    `length` items (its role's); None for anything else, which decode() then judges.

    cbor2 keeps the last of duplicate map keys, which the contract refuses: the body's first
    byte must announce the 8 entries the decoded map has.
    """
    if not body or body[0] != _MAP_OF_8:
        return None
    try:
        value = cbor2.loads(body)
    except Exception:  # cbor2 raises many types on bad input
        return None
    if (type(value) is dict and _plainly_valid_telemetry(value)
            and value[messages.KEY_NODE] == node and len(value[messages.KEY_DATA]) == length):
        return value
    return None


def validate(body: bytes) -> dict[int, Any]:
    """The decoded `body` if it follows the catalogue; DecodeError or MessageError if not.

    cbor2 (C speed) decodes, duplicate map keys refused; whatever it cannot read goes to the
    contract's decoder for the precise error.
    """
    try:
        value = cbor2.loads(body, allow_duplicate_keys=False)
    except Exception:  # cbor2 raises many types on bad input; the contract decoder explains
        value = None
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


def authenticate(payload: bytes, key: auth.MacKey, node: int) -> bytes:
    """The body of `payload` if `key` (node's) made its tag."""
    try:
        body = key.open(payload)
    except DecodeError as err:
        raise Rejection(MALFORMED, str(err), node) from err
    if body is None:
        raise Rejection(BAD_MAC, "MAC tag mismatch", node)
    return body


def decode(body: bytes, node: int) -> dict[int, Any]:
    """The validated uplink body of an authenticated message from `node`."""
    try:
        decoded = validate(body)
    except DecodeError as err:
        raise Rejection(MALFORMED, str(err), node) from err
    except WireError as err:
        raise Rejection(INVALID, str(err), node) from err
    if decoded[messages.KEY_KIND] not in UPLINK_KINDS:
        raise Rejection(INVALID, "a downlink kind on the uplink", node)
    if decoded[messages.KEY_NODE] != node:
        raise Rejection(TOPIC, f"body node {decoded[messages.KEY_NODE]} is not {node}", node)
    return decoded


def open_message(payload: bytes, key: auth.MacKey, node: int) -> dict[int, Any]:
    """The validated uplink body of an authentic message from `node`."""
    return decode(authenticate(payload, key, node), node)


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
    # tuple.__new__: a NamedTuple's own __new__ is a Python call, paid per message here.
    return tuple.__new__(UplinkRow, (
        body[messages.KEY_NODE], body[messages.KEY_BOOT], body[messages.KEY_SEQ], kind, ts, tq,
        float(ts) if tq != messages.TQ_UPTIME else received_at, received_at, text, source))
