"""Wire sizes of the message catalogue: every example of protocols/SPEC.md, signed, in CBOR
and in its JSON equivalent.

    python -m citisense_tools.wire_sizes                          the size table
    python -m citisense_tools.wire_sizes --markdown               the examples of SPEC.md
    python -m citisense_tools.wire_sizes --write protocols/SPEC.md  regenerate them in place

The JSON equivalent of a message (SPEC.md, "Examples") is its body with every integer key
and array position replaced by the field's readable name, byte strings as lowercase hex,
plus "mac": the tag in hex; serialised with json.dumps(separators=(",", ":"),
ensure_ascii=False) and counted in UTF-8 bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cbor2

from citisense_protocols import catalogue as c
from citisense_protocols import mac
from citisense_protocols import messages as m

# Published in SPEC.md so anyone can recompute the example tags. Never provision it.
EXAMPLE_KEY = bytes(range(32))

U32 = m.U32
U64 = m.U64
NODE = 1042
T0 = 1767225600  # 2026-01-01T00:00:00Z
EXPIRY = T0 + 3600


def _up(kind: int, seq: int, data: object, tq: int = m.TQ_NTP, ts: int = T0) -> dict[int, object]:
    return m.uplink(kind, NODE, 3, seq, ts, tq, data)


def _worst(data: list[int]) -> dict[int, object]:
    """Telemetry with the longest envelope: ids at their maximum, boot 65535 (SPEC.md)."""
    return m.uplink(m.TELEMETRY, U32, 0xFFFF, U32, T0, m.TQ_NTP, data)


def _cmd(cid: int, op: int, args: object) -> dict[int, object]:
    return m.command(NODE, cid, EXPIRY, 50 + cid, op, args)


EVENING = [[m.AT_DUSK, -15, 100], [m.AT_TIME, 23 * 60, 50], [m.AT_DAWN, 15, 0]]
TYPICAL_SCHEDULE = {
    0: 7,
    1: EVENING,
    2: [[20261224, 20261226, 127, 10, [[m.AT_DUSK, -30, 100], [m.AT_DAWN, 30, 0]]]],
    # Europe/Amsterdam: CET since 2025-10-26, CEST from 2026-03-29, CET from 2026-10-25
    3: [[1761440400, 60], [1774746000, 120], [1792890000, 60]],
}
_WORST_STEPS = [[m.AT_DUSK, -720, 100]] * m.MAX_STEPS
LARGEST_SCHEDULE = {
    0: U32,
    1: _WORST_STEPS,
    2: [[20260101, 20261231, 127, 255, _WORST_STEPS]] * m.MAX_EXCEPTIONS,
    3: [[U32 - m.MAX_TZ + 1 + i, 840] for i in range(m.MAX_TZ)],
    4: 100,
}


class Example(NamedTuple):
    name: str
    body: dict[int, object]


EXAMPLES = [
    Example("birth-lighting", _up(m.BIRTH, 0, {
        0: "1.2.0", 1: m.LIGHTING, 2: "esp32-devkitc-v4", 3: bytes.fromhex("5d41402abc4b2a76"),
        4: m.RESET_POWER_ON, 5: [523731000, 48926000], 6: 7,
    })),
    Example("birth-parking-uncommissioned", _up(m.BIRTH, 0, {
        0: "1.2.0", 1: m.PARKING, 2: "esp32-c3-mini", 3: bytes.fromhex("0f1e2d3c4b5a6978"),
        4: m.RESET_WATCHDOG, 5: None,
    }, tq=m.TQ_UPTIME, ts=4)),
    Example("telemetry-lighting-worst", _worst([100, m.SOURCE_IDENTIFY, 65535, U32, 65535, 63])),
    Example("telemetry-parking-worst", _worst([m.BAY_UNKNOWN, m.INDICATOR_RESERVED, -8000, 100,
                                               31])),
    Example("telemetry-air-worst", _worst([10000, 10000, 10000, -4000, 1000, 11000, 15])),
    Example("telemetry-lighting", _up(m.TELEMETRY, 1440, [70, m.SOURCE_SCHEDULE, 412, 183244,
                                                          2, 0])),
    Example("telemetry-parking", _up(m.TELEMETRY, 1440, [m.BAY_OCCUPIED, m.INDICATOR_OCCUPIED,
                                                         -352, 97, 0])),
    Example("telemetry-air", _up(m.TELEMETRY, 1440, [123, 187, 215, 1875, 624, 10132, 0])),
    Example("telemetry-air-warmup", _up(m.TELEMETRY, 2, [None, None, None, 1875, 624, 10132,
                                                         m.AIR_WARMUP],
                                                 tq=m.TQ_UPTIME, ts=30)),
    Example("event-bay-occupied", _up(m.EVENT, 1441, [m.EV_BAY_OCCUPIED, 97])),
    Example("event-bay-free", _up(m.EVENT, 1442, [m.EV_BAY_FREE, 5400])),
    Example("event-lamp-fault", _up(m.EVENT, 1443, [m.EV_LAMP_FAULT, m.LAMP_OUT])),
    Example("event-sensor-fault", _up(m.EVENT, 1444, [m.EV_SENSOR_FAULT, m.SENSOR_PM])),
    Example("health", _up(m.HEALTH, 1445, {
        0: 61440, 1: 48312, 2: 86400, 3: m.RESET_POWER_ON, 4: 0, 5: 0, 6: -67, 7: 100,
        8: "1.2.0",
    })),
    Example("ack", _up(m.ACK, 1446, [42, m.OK])),
    Example("will", _up(m.WILL, 0, None)),
    Example("command-dim", _cmd(42, m.OP_DIM, [30, 3600])),
    Example("command-schedule", _cmd(43, m.OP_SCHEDULE, TYPICAL_SCHEDULE)),
    Example("command-schedule-largest",
            m.command(U32, U32, U32, U64, m.OP_SCHEDULE, LARGEST_SCHEDULE)),
    Example("command-reserve", _cmd(44, m.OP_RESERVE, [T0 + 7200, T0 + 14400])),
    Example("command-release", _cmd(45, m.OP_RELEASE, None)),
    Example("command-recalibrate", _cmd(46, m.OP_RECALIBRATE, m.SENSOR_ALL)),
    Example("command-identify", _cmd(47, m.OP_IDENTIFY, 30)),
    Example("command-set-config", _cmd(48, m.OP_SET_CONFIG, {"health_s": 900,
                                                             "telemetry_s": 60})),
    Example("command-reboot", _cmd(49, m.OP_REBOOT, None)),
    Example("command-time-sync", _cmd(50, m.OP_TIME_SYNC, T0)),
    Example("command-app-update", _cmd(51, m.OP_APP_UPDATE, [
        "1.3.0", "https://updates.example.org/citisense/1.3.0.tar", 181248,
        bytes.fromhex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
    ])),
    Example("uplink-ack", m.uplink_ack(NODE, 101, 3, 1440)),
]


# ---- JSON equivalent ----


def _plain(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def _named(table: str, value: Any) -> dict[str, Any]:
    """An array (by position) or a map (by key) of `table` as {name: value}."""
    return {name: _plain(value[slot]) for slot, name, *_ in c.fields(table)
            if isinstance(value, list) or slot in value}


def _steps(steps: list[list[int]]) -> list[dict[str, Any]]:
    return [_named(c.STEP_FIELDS, step) for step in steps]


def _schedule(schedule: dict[int, Any]) -> dict[str, Any]:
    named = _named(c.SCHEDULE_FIELDS, schedule)
    named["steps"] = _steps(schedule[1])
    if 2 in schedule:
        named["exceptions"] = [{**_named(c.EXCEPTION_FIELDS, exc), "steps": _steps(exc[4])}
                               for exc in schedule[2]]
    if 3 in schedule:
        named["tz"] = [_named(c.TZ_FIELDS, zone) for zone in schedule[3]]
    return named


def _data(body: dict[int, Any]) -> Any:
    kind, data = body[m.KEY_KIND], body[m.KEY_DATA]
    if kind == m.TELEMETRY:
        return _named(c.TELEMETRY_FIELDS[m.ROLE_BY_LENGTH[len(data)]], data)
    if kind == m.BIRTH:
        named = _named(c.BIRTH_FIELDS, data)
        if data[5] is not None:
            named["loc"] = _named(c.LOCATION_FIELDS, data[5])
        return named
    if kind == m.EVENT:
        detail = next(name for slot, name, *_ in c.fields(c.EVENT_DETAILS) if slot == data[0])
        return {"type": data[0], detail: data[1]}
    if kind == m.HEALTH:
        return _named(c.HEALTH_FIELDS, data)
    if kind == m.ACK:
        return _named(c.ACK_FIELDS, data)
    if kind == m.UPLINK_ACK:
        return _named(c.UPLINK_ACK_FIELDS, data)
    if kind == m.COMMAND:
        op = body[m.KEY_OP]
        _, shape, table = c.OPS[op]
        if shape == c.VALUE:
            return {c.fields(table)[0][1]: _plain(data)}
        if shape == c.ARRAY:
            return _named(table, data)
        if op == m.OP_SCHEDULE:
            return _schedule(data)
    return data  # will (null), release and reboot (null), set_config (already named)


def named_body(body: dict[int, Any]) -> dict[str, Any]:
    """`body` with readable names for its keys and array positions (the JSON equivalent)."""
    kind = body[m.KEY_KIND]
    envelope = (
        c.COMMAND_ENVELOPE if kind == m.COMMAND
        else c.UPLINK_ACK_ENVELOPE if kind == m.UPLINK_ACK
        else c.UPLINK_ENVELOPE
    )
    names = dict(c.COMMON_KEYS)
    names.update((key, name) for key, name, *_ in c.fields(envelope))
    named = {names[key]: value for key, value in sorted(body.items()) if key != m.KEY_DATA}
    named["data"] = _data(body)
    return named


def json_equivalent(message: bytes) -> bytes:
    """The JSON equivalent of a signed message (module docstring), UTF-8."""
    body, tag = mac.unwrap(message)
    named = named_body(cbor2.loads(body))
    named["mac"] = tag.hex()
    return json.dumps(named, separators=(",", ":"), ensure_ascii=False).encode()


# ---- CBOR diagnostic notation (RFC 8949 section 8, RFC 8610 appendix G) ----


def diag(value: Any) -> str:
    """Diagnostic notation of a decoded CBOR value, in its encoded order."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(diag(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{diag(k)}: {diag(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no diagnostic notation for {type(value).__name__}")


