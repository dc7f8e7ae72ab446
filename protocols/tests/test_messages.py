"""The message layer: builders, the validator and its errors, on CPython and MicroPython.

Valid messages are generated from the whole catalogue and must encode deterministically,
validate against messages.cddl and decode back equal; invalid values must be refused
with a reason naming the field and its rule.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from pathlib import Path
from typing import Any

import cbor2
import pycddl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from citisense_boards.mpvm import MicroPythonVM
from citisense_protocols import catalogue as c
from citisense_protocols import cbor, mac
from citisense_protocols import messages as m
from citisense_protocols.errors import DecodeError, WireError
from citisense_protocols.messages import MessageError
from citisense_tools import wire_sizes

KEY = bytes(range(100, 132))  # test-only key
U32 = m.U32

CDDL = (Path(__file__).resolve().parents[1] / "messages.cddl").read_text(encoding="utf-8")
# pycddl takes the first rule as root; `.cbor` inside an array is mis-validated by
# pycddl 0.6, so the payload is checked against `body` on its own.
BODY_SCHEMA = pycddl.Schema("citisense-body = body\n" + CDDL)
COSE_SCHEMA = pycddl.Schema("citisense-message = message\n"
                            + CDDL.replace("payload: bstr .cbor body", "payload: bstr"))

# ---- strategies: every valid message ----


def field(kind: str, lo: int, hi: int) -> st.SearchStrategy[Any]:
    if kind == "i":
        return st.integers(lo, hi)
    if kind == "n":
        return st.none() | st.integers(lo, hi)
    if kind == "t":
        return st.text(max_size=hi).filter(lambda s: lo <= len(s.encode()) <= hi)
    assert kind == "b"
    return st.binary(min_size=lo, max_size=hi)


def array(table: str) -> st.SearchStrategy[list[Any]]:
    return st.tuples(*(field(kind, lo, hi) for _, _, kind, lo, hi, _ in c.fields(table))).map(list)


def mapping(table: str, special: dict[int, st.SearchStrategy[Any]] | None = None
            ) -> st.SearchStrategy[dict[int, Any]]:
    special = special or {}
    entries = c.fields(table)
    strategies = {key: special[key] if key in special else field(kind, lo, hi)
                  for key, _, kind, lo, hi, _ in entries}
    required = {key: strategies[key] for key, *_, req in entries if req}
    optional = {key: strategies[key] for key, *_, req in entries if not req}
    return st.fixed_dictionaries(required, optional=optional)


dates = st.dates(datetime.date(2000, 1, 1), datetime.date(9999, 12, 31)).map(
    lambda d: d.year * 10000 + d.month * 100 + d.day
)
steps = st.lists(
    st.integers(0, 2).flatmap(lambda anchor: st.tuples(
        st.just(anchor), st.integers(*c.STEP_OFFSETS[anchor]), st.integers(0, 100)
    ).map(list)),
    min_size=1, max_size=m.MAX_STEPS,
)
exceptions = st.lists(
    st.tuples(st.lists(dates, min_size=2, max_size=2).map(sorted), st.integers(1, 127),
              st.integers(0, 255), steps).map(lambda t: [*t[0], t[1], t[2], t[3]]),
    min_size=1, max_size=m.MAX_EXCEPTIONS,
)
tz = st.lists(st.integers(0, U32), min_size=1, max_size=m.MAX_TZ, unique=True).flatmap(
    lambda starts: st.tuples(*(st.tuples(st.just(s), st.integers(-720, 840)).map(list)
                               for s in sorted(starts))).map(list)
)
schedules = mapping(c.SCHEDULE_FIELDS, {1: steps, 2: exceptions, 3: tz})
settings_maps = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,23}", fullmatch=True),
    st.one_of(st.integers(-(2**31), U32), field("t", 0, 64), st.booleans(), st.none()),
    min_size=1, max_size=c.MAX_CONFIG,
)
reservations = st.integers(0, U32 - 1).flatmap(
    lambda start: st.tuples(st.just(start), st.integers(start + 1, U32)).map(list)
)
events = st.sampled_from(c.fields(c.EVENT_DETAILS)).flatmap(
    lambda detail: st.tuples(st.just(detail[0]), field(*detail[2:5])).map(list)
)
DATA: dict[int, st.SearchStrategy[Any]] = {
    m.BIRTH: mapping(c.BIRTH_FIELDS, {5: st.none() | array(c.LOCATION_FIELDS)}),
    m.TELEMETRY: st.sampled_from(c.TELEMETRY_FIELDS[1:]).flatmap(array),
    m.EVENT: events,
    m.HEALTH: mapping(c.HEALTH_FIELDS),
    m.ACK: array(c.ACK_FIELDS),
    m.WILL: st.none(),
}


def args(op: int) -> st.SearchStrategy[Any]:
    _, shape, table = c.OPS[op]
    if op == m.OP_SCHEDULE:
        return schedules
    if op == m.OP_SET_CONFIG:
        return settings_maps
    if op == m.OP_RESERVE:
        return reservations
    if shape == c.NO_ARGS:
        return st.none()
    if shape == c.VALUE:
        return field(*c.fields(table)[0][2:5])
    return array(table)


nodes = st.integers(1, U32)
u32 = st.integers(0, U32)
uplinks = st.sampled_from(sorted(DATA)).flatmap(
    lambda kind: st.builds(m.uplink, st.just(kind), nodes, u32, u32, u32, st.integers(0, 2),
                           DATA[kind])
)
commands = st.integers(1, len(c.OPS) - 1).flatmap(
    lambda op: st.builds(m.command, nodes, u32, u32, st.integers(0, m.U64), st.just(op), args(op))
)
uplink_acks = st.builds(m.uplink_ack, nodes, st.integers(0, m.U64), u32, u32)
bodies = st.one_of(uplinks, commands, uplink_acks)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_valid_message_encodes_validates_and_decodes_back_equal(body: dict[int, Any]) -> None:
    encoded = cbor.dumps(body)
    assert encoded == cbor2.dumps(body, canonical=True)
    try:
        message = m.encode_signed(KEY, body)
    except MessageError as error:  # a set_config of many long settings
        assert len(mac.sign(KEY, encoded)) > m.MAX_MESSAGE, error
        assume(False)
        raise
    COSE_SCHEMA.validate_cbor(message)
    BODY_SCHEMA.validate_cbor(encoded)
    assert m.decode_signed(KEY, message) == body
    assert c.decode_body(body) is body


def test_every_kind_is_generated() -> None:
    """The generators above cover the whole catalogue (commands: every opcode by range)."""
    assert set(DATA) | {m.COMMAND, m.UPLINK_ACK} == set(m.KIND_NAMES)


# ---- invalid values: precise reasons ----


def base_bodies() -> dict[str, dict[int, Any]]:
    """One valid body per field table, taken from the SPEC examples."""
    by_name = {example.name: example.body for example in wire_sizes.EXAMPLES}
    return {
        "telemetry-lighting": by_name["telemetry-lighting"],
        "telemetry-parking": by_name["telemetry-parking"],
        "telemetry-air": by_name["telemetry-air"],
        "birth": by_name["birth-lighting"],
        "health": by_name["health"],
        "ack": by_name["ack"],
        "uplink-ack": by_name["uplink-ack"],
        "dim": by_name["command-dim"],
        "reserve": by_name["command-reserve"],
        "app_update": by_name["command-app-update"],
        "recalibrate": by_name["command-recalibrate"],
        "identify": by_name["command-identify"],
        "time_sync": by_name["command-time-sync"],
    }


# (table, where in the reason, fields, how to put a value into a body)
def _set_array(index: int) -> Any:
    def put(body: dict[int, Any], value: Any) -> None:
        body[m.KEY_DATA][index] = value
    return put


def _set_map(key: int) -> Any:
    def put(body: dict[int, Any], value: Any) -> None:
        body[m.KEY_DATA][key] = value
    return put


def _set_envelope(key: int) -> Any:
    def put(body: dict[int, Any], value: Any) -> None:
        body[key] = value
    return put


def _set_value(body: dict[int, Any], value: Any) -> None:
    body[m.KEY_DATA] = value


TARGETS: list[tuple[str, str, str, str, int, int, Any]] = []
for _role, _table in ((m.LIGHTING, "lighting"), (m.PARKING, "parking"), (m.AIR, "air")):
    for _i, _name, _kind, _lo, _hi, _ in c.fields(c.TELEMETRY_FIELDS[_role]):
        TARGETS.append((f"telemetry-{_table}", "telemetry", _name, _kind, _lo, _hi,
                        _set_array(_i)))
for _table, _fields in (("birth", c.BIRTH_FIELDS), ("health", c.HEALTH_FIELDS)):
    for _key, _name, _kind, _lo, _hi, _ in c.fields(_fields):
        if _kind != "x":
            TARGETS.append((_table, _table, _name, _kind, _lo, _hi, _set_map(_key)))
for _table, _fields in (("ack", c.ACK_FIELDS), ("uplink-ack", c.UPLINK_ACK_FIELDS)):
    for _i, _name, _kind, _lo, _hi, _ in c.fields(_fields):
        TARGETS.append((_table, _table, _name, _kind, _lo, _hi, _set_array(_i)))
for _op in (m.OP_DIM, m.OP_RESERVE, m.OP_APP_UPDATE):
    _opname = c.OPS[_op][0]
    for _i, _name, _kind, _lo, _hi, _ in c.fields(c.OPS[_op][2]):
        TARGETS.append((_opname, f"{_opname} command", _name, _kind, _lo, _hi, _set_array(_i)))
for _op in (m.OP_RECALIBRATE, m.OP_IDENTIFY, m.OP_TIME_SYNC):
    _opname = c.OPS[_op][0]
    ((_slot, _name, _kind, _lo, _hi, _required),) = c.fields(c.OPS[_op][2])
    TARGETS.append((_opname, f"{_opname} command", _name, _kind, _lo, _hi, _set_value))
for _key, _name, _kind, _lo, _hi, _ in c.fields(c.UPLINK_ENVELOPE):
    TARGETS.append(("telemetry-air", "envelope", _name, _kind, _lo, _hi, _set_envelope(_key)))
for _key, _name, _kind, _lo, _hi, _ in c.fields(c.COMMAND_ENVELOPE):
    if _name != "op":  # another op changes which args are expected
        TARGETS.append(("dim", "envelope", _name, _kind, _lo, _hi, _set_envelope(_key)))

BASES = base_bodies()


def copy(body: dict[int, Any]) -> dict[int, Any]:
    return {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
            for k, v in body.items()}


def reason_of(body: Any) -> tuple[str, int]:
    with pytest.raises(MessageError) as caught:
        c.decode_body(body)
    return caught.value.reason, caught.value.result


def bad_value(kind: str, lo: int, hi: int) -> st.SearchStrategy[tuple[Any, str]]:
    """A wrong value for a field and the problem the validator must state."""
    if kind in "in":
        wrong_type = "must be an integer" + (" or null" if kind == "n" else "")
        others: st.SearchStrategy[Any] = st.one_of(
            st.text(max_size=3), st.floats(), st.booleans(), st.binary(max_size=3),
            st.lists(st.integers(), max_size=2))
        if kind == "i":
            others = others | st.none()
        return (
            st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1)).map(
                lambda v: (v, f"out of range {lo}..{hi}"))
            | others.map(lambda v: (v, wrong_type))
        )
    size = f"{lo}" if lo == hi else f"{lo}..{hi}"
    if kind == "t":
        long_text = st.text(min_size=hi + 1, max_size=hi + 4)
        return (long_text | st.just("") if lo else long_text).filter(
            lambda s: not lo <= len(s.encode()) <= hi).map(
            lambda v: (v, f"must be text of {lo}..{hi} bytes")) | st.binary(max_size=3).map(
            lambda v: (v, f"must be text of {lo}..{hi} bytes"))
    return (st.binary(max_size=64).filter(lambda b: not lo <= len(b) <= hi)
            | st.text(max_size=3)).map(lambda v: (v, f"must be a byte string of {size} bytes"))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_bad_field_value_is_refused_naming_the_field(data: st.DataObject) -> None:
    table, where, name, kind, lo, hi, put = data.draw(st.sampled_from(TARGETS), label="field")
    value, problem = data.draw(bad_value(kind, lo, hi), label="value")
    body = copy(BASES[table])
    put(body, value)
    reason, result = reason_of(body)
    assert reason == f"{where} field {name} {problem}"
    assert result == (m.BAD_ARGS if where.endswith(" command") else -1)
    # The same through CBOR, when the value can be encoded as the contract's CBOR within
    # the message size limit (a longer body is refused for its size before its fields).
    encoded = b"" if isinstance(value, float) else cbor.dumps(body)
    if encoded and len(encoded) <= m.MAX_MESSAGE:
        with pytest.raises(MessageError, match="^" + reason.replace(".", r"\.") + "$"):
            c.decode_body(encoded)


def test_reason_for_pm25_reads_as_documented() -> None:
    body = copy(BASES["telemetry-air"])
    body[m.KEY_DATA][0] = 10001
    assert reason_of(body) == ("telemetry field pm25 out of range 0..10000", -1)
    with pytest.raises(MessageError) as caught:
        c.decode_body(cbor.dumps(body))
    assert str(caught.value) == "telemetry field pm25 out of range 0..10000"


def _with(name: str, change: Any) -> dict[int, Any]:
    body = copy(next(e.body for e in wire_sizes.EXAMPLES if e.name == name))
    change(body)
    return body


def _schedule(change: Any) -> dict[int, Any]:
    body = _with("command-schedule", lambda b: None)
    schedule = json.loads(json.dumps(body[m.KEY_DATA]))  # deep copy; keys become text
    schedule = {int(k): v for k, v in schedule.items()}
    change(schedule)
    body[m.KEY_DATA] = schedule
    return body


STRUCTURE_CASES: list[tuple[str, Any, str, int]] = [
    ("not a map", [1, 2], "body must be a map", -1),
    ("version 2", _with("will", lambda b: b.update({0: 2})), "unsupported protocol version 2", -1),
    ("no version", _with("will", lambda b: b.pop(0)),
     "unsupported protocol version of type NoneType", -1),
    ("kind 7", _with("will", lambda b: b.update({1: 7})), "unknown kind 7", -1),
    ("kind as text", _with("will", lambda b: b.update({1: "will"})), "unknown kind of type str",
     -1),
    ("no data", _with("will", lambda b: b.pop(7)), "envelope field data is missing", -1),
    ("no seq", _with("will", lambda b: b.pop(4)), "envelope field seq is missing", -1),
    ("extra key", _with("will", lambda b: b.update({12: 0})), "envelope has unknown key 12", -1),
    ("text key", _with("will", lambda b: b.update({"x": 0})),
     "envelope has unknown key of type str", -1),
    ("true for kind", {k if k != 1 else True: v for k, v in _with("will", lambda b: None).items()},
     "envelope has unknown key of type bool", -1),
    ("float key in birth", _with("birth-lighting", lambda b: b.update({7: {
        (float(k) if k == 4 else k): v for k, v in b[7].items()}})),
     "birth has unknown key of type float", -1),
    ("command key on uplink", _with("will", lambda b: b.update({8: 1})),
     "envelope has unknown key 8", -1),
    ("uplink key on command", _with("command-dim", lambda b: b.update({3: 1})),
     "envelope has unknown key 3", -1),
    ("will with data", _with("will", lambda b: b.update({7: 0})), "will data must be null", -1),
    ("telemetry of 4", _with("telemetry-air", lambda b: b.update({7: [1, 2, 3, 4]})),
     "telemetry data must be an array of 6 (lighting), 5 (parking) or 7 (air) items", -1),
    ("telemetry map", _with("telemetry-air", lambda b: b.update({7: {}})),
     "telemetry data must be an array of 6 (lighting), 5 (parking) or 7 (air) items", -1),
    ("birth as array", _with("birth-lighting", lambda b: b.update({7: []})),
     "birth data must be a map", -1),
    ("birth without role", _with("birth-lighting", lambda b: b[7].pop(1)),
     "birth field role is missing", -1),
    ("birth extra key", _with("birth-lighting", lambda b: b[7].update({7: 1})),
     "birth has unknown key 7", -1),
    ("birth loc of 3", _with("birth-lighting", lambda b: b[7].update({5: [1, 2, 3]})),
     "birth field loc must be an array of 2 items", -1),
    ("birth lat", _with("birth-lighting", lambda b: b[7].update({5: [900000001, 0]})),
     "birth field loc.lat out of range -900000000..900000000", -1),
    ("event type 7", _with("event-bay-free", lambda b: b.update({7: [7, 0]})),
     "event field type out of range 1..6", -1),
    ("event detail", _with("event-bay-free", lambda b: b.update({7: [1, 101]})),
     "bay_occupied event field confidence out of range 0..100", -1),
    ("lamp fault of nothing", _with("event-lamp-fault", lambda b: b.update({7: [3, 0]})),
     "lamp_fault event field faults out of range 1..63", -1),
    ("event of 3", _with("event-bay-free", lambda b: b.update({7: [1, 1, 1]})),
     "event data must be an array of 2 items", -1),
    ("health without fw", _with("health", lambda b: b[7].pop(8)), "health field fw is missing",
     -1),
    ("unknown opcode", _with("command-dim", lambda b: b.update({11: 11, 7: None})),
     "unsupported opcode 11", m.UNSUPPORTED),
    ("opcode 0", _with("command-dim", lambda b: b.update({11: 0})),
     "envelope field op out of range 1..255", -1),
    ("dim of 3", _with("command-dim", lambda b: b.update({7: [1, 2, 3]})),
     "dim command data must be an array of 2 items", m.BAD_ARGS),
    ("release with args", _with("command-release", lambda b: b.update({7: 0})),
     "release command data must be null", m.BAD_ARGS),
    ("reserve backwards", _with("command-reserve", lambda b: b.update({7: [10, 10]})),
     "reserve command field until must be after from", m.BAD_ARGS),
    ("config empty", _with("command-set-config", lambda b: b.update({7: {}})),
     "set_config command data must be a map of 1..16 settings", m.BAD_ARGS),
    ("config 17", _with("command-set-config",
                        lambda b: b.update({7: {f"s{i}": i for i in range(17)}})),
     "set_config command data must be a map of 1..16 settings", m.BAD_ARGS),
    ("config name", _with("command-set-config", lambda b: b.update({7: {"Health": 1}})),
     "set_config command has a bad setting name: want a-z first, then a-z 0-9 _, 24 bytes at most",
     m.BAD_ARGS),
    ("config name 25", _with("command-set-config", lambda b: b.update({7: {"a" * 25: 1}})),
     "set_config command has a bad setting name: want a-z first, then a-z 0-9 _, 24 bytes at most",
     m.BAD_ARGS),
    ("config int", _with("command-set-config", lambda b: b.update({7: {"a": U32 + 1}})),
     "set_config command field a out of range -2147483648..4294967295", m.BAD_ARGS),
    ("config text", _with("command-set-config", lambda b: b.update({7: {"a": "x" * 65}})),
     "set_config command field a must be text of 0..64 bytes", m.BAD_ARGS),
    ("config bytes", _with("command-set-config", lambda b: b.update({7: {"a": b"x"}})),
     "set_config command field a must be an integer, text, a boolean or null", m.BAD_ARGS),
    ("schedule as array", _with("command-schedule", lambda b: b.update({7: []})),
     "schedule command data must be a map", m.BAD_ARGS),
    ("schedule version 0", _schedule(lambda s: s.update({0: 0})),
     "schedule command field version out of range 1..4294967295", m.BAD_ARGS),
    ("schedule no steps", _schedule(lambda s: s.pop(1)),
     "schedule command field steps is missing", m.BAD_ARGS),
    ("schedule empty steps", _schedule(lambda s: s.update({1: []})),
     "schedule command field steps must be an array of 1..8 items", m.BAD_ARGS),
    ("schedule 9 steps", _schedule(lambda s: s.update({1: [[0, 0, 0]] * 9})),
     "schedule command field steps must be an array of 1..8 items", m.BAD_ARGS),
    ("step anchor", _schedule(lambda s: s[1].append([3, 0, 0])),
     "schedule command field steps[3].anchor out of range 0..2", m.BAD_ARGS),
    ("step time", _schedule(lambda s: s[1].append([0, 1440, 0])),
     "schedule command field steps[3].offset out of range 0..1439", m.BAD_ARGS),
    ("step dusk", _schedule(lambda s: s[1].append([1, -721, 0])),
     "schedule command field steps[3].offset out of range -720..720", m.BAD_ARGS),
    ("step level", _schedule(lambda s: s[1].append([2, 0, 101])),
     "schedule command field steps[3].level out of range 0..100", m.BAD_ARGS),
    ("step of 2", _schedule(lambda s: s[1].append([2, 0])),
     "schedule command field steps[3] must be an array of 3 items", m.BAD_ARGS),
    ("exception step", _schedule(lambda s: s[2][0][4].append([1, 721, 0])),
     "schedule command field exceptions[0].steps[2].offset out of range -720..720", m.BAD_ARGS),
    ("exception date", _schedule(lambda s: s[2][0].__setitem__(0, 20261301)),
     "schedule command field exceptions[0].first must be a date YYYYMMDD", m.BAD_ARGS),
    ("exception day 0", _schedule(lambda s: s[2][0].__setitem__(1, 20261200)),
     "schedule command field exceptions[0].last must be a date YYYYMMDD", m.BAD_ARGS),
    ("exception backwards", _schedule(lambda s: s[2][0].__setitem__(1, 20261223)),
     "schedule command field exceptions[0].last is before first", m.BAD_ARGS),
    ("exception weekdays", _schedule(lambda s: s[2][0].__setitem__(2, 0)),
     "schedule command field exceptions[0].weekdays out of range 1..127", m.BAD_ARGS),
    ("5 exceptions", _schedule(lambda s: s.update({2: s[2] * 5})),
     "schedule command field exceptions must be an array of 1..4 items", m.BAD_ARGS),
    ("tz order", _schedule(lambda s: s[3].reverse()),
     "schedule command field tz[1].from must be after the previous entry", m.BAD_ARGS),
    ("tz offset", _schedule(lambda s: s[3][0].__setitem__(1, 841)),
     "schedule command field tz[0].offset out of range -720..840", m.BAD_ARGS),
    ("failsafe", _schedule(lambda s: s.update({4: 101})),
     "schedule command field failsafe out of range 0..100", m.BAD_ARGS),
    ("schedule extra key", _schedule(lambda s: s.update({5: 1})),
     "schedule command has unknown key 5", m.BAD_ARGS),
]


@pytest.mark.parametrize(("case", "body", "reason", "result"), STRUCTURE_CASES,
                         ids=[case[0] for case in STRUCTURE_CASES])
def test_structure_errors_name_the_rule(case: str, body: Any, reason: str, result: int) -> None:
    assert reason_of(body) == (reason, result)


def test_booleans_are_not_integers() -> None:
    body = copy(BASES["ack"])
    body[m.KEY_DATA][1] = True
    assert reason_of(body)[0] == "ack field result must be an integer"
    body = copy(BASES["ack"])
    body[m.KEY_VERSION] = True
    assert reason_of(body)[0] == "unsupported protocol version of type bool"


def test_builders_make_the_documented_envelopes() -> None:
    assert m.uplink(m.TELEMETRY, 5, 1, 2, 3, m.TQ_NTP, [1]) == {
        0: 1, 1: 2, 2: 5, 3: 1, 4: 2, 5: 3, 6: 2, 7: [1]}
    assert m.command(5, 42, 99, 7, m.OP_REBOOT, None) == {
        0: 1, 1: 16, 2: 5, 8: 42, 9: 99, 10: 7, 11: 8, 7: None}
    assert m.uplink_ack(5, 7, 3, 9) == {0: 1, 1: 17, 2: 5, 10: 7, 7: [3, 9]}


def test_oversize_messages_are_refused_both_ways() -> None:
    body = m.command(5, 1, 1, 1, m.OP_SET_CONFIG, {f"s{i:02}": "x" * 30 for i in range(16)})
    with pytest.raises(MessageError, match=r"^message of \d+ bytes exceeds the 508-byte limit$"):
        m.encode_signed(KEY, body)
    with pytest.raises(ValueError, match="exceeds the 508-byte limit"):
        mac.sign(KEY, cbor.dumps(body))
    oversize = b"\x84" + bytes(599)  # what a hostile sender could still put on the wire
    with pytest.raises(DecodeError, match="exceeds the 508-byte limit"):
        m.decode_signed(KEY, oversize)


def test_decode_signed_checks_the_mac_before_the_body() -> None:
    message = m.encode_signed(KEY, m.uplink(m.WILL, 5, 1, 2, 3, 0, 0))  # invalid data
    with pytest.raises(MessageError, match="will data must be null"):
        m.decode_signed(KEY, message)
    with pytest.raises(WireError, match="MAC tag mismatch"):
        m.decode_signed(bytes(32), message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_hostile_bytes_raise_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        c.decode_body(data)


@settings(max_examples=300, deadline=None)
@given(bodies, st.data())
def test_corrupted_bodies_raise_only_wire_errors(body: dict[int, Any], data: st.DataObject
                                                 ) -> None:
    encoded = bytearray(cbor.dumps(body))
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(WireError):
        c.decode_body(bytes(encoded))


# ---- MicroPython ----

MP_SIGN = """
import binascii
from citisense_protocols import catalogue as c
from citisense_protocols import messages as m
key = binascii.unhexlify(%r)
for args in %r:
    print(binascii.hexlify(m.encode_signed(key, m.uplink(*args))).decode())
