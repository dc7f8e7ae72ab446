"""Pure checks that turn a received payload into a validated uplink body, or a Rejection.

Order (protocols/SPEC.md, counters and replay): size, topic, key, tag, body, topic
match; the ingest pipeline then asks "already stored?" and the replay window. Bodies are
decoded with cbor2 (C speed) only after their tag verified; any body cbor2 cannot turn
into a map goes to the contract's own decoder for the precise error.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import cbor2

from citisense_gateway import auth
from citisense_gateway.store.base import UplinkRow
from citisense_protocols import catalogue, cbor, framing, messages, topics
from citisense_protocols.errors import DecodeError, MessageError, WireError

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
    entries = catalogue.fields(table)
    assert [slot for slot, *_ in entries] == list(range(len(entries)))
    return tuple((kind == "n", lo, hi) for _, _, kind, lo, hi, _ in entries)


# Telemetry is nearly all of the traffic: its envelope and layouts, taken from the
# contract's own tables. A body they pass is valid; any other goes to the validator.
_ENVELOPE = {
    slot: (lo, hi) for slot, _, _, lo, hi, _ in catalogue.fields(catalogue.UPLINK_ENVELOPE)
}
_NODE_LO, _NODE_HI = _ENVELOPE.pop(messages.KEY_NODE)
_BOOT_LO, _BOOT_HI = _ENVELOPE.pop(messages.KEY_BOOT)
_SEQ_LO, _SEQ_HI = _ENVELOPE.pop(messages.KEY_SEQ)
_TS_LO, _TS_HI = _ENVELOPE.pop(messages.KEY_TS)
_TQ_LO, _TQ_HI = _ENVELOPE.pop(messages.KEY_TQ)
assert not _ENVELOPE, "an envelope field the telemetry fast path does not check"
_LAYOUTS = {
    length: _compile(catalogue.TELEMETRY_FIELDS[role])
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


# The same tables compiled once more, to a pattern of the bytes: telemetry in the
# deterministic encoding with every value in its range. One match (C speed) checks a whole
# body; cbor2 then only turns it into values.
_ANY = b"[\\x00-\\xff]"


def _byte_range(lo: int, hi: int) -> bytes:
    if lo == hi:
        return b"\\x%02x" % lo
    return b"[\\x%02x-\\x%02x]" % (lo, hi)


def _span_pattern(lo: int, hi: int, width: int) -> bytes:
    """Big-endian numbers of `width` bytes from lo to hi."""
    if width == 1:
        return _byte_range(lo, hi)
    shift = 8 * (width - 1)
    rest = (1 << shift) - 1
    top_lo, top_hi = lo >> shift, hi >> shift
    if top_lo == top_hi:
        return _byte_range(top_lo, top_lo) + _span_pattern(lo & rest, hi & rest, width - 1)
    parts = []
    if lo & rest:
        parts.append(_byte_range(top_lo, top_lo) + _span_pattern(lo & rest, rest, width - 1))
        top_lo += 1
    tail = b""
    if hi & rest != rest:
        tail = _byte_range(top_hi, top_hi) + _span_pattern(0, hi & rest, width - 1)
        top_hi -= 1
    if top_lo <= top_hi:
        parts.append(_byte_range(top_lo, top_hi) + _ANY + b"{%d}" % (width - 1))
    if tail:
        parts.append(tail)
    return b"(?:" + b"|".join(parts) + b")"


def _argument_options(major: int, lo: int, hi: int) -> dict[int, bytes]:
    """Heads of CBOR major type `major` whose shortest-form argument is in lo..hi, by the
    width of the argument after the head byte (0: in the head)."""
    out = {}
    for head, width, first, last in ((-1, 0, 0, 23), (24, 1, 24, 0xFF), (25, 2, 0x100, 0xFFFF),
                                     (26, 4, 0x10000, 0xFFFFFFFF)):
        a, b = max(lo, first), min(hi, last)
        if a > b:
            continue
        if width == 0:
            out[width] = _byte_range(major << 5 | a, major << 5 | b)
        else:
            out[width] = (_byte_range(major << 5 | head, major << 5 | head)
                          + _span_pattern(a, b, width))
    assert hi <= 0xFFFFFFFF, "a range the pattern does not cover"
    return out


def _argument_pattern(major: int, lo: int, hi: int) -> list[bytes]:
    """Heads of CBOR major type `major` whose shortest-form argument is in lo..hi."""
    return list(_argument_options(major, lo, hi).values())


def _value_pattern(nullable: bool, lo: int, hi: int) -> bytes:
    """An integer from lo to hi in its shortest form, or null if nullable."""
    options = [b"\\xf6"] if nullable else []
    if hi >= 0:
        options += _argument_pattern(0, max(lo, 0), hi)
    if lo < 0:
        options += _argument_pattern(1, -1 - min(hi, -1), -1 - lo)
    return b"(?:" + b"|".join(options) + b")"


_HEAD = [_MAP_OF_8, 0, messages.VERSION, 1, messages.TELEMETRY]
assert all(v < 24 for v in _HEAD[2:]), "not one-byte values"
_ENVELOPE_FIELDS = ((messages.KEY_NODE, _NODE_LO, _NODE_HI),
                    (messages.KEY_BOOT, _BOOT_LO, _BOOT_HI), (messages.KEY_SEQ, _SEQ_LO, _SEQ_HI),
                    (messages.KEY_TS, _TS_LO, _TS_HI), (messages.KEY_TQ, _TQ_LO, _TQ_HI))


def _telemetry_pattern(layout: tuple[tuple[bool, int, int], ...]) -> re.Pattern[bytes]:
    pattern = b"".join(_byte_range(b, b) for b in _HEAD)
    for key, lo, hi in _ENVELOPE_FIELDS:
        pattern += _byte_range(key, key) + _value_pattern(False, lo, hi)
    pattern += _byte_range(messages.KEY_DATA, messages.KEY_DATA)
    pattern += _byte_range(0x80 | len(layout), 0x80 | len(layout))
    pattern += b"".join(_value_pattern(*field) for field in layout)
    return re.compile(pattern)


_TELEMETRY_PATTERNS = {length: _telemetry_pattern(layout) for length, layout in _LAYOUTS.items()}


def telemetry_pattern(length: int) -> re.Pattern[bytes]:
    """The pattern of plainly valid telemetry with a data array of `length` items."""
    return _TELEMETRY_PATTERNS[length]


# Telemetry of one shape: each value's head of one width, so that every field lies at a
# fixed offset. The ingest lane learns the shapes of each node's telemetry from messages it
# decoded the long way; a message of a known shape is then checked by one match of its
# whole COSE_Mac0 and its values unpacked at once (struct), without cbor2. A shape's
# pattern is the telemetry pattern with one option kept per value: it takes nothing the
# telemetry pattern refuses, and the values it unpacks are the ones cbor2 decodes.
_NULL, _NEGATIVE_IN_HEAD, _NEGATIVE = 1, 2, 3  # how an unpacked number becomes the value
_CODES = {0: "B", 1: "xB", 2: "xH", 4: "xI"}  # struct code of an argument, head included
_SHAPE_CACHE = 4096  # shapes compiled, whichever nodes use them


class Shape(NamedTuple):
    """One shape of plainly valid telemetry, its message in the canonical COSE_Mac0 layout."""

    pattern: re.Pattern[bytes]  # the whole message
    unpack: Callable[[bytes], tuple[Any, ...]]  # node, boot, seq, ts, tq, data items...
    fixes: tuple[tuple[int, int], ...]  # (index, how): values unpack does not give as such


def _shape_key(values: tuple[int | None, ...]) -> tuple[int, ...]:
    """(major type, argument width) of each value, as one number; -1 for null."""
    key = []
    for value in values:
        if value is None:
            key.append(-1)
        else:
            major, n = (0, value) if value >= 0 else (1, -1 - value)
            key.append(major << 3 | (0 if n < 24 else 1 if n < 0x100 else 2 if n < 0x10000
                                     else 4))
    return tuple(key)


_SHAPES: dict[tuple[int, ...], Shape | None] = {}


def telemetry_shape(values: tuple[int | None, ...], body_size: int) -> Shape | None:
    """The shape of plainly valid telemetry with these values (node, boot, seq, ts, tq, then
    its data) and a body of body_size bytes; None where the COSE layout has no fixed head
    (a body below 24 or above 255 bytes: those take the long way)."""
    if not 24 <= body_size <= 0xFF:
        return None
    key = (body_size, *_shape_key(values))
    shape = _SHAPES.get(key)
    if shape is None and key not in _SHAPES:
        shape = _SHAPES[key] = _compile_shape(key[1:], body_size)
        if len(_SHAPES) > _SHAPE_CACHE:
            _SHAPES.clear()
    return shape


def _compile_shape(key: tuple[int, ...], body_size: int) -> Shape | None:
    layout = _LAYOUTS[len(key) - len(_ENVELOPE_FIELDS)]
    ranges = [(False, lo, hi) for _, lo, hi in _ENVELOPE_FIELDS] + list(layout)
    pattern = b"".join(_byte_range(b, b) for b in _HEAD)
    code = "x" * len(_HEAD)
    fixes = []
    for i, (shape, (nullable, lo, hi)) in enumerate(zip(key, ranges, strict=True)):
        if i < len(_ENVELOPE_FIELDS):
            before = [_ENVELOPE_FIELDS[i][0]]  # its key
        elif i == len(_ENVELOPE_FIELDS):
            before = [messages.KEY_DATA, 0x80 | len(layout)]  # the data's key and array head
        else:
            before = []
        for b in before:
            pattern += _byte_range(b, b)
            code += "x"
        if shape < 0:
            if not nullable:
                return None
            pattern += b"\\xf6"
            code += "B"
            fixes.append((i, _NULL))
            continue
        major, width = shape >> 3, shape & 7
        options = (_argument_options(0, max(lo, 0), hi) if major == 0 else
                   _argument_options(1, -1 - min(hi, -1), -1 - lo) if lo < 0 else {})
        if width not in options:
            return None
        pattern += options[width]
        code += _CODES[width]
        if major:
            fixes.append((i, _NEGATIVE_IN_HEAD if width == 0 else _NEGATIVE))
    unpack = struct.Struct(">" + "x" * auth.USUAL_HEAD + code + "x" * auth.USUAL_TAIL)
    if unpack.size != auth.USUAL_HEAD + body_size + auth.USUAL_TAIL:
        return None  # values that do not fill the body: no message has this shape
    return Shape(re.compile(auth.usual_pattern(body_size, pattern)), unpack.unpack,
                 tuple(fixes))


def shaped_values(shape: Shape, message: bytes) -> tuple[Any, ...]:
    """The values of a message that shape.pattern matched: node, boot, seq, ts, tq, data..."""
    values = shape.unpack(message)
    if not shape.fixes:
        return values
    out = list(values)
    for i, how in shape.fixes:
        out[i] = (None if how == _NULL else 0x1F - out[i] if how == _NEGATIVE_IN_HEAD
                  else -1 - out[i])
    return tuple(out)


def plain_telemetry(body: bytes, node: int, length: int) -> dict[int, Any] | None:
    """The decoded `body` if it is plainly valid telemetry from `node` with a data array of
    `length` items (its role's); None for anything else, which decode() then judges.

    Plainly valid: the deterministic encoding (map keys 0 to 7 in order, shortest integer
    heads) with every value in its range. Any other body, valid or not, goes the long way.
    """
    pattern = _TELEMETRY_PATTERNS.get(length)
    if pattern is None or pattern.fullmatch(body) is None:
        return None
    value: dict[int, Any] = cbor2.loads(body)
    return value if value[messages.KEY_NODE] == node else None


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
    return catalogue.decode_body(value if type(value) is dict else body)


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