def diag_message(message: bytes) -> str:
    """A COSE_Mac0 message with its payload shown as embedded CBOR (<< >>)."""
    body, tag = mac.unwrap(message)
    return f"[h'', {{}}, <<{diag(cbor2.loads(body))}>>, {diag(tag)}]"


# ---- size table ----


class Row(NamedTuple):
    name: str
    kind: str
    cbor: int
    json: int


def signed(example: Example) -> bytes:
    return m.encode_signed(EXAMPLE_KEY, example.body)


def size_rows() -> list[Row]:
    """(example, kind, CBOR bytes with MAC, JSON-equivalent bytes) for every example."""
    rows = []
    for example in EXAMPLES:
        message = signed(example)
        kind = m.KIND_NAMES[int(example.body[m.KEY_KIND])]  # type: ignore[call-overload]
        rows.append(Row(example.name, kind, len(message), len(json_equivalent(message))))
    return rows


def table() -> str:
    lines = ["| example | kind | CBOR bytes (MAC incl.) | JSON bytes | JSON / CBOR |",
             "|---|---|---:|---:|---:|"]
    for row in size_rows():
        lines.append(f"| {row.name} | {row.kind} | {row.cbor} | {row.json} | "
                     f"{row.json / row.cbor:.2f} |")
    return "\n".join(lines)