"""


@pytest.mark.micropython
def test_micropython_signs_telemetry_of_each_role_like_cpython(mp: MicroPythonVM) -> None:
    telemetry: list[dict[int, Any]] = [
        e.body for e in wire_sizes.EXAMPLES if e.body[m.KEY_KIND] == m.TELEMETRY
    ]
    calls = [[body[k] for k in (1, 2, 3, 4, 5, 6, 7)] for body in telemetry]
    assert {m.ROLE_BY_LENGTH[len(body[m.KEY_DATA])] for body in telemetry} == {1, 2, 3}
    got = mp.run(MP_SIGN % (KEY.hex(), calls)).split()
    assert got == [m.encode_signed(KEY, m.uplink(*call)).hex() for call in calls]


MP_VALIDATE = """
import binascii, json
from citisense_protocols import catalogue as c
from citisense_protocols import messages as m
from citisense_protocols.errors import WireError
key = binascii.unhexlify(%r)
out = []
for line in open('/vectors/messages.txt'):
    try:
        body = m.decode_signed(key, binascii.unhexlify(line.strip()))
        out.append(['ok', binascii.hexlify(m.encode_signed(key, body)).decode()])
    except WireError as e:
        out.append([type(e).__name__, e.reason, getattr(e, 'result', None)])
