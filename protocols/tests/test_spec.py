"""SPEC.md against the code and the CDDL: field tables, examples, sizes.

The examples are parsed out of SPEC.md itself, so the document cannot drift from the
bytes: each hex dump must be the diagnostic notation shown, validate against
messages.cddl and the validator, carry a good MAC under the example key, and have the
sizes written next to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import cbor2
import pycddl
import pytest

from citisense_protocols import catalogue as c
from citisense_protocols import cbor, framing, mac
from citisense_protocols import messages as m
from citisense_protocols.errors import DecodeError
from citisense_tools import wire_sizes

PROTOCOLS = Path(__file__).resolve().parents[1]
SPEC = (PROTOCOLS / "SPEC.md").read_text(encoding="utf-8")
CDDL = (PROTOCOLS / "messages.cddl").read_text(encoding="utf-8")

# pycddl uses the first rule as the root. It also applies `.cbor` inside an array to every
# member (pycddl 0.6), so the COSE structure is checked with a plain bstr payload and the
# payload against `body` on its own.
BODY_SCHEMA = pycddl.Schema("citisense-body = body\n" + CDDL)
COSE_SCHEMA = pycddl.Schema("citisense-message = message\n"
                            + CDDL.replace("payload: bstr .cbor body", "payload: bstr"))


def validate_cddl(message: bytes) -> None:
    COSE_SCHEMA.validate_cbor(message)
    BODY_SCHEMA.validate_cbor(mac.unwrap(message)[0])


# ---- the examples ----


class Block(NamedTuple):
    name: str
    diag: str
    message: bytes
    json: str
    cbor_size: int
    json_size: int


def parse_blocks(spec: str) -> list[Block]:
    blocks = []
    for text in re.findall(r"```cbor-example\n(.*?)\n```", spec, re.S):
        fields: dict[str, list[str]] = {}
        label = ""
        for line in text.splitlines():
            if line.startswith("      "):
                fields[label].append(line.strip())
            else:
                label, _, rest = line.partition(": ")
                fields[label] = [rest]
        size = re.fullmatch(r"(\d+) bytes CBOR \(MAC included\), (\d+) bytes JSON",
                            fields["size"][0])
        assert size, fields["size"]
        blocks.append(Block(
            name=fields["name"][0],
            diag=" ".join(fields["diag"]),
            message=bytes.fromhex(" ".join(fields["hex"])),
            json="".join(fields["json"]),
            cbor_size=int(size[1]),
            json_size=int(size[2]),
        ))
    return blocks


BLOCKS = parse_blocks(SPEC)
BY_NAME = {block.name: block for block in BLOCKS}


class Embedded(NamedTuple):
    """<<value>>: a byte string holding the CBOR of value."""

    value: Any


_TOKEN = re.compile(r"""\s*(?:(-?\d+)|h'([0-9a-f]*)'|("(?:[^"\\]|\\.)*")|(null|true|false)"""
                    r"""|(<<|>>|[\[\]{}:,]))""")


def parse_diag(text: str) -> Any:
    """The value written in the diagnostic notation subset SPEC.md uses (independent of
    the generator in wire_sizes)."""
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        assert match, f"bad diagnostic notation at {text[pos:pos + 20]!r}"
        number, hexa, string, word, punct = match.groups()
        if number is not None:
            tokens.append(("value", int(number)))
        elif hexa is not None:
            tokens.append(("value", bytes.fromhex(hexa)))
        elif string is not None:
            tokens.append(("value", json.loads(string)))
        elif word is not None:
            tokens.append(("value", {"null": None, "true": True, "false": False}[word]))
        else:
            tokens.append((punct, None))
        pos = match.end()
    items = iter(tokens)

    def value(token: tuple[str, Any]) -> Any:
        kind, literal = token
        if kind == "value":
            return literal
        if kind == "<<":
            inner = value(next(items))
            assert next(items)[0] == ">>"
            return Embedded(inner)
        closing = "]" if kind == "[" else "}"
        assert kind in "[{", kind
        result: list[Any] = []
        pairs: dict[Any, Any] = {}
        token = next(items)
        while token[0] != closing:
            item = value(token)
            if kind == "{":
                assert next(items)[0] == ":"
                pairs[item] = value(next(items))
            else:
                result.append(item)
            token = next(items)
            if token[0] == ",":
                token = next(items)
        return pairs if kind == "{" else result

    parsed = value(next(items))
    assert next(items, None) is None, "trailing tokens"
    return parsed