def _wrap(text: str, sep: str, width: int = 92) -> list[str]:
    """Break `text` after `sep` into lines of at most `width` (where possible)."""
    lines: list[str] = []
    line = ""
    for piece in text.split(sep):
        candidate = piece if not line else line + sep + piece
        if line and len(candidate) > width:
            lines.append(line + sep.rstrip())
            line = piece
        else:
            line = candidate
    lines.append(line)
    return lines


def _block(example: Example) -> str:
    message = signed(example)
    json_text = json_equivalent(message).decode()
    hex_bytes = message.hex(" ")
    parts = [f"name: {example.name}"]
    for label, lines in (
        ("diag", _wrap(diag_message(message), ", ")),
        ("hex", _wrap(hex_bytes, " ", 90)),
        ("json", _wrap(json_text, ",")),
    ):
        parts.append(f"{label}: {lines[0]}")
        parts.extend("      " + line for line in lines[1:])
    json_size = len(json_text.encode())
    parts.append(f"size: {len(message)} bytes CBOR (MAC included), {json_size} bytes JSON")
    return "```cbor-example\n" + "\n".join(parts) + "\n```"


def markdown() -> str:
    """The examples of SPEC.md: one block per example, then the size table."""
    return "\n\n".join(_block(example) for example in EXAMPLES) + "\n\n" + table() + "\n"


BEGIN = "<!-- examples:begin -->\n"
END = "<!-- examples:end -->"


def examples_section(spec: str) -> str:
    """The generated part of SPEC.md, between the BEGIN and END markers."""
    start = spec.index(BEGIN) + len(BEGIN)
    return spec[start : spec.index(END, start)]


def write_spec(path: Path) -> None:
    """Replace the examples of the SPEC.md at `path` by freshly generated ones."""
    spec = path.read_text(encoding="utf-8")
    old = examples_section(spec)
    start = spec.index(BEGIN) + len(BEGIN)
    path.write_text(spec[:start] + markdown() + spec[start + len(old) :], encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--markdown", action="store_true",
                        help="print the examples section of protocols/SPEC.md")
    output.add_argument("--write", type=Path, metavar="SPEC",
                        help="regenerate the examples section of this SPEC.md in place")
    args = parser.parse_args(argv)
    if args.write:
        write_spec(args.write)
    else:
        sys.stdout.write(markdown() if args.markdown else table() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