print(json.dumps(out))
"""


def outcomes_on_cpython(messages: list[bytes]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for message in messages:
        try:
            body = m.decode_signed(KEY, message)
            out.append(["ok", m.encode_signed(KEY, body).hex()])
        except WireError as error:
            out.append([type(error).__name__, error.reason, getattr(error, "result", None)])
    return out


def outcomes_on_micropython(mp: MicroPythonVM, messages: list[bytes]) -> Any:
    mp.put("/vectors/messages.txt", "\n".join(msg.hex() for msg in messages).encode() + b"\n")
    return json.loads(mp.run(MP_VALIDATE % KEY.hex()))


@pytest.mark.micropython
def test_micropython_accepts_every_spec_example(mp: MicroPythonVM) -> None:
    messages = [m.encode_signed(KEY, example.body) for example in wire_sizes.EXAMPLES]
    expected = [["ok", message.hex()] for message in messages]
    assert outcomes_on_micropython(mp, messages) == expected


@pytest.mark.micropython
def test_micropython_refuses_invalid_bodies_with_the_same_reasons(mp: MicroPythonVM) -> None:
    messages = [mac.sign(KEY, cbor.dumps(body)) for _, body, _, _ in STRUCTURE_CASES]
    expected = outcomes_on_cpython(messages)
    assert [row[1] for row in expected] == [reason for _, _, reason, _ in STRUCTURE_CASES]
    assert outcomes_on_micropython(mp, messages) == expected


@pytest.mark.micropython
def test_micropython_refuses_generated_bad_values_like_cpython(mp: MicroPythonVM) -> None:
    messages = []
    for table, _, _, kind, lo, hi, put in TARGETS:
        for value in ((lo - 1, hi + 1) if kind in "in" else ("", b"")):
            body = copy(BASES[table])
            put(body, value)
            messages.append(mac.sign(KEY, cbor.dumps(body)))
    expected = outcomes_on_cpython(messages)
    assert all(row[0] == "MessageError" for row in expected)
    assert outcomes_on_micropython(mp, messages) == expected


MP_MEMORY = """
import gc, binascii
from citisense_protocols import errors, cbor, mac
def allocated(f):
    gc.collect()
    gc.disable()
    start = gc.mem_alloc()
    f()
    used = gc.mem_alloc() - start
    gc.enable()
    return used