def encode_in_order(value: Any) -> bytes:
    """CBOR of a parsed diag value, keeping the map order written (not re-sorting)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Embedded):
            return encode_in_order(v.value)
        if isinstance(v, list):
            return [plain(item) for item in v]
        if isinstance(v, dict):
            return {k: plain(item) for k, item in v.items()}
        return v

    return bytes(cbor2.dumps(plain(value)))


def test_spec_has_the_examples_the_tool_generates() -> None:
    assert wire_sizes.examples_section(SPEC) == wire_sizes.markdown(), (
        "SPEC.md examples are stale: run "
        "`python -m citisense_tools.wire_sizes --write protocols/SPEC.md`"
    )


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_example_bytes_are_the_diagnostic_notation_shown(block: Block) -> None:
    # Encoding the written diag with the written key order gives the exact bytes: the
    # notation is the message, in wire order.
    assert encode_in_order(parse_diag(block.diag)) == block.message


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_example_is_valid_signed_and_deterministic(block: Block) -> None:
    validate_cddl(block.message)
    body = m.decode_signed(wire_sizes.EXAMPLE_KEY, block.message)
    assert m.encode_signed(wire_sizes.EXAMPLE_KEY, body) == block.message
    assert bytes(cbor2.dumps(cbor2.loads(block.message), canonical=True)) == block.message


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_example_sizes_are_measured(block: Block) -> None:
    assert len(block.message) == block.cbor_size
    assert len(block.json.encode()) == block.json_size
    assert block.json.encode() == wire_sizes.json_equivalent(block.message)


def test_json_equivalent_names_every_cbor_value() -> None:
    """Same fields: the JSON holds as many scalar values as the body, plus the MAC."""

    def leaves(value: Any) -> int:
        if isinstance(value, dict):
            return sum(leaves(v) for v in value.values())
        if isinstance(value, list):
            return sum(leaves(v) for v in value)
        return 1

    for block in BLOCKS:
        body, _ = mac.unwrap(block.message)
        assert leaves(json.loads(block.json)) == leaves(cbor2.loads(body)) + 1, block.name


def test_size_table_matches_the_examples() -> None:
    table = re.findall(r"^\| ([a-z0-9-]+) \| ([a-z-]+) \| (\d+) \| (\d+) \| ([\d.]+) \|$",
                       wire_sizes.examples_section(SPEC), re.M)
    assert [(name, int(cbor), int(size)) for name, _, cbor, size, _ in table] == [
        (block.name, block.cbor_size, block.json_size) for block in BLOCKS
    ]
    assert [(name, kind) for name, kind, *_ in table] == [
        (row.name, row.kind) for row in wire_sizes.size_rows()
    ]


@pytest.mark.parametrize("role", ["lighting", "parking", "air"])
def test_worst_case_telemetry_fits_64_bytes_with_mac(role: str) -> None:
    block = BY_NAME[f"telemetry-{role}-worst"]
    body = cbor2.loads(mac.unwrap(block.message)[0])
    assert body[m.KEY_NODE] == m.U32 and body[m.KEY_SEQ] == m.U32
    assert body[m.KEY_BOOT] == 0xFFFF and body[m.KEY_TS] >= 0x10000
    assert m.ROLE_NAMES[m.ROLE_BY_LENGTH[len(body[m.KEY_DATA])]] == role
    # Every value at its longest encoding: the extreme of its range that encodes longest.
    fields = c.fields(c.TELEMETRY_FIELDS[m.ROLE_BY_LENGTH[len(body[m.KEY_DATA])]])
    for (_, name, _, lo, hi, _), value in zip(fields, body[m.KEY_DATA], strict=True):
        assert len(cbor2.dumps(value)) == max(len(cbor2.dumps(lo)), len(cbor2.dumps(hi))), name
    assert block.cbor_size <= 64


def test_examples_cover_every_kind_and_opcode() -> None:
    bodies = [cbor2.loads(mac.unwrap(block.message)[0]) for block in BLOCKS]
    assert {body[m.KEY_KIND] for body in bodies} == set(m.KIND_NAMES)
    ops = {body[m.KEY_OP] for body in bodies if body[m.KEY_KIND] == m.COMMAND}
    assert ops == set(range(1, len(c.OPS)))
    roles = {len(body[m.KEY_DATA]) for body in bodies if body[m.KEY_KIND] == m.TELEMETRY}
    assert roles == set(m.ROLE_BY_LENGTH)


def test_largest_message_fits_a_serial_frame() -> None:
    assert m.MAX_MESSAGE == framing.MAX_MESSAGE == mac.MAX_MESSAGE
    largest = max(BLOCKS, key=lambda block: block.cbor_size)
    assert largest.name == "command-schedule-largest"
    assert largest.cbor_size <= m.MAX_MESSAGE
    body = mac.unwrap(largest.message)[0]
    c.decode_body(body)  # within MAX_DEPTH and MAX_ITEMS
    with pytest.raises(DecodeError, match="more than 222 data items"):
        cbor.loads(body, max_items=222)  # so the SPEC's "holds 223" is exact


def test_spec_states_the_measured_worst_case_sizes() -> None:
    assert "is 447 bytes" in SPEC and BY_NAME["command-schedule-largest"].cbor_size == 447
    assert "Lighting takes at most 61 bytes and parking 54" in SPEC
    assert BY_NAME["telemetry-lighting-worst"].cbor_size == 61
    assert BY_NAME["telemetry-parking-worst"].cbor_size == 54
    assert BY_NAME["telemetry-air-worst"].cbor_size == 64
    assert "holds 223" in SPEC and "holds 223" in Path(m.__file__).read_text()


# ---- field tables ----


def spec_tables() -> dict[str, list[list[str]]]:
    tables = {}
    for name, rows in re.findall(r"<!-- (?:fields|codes): ([\w-]+) -->\n((?:\|.*\n)+)", SPEC):
        cells = [[cell.strip() for cell in row.strip().strip("|").split("|")]
                 for row in rows.strip().splitlines()[2:]]
        tables[name] = cells
    return tables


TABLES = spec_tables()


def range_text(kind: str, lo: int, hi: int) -> str | None:
    if kind == "i":
        return f"{lo}..{hi}"
    if kind == "n":
        return f"{lo}..{hi} or null"
    if kind == "t":
        return f"{lo}..{hi} bytes"
    if kind == "b":
        return f"{lo} bytes" if lo == hi else f"{lo}..{hi} bytes"
    return None  # checked by its own function; described in words


def expected(table: str) -> list[tuple[str, str, str | None]]:
    return [(str(slot), name + ("" if required else "?"), range_text(kind, lo, hi))
            for slot, name, kind, lo, hi, required in c.fields(table)]


def envelope(table: str, kind: str | None) -> list[tuple[str, str, str | None]]:
    rows = [("0", "v", f"{m.VERSION}..{m.VERSION}"), ("1", "kind", kind)]
    return rows + expected(table) + [("7", "data", None)]


FIELD_TABLES: dict[str, list[tuple[str, str, str | None]]] = {
    "uplink-envelope": envelope(c.UPLINK_ENVELOPE, None),
    "command-envelope": envelope(c.COMMAND_ENVELOPE, f"{m.COMMAND}..{m.COMMAND}"),
    "uplink-ack-envelope": envelope(c.UPLINK_ACK_ENVELOPE, f"{m.UPLINK_ACK}..{m.UPLINK_ACK}"),
    "birth": expected(c.BIRTH_FIELDS),
    "location": expected(c.LOCATION_FIELDS),
    "telemetry-lighting": expected(c.TELEMETRY_FIELDS[m.LIGHTING]),
    "telemetry-parking": expected(c.TELEMETRY_FIELDS[m.PARKING]),
    "telemetry-air": expected(c.TELEMETRY_FIELDS[m.AIR]),
    "health": expected(c.HEALTH_FIELDS),
    "ack": expected(c.ACK_FIELDS),
    "uplink-ack": expected(c.UPLINK_ACK_FIELDS),
    "op-dim": expected(c.OPS[m.OP_DIM][2]),
    "op-reserve": expected(c.OPS[m.OP_RESERVE][2]),
    "op-app-update": expected(c.OPS[m.OP_APP_UPDATE][2]),
    "op-value": [(str(op), *expected(table)[0][1:])
                 for op, (_, shape, table) in enumerate(c.OPS) if shape == c.VALUE],
    "schedule": expected(c.SCHEDULE_FIELDS),
    "step": expected(c.STEP_FIELDS),
    "exception": expected(c.EXCEPTION_FIELDS),
    "tz": expected(c.TZ_FIELDS),
}


@pytest.mark.parametrize("name", sorted(FIELD_TABLES))
def test_field_table_matches_the_validator(name: str) -> None:
    written = [(row[0], row[1], row[4]) for row in TABLES[name]]
    expected = FIELD_TABLES[name]
    assert [row[:2] for row in written] == [row[:2] for row in expected]
    for (_, field, text), (_, _, want) in zip(written, expected, strict=True):
        if want is not None:
            assert text == want, f"{name} field {field}"


def test_every_array_command_has_a_field_table() -> None:
    array_ops = {name.replace("_", "-") for name, shape, _ in c.OPS if shape == c.ARRAY}
    assert {f"op-{name}" for name in array_ops} <= set(TABLES)


def test_code_tables_match_the_validator() -> None:
    assert [(int(row[0]), row[1]) for row in TABLES["kinds"]] == list(m.KIND_NAMES.items())
    assert [(int(row[0]), row[1]) for row in TABLES["opcodes"]] == [
        (op, name) for op, (name, _, _) in enumerate(c.OPS) if op
    ]
    assert [row[1] for row in TABLES["results"]] == list(m.RESULT_NAMES)
    assert [int(row[0]) for row in TABLES["results"]] == list(range(len(m.RESULT_NAMES)))
    events = [(int(row[0]), row[1], row[2], row[3]) for row in TABLES["events"]]
    assert events == [
        (etype, c.EVENT_NAMES[etype], detail, f"{lo}..{hi}")
        for etype, detail, _, lo, hi, _ in c.fields(c.EVENT_DETAILS)
    ]


def test_every_marked_table_is_checked() -> None:
    assert set(TABLES) == set(FIELD_TABLES) | {"kinds", "opcodes", "results", "events"}


def _invalid(change: Any) -> bytes:
    body = cbor2.loads(mac.unwrap(BY_NAME["telemetry-air"].message)[0])
    change(body)
    return bytes(cbor2.dumps(body, canonical=True))


@pytest.mark.parametrize("body", [
    _invalid(lambda b: b[7].__setitem__(0, 10001)),  # pm25 out of range
    _invalid(lambda b: b[7].append(0)),  # 8 items: no role
    _invalid(lambda b: b.update({2: 0})),  # node 0
    _invalid(lambda b: b.update({4: 2**32})),  # seq beyond uint32
    _invalid(lambda b: b.update({12: 0})),  # unknown key
    _invalid(lambda b: b.pop(5)),  # no timestamp
    _invalid(lambda b: b.update({1: 16})),  # a command without command keys
])
def test_cddl_and_validator_both_refuse(body: bytes) -> None:
    """The CDDL is not vacuous: invalid bodies fail it, as they fail the validator."""
    with pytest.raises(pycddl.ValidationError):
        BODY_SCHEMA.validate_cbor(body)
    with pytest.raises(m.MessageError):
        c.decode_body(body)


def test_cddl_parses_and_names_every_kind() -> None:
    for kind in m.KIND_NAMES.values():
        assert re.search(rf"^{kind} = ", CDDL, re.M), kind
    for name, _, _ in c.OPS[1:]:
        assert re.search(rf"^{name.replace('_', '-')}-command = ", CDDL, re.M), name