gc.collect()
before = gc.mem_alloc()
from citisense_protocols import messages, topics
gc.collect()
loaded = gc.mem_alloc() - before
key = binascii.unhexlify(%r)
out = [loaded]
for line in %r:
    message = binascii.unhexlify(line)
    out += [allocated(lambda: messages.decode_signed(key, message)) for _ in range(3)]
print(' '.join(str(n) for n in out))
"""


@pytest.mark.micropython
def test_micropython_validation_reaches_a_steady_allocation(mp: MicroPythonVM) -> None:
    """Parsed field tables are cached once: validating again allocates no more than before.

    Prints the figures for the memory budget: import cost of messages + topics (from
    source), and what verifying + validating allocates, first and steady.
    """
    names = ("telemetry-air-worst", "command-schedule-largest")
    messages = [m.encode_signed(KEY, e.body) for e in wire_sizes.EXAMPLES if e.name in names]
    loaded, *runs = map(int, mp.run(MP_MEMORY % (KEY.hex(), [msg.hex() for msg in messages]))
                        .split())
    triples = [runs[i : i + 3] for i in range(0, len(runs), 3)]
    for name, message, (first, second, third) in zip(names, messages, triples, strict=True):
        print(f"MicroPython {name} ({len(message)} B): decode_signed allocates {first} B "
              f"first, {second} B then")
        assert second == third <= first
    print(f"MicroPython: importing messages + topics takes {loaded} B")
