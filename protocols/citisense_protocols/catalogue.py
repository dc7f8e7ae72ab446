"""The field tables of the message catalogue (protocols/SPEC.md) and its one validator.

decode_body() checks a body against the catalogue and raises MessageError naming the
field and the rule it breaks, e.g. "telemetry field pm25 out of range 0..10000".

Field tables are compact strings, parsed when first used: loaded from .mpy the module
takes far less heap than with the tables as tuples, and a node parses only the few
tables it checks (envelopes, commands). A gateway keeps them parsed; a node unloads this
module after each check (compat.unload), the parsed tables with it. The same tables give the
readable names (errors, JSON equivalents). Runs on MicroPython and CPython.
"""

from citisense_protocols import cbor
from citisense_protocols.errors import MessageError
from citisense_protocols.mac import MAX_MESSAGE
from citisense_protocols.messages import (
    ACK,
    BAD_ARGS,
    BIRTH,
    COMMAND,
    EVENT,
    HEALTH,
    KEY_DATA,
    KEY_KIND,
    KEY_OP,
    KEY_VERSION,
    KIND_NAMES,
    MAX_DEPTH,
    MAX_EXCEPTIONS,
    MAX_ITEMS,
    MAX_STEPS,
    MAX_TZ,
    OP_RESERVE,
    OP_SCHEDULE,
    ROLE_BY_LENGTH,
    TELEMETRY,
    U32,
    U64,
    UNSUPPORTED,
    UPLINK_ACK,
    VERSION,
    WILL,
)

# ---- field tables ----
# A table is "slot name type lo hi" entries separated by commas. The slot is the map key
# or the array position; a name ending in "?" is an optional map key. Types: i integer
# lo..hi; n the same or null (no reading); t text of lo..hi UTF-8 bytes; b byte string of
# lo..hi bytes; x checked by its own function.

UPLINK_ENVELOPE = (
    "2 node i 1 4294967295,"
    "3 boot i 0 4294967295,"
    "4 seq i 0 4294967295,"
    "5 ts i 0 4294967295,"
    "6 tq i 0 2"
)
COMMAND_ENVELOPE = (
    "2 node i 1 4294967295,"
    "8 id i 0 4294967295,"
    "9 exp i 0 4294967295,"
    "10 ctr i 0 18446744073709551615,"
    "11 op i 1 255"
)
UPLINK_ACK_ENVELOPE = (
    "2 node i 1 4294967295,"
    "10 ctr i 0 18446744073709551615"
)
# Keys of every body, with their readable names.
COMMON_KEYS = ((KEY_VERSION, "v"), (KEY_KIND, "kind"), (KEY_DATA, "data"))

# Telemetry by role; measurements are null when there is no reading.
TELEMETRY_FIELDS = (
    "",
    (  # lighting
        "0 level i 0 100,"
        "1 source i 0 5,"
        "2 power n 0 65535,"
        "3 energy n 0 4294967295,"
        "4 lux n 0 65535,"
        "5 faults i 0 63"
    ),
    (  # parking
        "0 state i 0 2,"
        "1 indicator i 0 2,"
        "2 dz n -8000 8000,"
        "3 confidence i 0 100,"
        "4 flags i 0 31"
    ),
    (  # air quality
        "0 pm25 n 0 10000,"
        "1 pm10 n 0 10000,"
        "2 no2 n 0 10000,"
        "3 temp n -4000 8500,"
        "4 rh n 0 1000,"
        "5 pressure n 3000 11000,"
        "6 flags i 0 15"
    ),
)
BIRTH_FIELDS = (
    "0 fw t 1 32,"
    "1 role i 1 3,"
    "2 board t 1 32,"
    "3 cfg b 8 8,"
    "4 reset i 0 9,"
    "5 loc x 0 0,"
    "6 sched? i 0 4294967295"
)
# WGS 84 degrees x 10^7, or null until the node is commissioned.
LOCATION_FIELDS = "0 lat i -900000000 900000000, 1 lon i -1800000000 1800000000"
HEALTH_FIELDS = (
    "0 heap_free i 0 4294967295,"
    "1 heap_peak i 0 4294967295,"
    "2 uptime i 0 4294967295,"
    "3 reset i 0 9,"
    "4 queue i 0 65535,"
    "5 drops i 0 4294967295,"
    "6 rssi n -127 0,"
    "7 link n 0 100,"
    "8 fw t 1 32"
)
# Event data is [type, detail]: the event names, and the detail field by type.
EVENT_NAMES = ("", "bay_occupied", "bay_free", "lamp_fault", "lamp_ok", "sensor_fault",
               "sensor_ok")
EVENT_DETAILS = (
    "1 confidence i 0 100,"
    "2 duration i 0 4294967295,"
    "3 faults i 1 63,"
    "4 faults i 0 63,"
    "5 sensor i 1 6,"
    "6 sensor i 1 6"
)
ACK_FIELDS = "0 id i 0 4294967295, 1 result i 0 8"
UPLINK_ACK_FIELDS = "0 boot i 0 4294967295, 1 seq i 0 4294967295"

# Command arguments by opcode: (name, shape, table). Shapes: NO_ARGS (null), VALUE (one
# bare value), ARRAY (an array of the fields), OWN (checked by its own function).
NO_ARGS = 0
VALUE = 1
ARRAY = 2
OWN = 3
OPS = (
    ("", OWN, ""),
    ("dim", ARRAY, "0 level i 0 100, 1 duration i 0 86400"),
    ("schedule", OWN, ""),
    ("reserve", ARRAY, "0 from i 0 4294967295, 1 until i 0 4294967295"),
    ("release", NO_ARGS, ""),
    ("recalibrate", VALUE, "0 sensor i 0 6"),
    ("identify", VALUE, "0 seconds i 1 600"),
    ("set_config", OWN, ""),
    ("reboot", NO_ARGS, ""),
    ("time_sync", VALUE, "0 time i 1577836800 4294967295"),
    ("app_update", ARRAY, (
        "0 version t 1 32,"
        "1 url t 8 200,"
        "2 size i 1 4194304,"
        "3 sha256 b 32 32"
    )),
)

SCHEDULE_FIELDS = (
    "0 version i 1 4294967295,"
    "1 steps x 0 0,"
    "2 exceptions? x 0 0,"
    "3 tz? x 0 0,"
    "4 failsafe? i 0 100"
)
STEP_FIELDS = "0 anchor i 0 2, 1 offset x 0 0, 2 level i 0 100"
# The offset range depends on the anchor: minutes after local midnight, or minutes
# before (negative) or after the sun event.
STEP_OFFSETS = ((0, 1439), (-720, 720), (-720, 720))
EXCEPTION_FIELDS = (
    "0 first x 0 0,"
    "1 last x 0 0,"
    "2 weekdays i 1 127,"
    "3 priority i 0 255,"
    "4 steps x 0 0"
)
TZ_FIELDS = "0 from i 0 4294967295, 1 offset i -720 840"

MAX_CONFIG = 16
CONFIG_NAME_BYTES = 24
CONFIG_TEXT_BYTES = 64
CONFIG_INT_MIN = -0x80000000


# Tables parsed so far: a node parses only the few it checks (envelopes, commands).
_parsed: dict[str, list[tuple[int, str, str, int, int, bool]]] = {}

def fields(table: str) -> list[tuple[int, str, str, int, int, bool]]:
    """The entries of a field table: (slot, name, type, lo, hi, required)."""
    entries = _parsed.get(table)
    if entries is None:
        entries = []
        for entry in table.split(","):
            slot, name, kind, lo, hi = entry.split()
            optional = name[-1] == "?"
            entries.append(
                (int(slot), name[:-1] if optional else name, kind, int(lo), int(hi), not optional)
            )
        _parsed[table] = entries
    return entries



# ---- validator ----


def decode_body(body: object) -> dict[int, object]:
    """`body` (CBOR bytes or a decoded map) if it follows the catalogue, else MessageError.

    Bytes that are not CBOR within the limits raise DecodeError.
    """
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = cbor.loads(body, max_depth=MAX_DEPTH, max_items=MAX_ITEMS, max_size=MAX_MESSAGE)
    if type(body) is not dict:
        raise MessageError("body must be a map")
    assert isinstance(body, dict)
    version = body.get(KEY_VERSION)
    if type(version) is not int or version != VERSION:
        raise MessageError(f"unsupported protocol version {_show(version)}")
    kind = body.get(KEY_KIND)
    if type(kind) is not int or kind not in KIND_NAMES:
        raise MessageError(f"unknown kind {_show(kind)}")
    if KEY_DATA not in body:
        raise MessageError("envelope field data is missing")
    if kind == COMMAND:
        envelope = COMMAND_ENVELOPE
    elif kind == UPLINK_ACK:
        envelope = UPLINK_ACK_ENVELOPE
    else:
        envelope = UPLINK_ENVELOPE
    _map("envelope", envelope, body, len(COMMON_KEYS))
    data = body[KEY_DATA]
    name = KIND_NAMES[kind]
    if kind == COMMAND:
        _command(body[KEY_OP], data)
    elif kind == TELEMETRY:
        if not _is_array(data) or len(data) not in ROLE_BY_LENGTH:
            raise MessageError(
                "telemetry data must be an array of 6 (lighting), 5 (parking) or 7 (air) items"
            )
        _array(name, TELEMETRY_FIELDS[ROLE_BY_LENGTH[len(data)]], data)
    elif kind == BIRTH:
        _map(name, BIRTH_FIELDS, data, 0)
        if data[5] is not None:
            _array(name, LOCATION_FIELDS, data[5], "loc")
    elif kind == EVENT:
        _event(data)
    elif kind == HEALTH:
        _map(name, HEALTH_FIELDS, data, 0)
    elif kind == ACK:
        _array(name, ACK_FIELDS, data)
    elif kind == WILL:
        if data is not None:
            raise MessageError("will data must be null")
    else:
        _array(name, UPLINK_ACK_FIELDS, data)
    return body


def _show(value: object) -> str:
    # Only small values go into a reason: hostile bodies must not inflate error text.
    if type(value) is int and -U64 <= value <= U64:
        return str(value)
    return "of type " + type(value).__name__


def _is_array(value: object) -> bool:
    return isinstance(value, (list, tuple))


def _field(
    where: str, name: str, kind: str, lo: int, hi: int, value: object, path: str = "",
    index: int = -1,
) -> None:
    """Check one value; the field's full name is composed only for an error."""
    if kind == "i" or kind == "n":
        if value is None and kind == "n":
            return
        if type(value) is not int:
            null = " or null" if kind == "n" else ""
            problem = "must be an integer" + null
        elif value < lo or value > hi:
            problem = f"out of range {lo}..{hi}"
        else:
            return
    elif kind == "t":
        if type(value) is str and lo <= len(value.encode()) <= hi:
            return
        problem = f"must be text of {lo}..{hi} bytes"
    elif kind == "b":
        if type(value) is bytes and lo <= len(value) <= hi:
            return
        problem = f"must be a byte string of {lo if lo == hi else f'{lo}..{hi}'} bytes"
    else:
        return
    raise MessageError(f"{where} field {_path(path, index, name)} {problem}")


def _path(path: str, index: int, name: str) -> str:
    """A field's name in a reason: "pm25", "loc.lat", "exceptions[0].steps[2].offset"."""
    if index >= 0:
        path = f"{path}[{index}]"
    return f"{path}.{name}" if path and name else path or name


def _array(where: str, table: str, value: object, path: str = "", index: int = -1) -> None:
    """A fixed-length array of the table's fields ("x" items are the caller's)."""
    entries = fields(table)
    if not isinstance(value, (list, tuple)) or len(value) != len(entries):
        what = "field " + _path(path, index, "") if path else "data"
        raise MessageError(f"{where} {what} must be an array of {len(entries)} items")
    for slot, name, kind, lo, hi, _ in entries:
        _field(where, name, kind, lo, hi, value[slot], path, index)


def _map(where: str, table: str, value: object, common: int) -> None:
    """A map with the table's integer keys (and the first `common` COMMON_KEYS)."""
    if type(value) is not dict:
        raise MessageError(f"{where} data must be a map")
    assert isinstance(value, dict)
    entries = fields(table)
    known = 0
    for key in value:
        # false, true and 1.0 compare equal to 0 and 1 in Python: only int keys count.
        if type(key) is not int:
            raise MessageError(f"{where} has unknown key {_show(key)}")
    for entry in entries:
        if entry[0] in value:
            known += 1
    for i in range(common):
        if COMMON_KEYS[i][0] in value:
            known += 1
    if known != len(value):
        for key in value:
            if not (
                any(entry[0] == key for entry in entries)
                or any(entry[0] == key for entry in COMMON_KEYS[:common])
            ):
                raise MessageError(f"{where} has unknown key {_show(key)}")
    for key, name, kind, lo, hi, required in entries:
        if key in value:
            _field(where, name, kind, lo, hi, value[key])
        elif required:
            raise MessageError(f"{where} field {name} is missing")


def _event(data: object) -> None:
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        raise MessageError("event data must be an array of 2 items")
    etype = data[0]
    _field("event", "type", "i", 1, len(EVENT_NAMES) - 1, etype)
    for slot, name, kind, lo, hi, _ in fields(EVENT_DETAILS):
        if slot == etype:
            _field(EVENT_NAMES[slot] + " event", name, kind, lo, hi, data[1])


def _command(op: int, args: object) -> None:
    if op >= len(OPS):
        raise MessageError(f"unsupported opcode {op}", UNSUPPORTED)
    name, shape, table = OPS[op]
    where = name + " command"
    try:
        if shape == NO_ARGS:
            if args is not None:
                raise MessageError(where + " data must be null")
        elif shape == VALUE:
            for _, field, kind, lo, hi, _ in fields(table):
                _field(where, field, kind, lo, hi, args)
        elif shape == ARRAY:
            _array(where, table, args)
            assert isinstance(args, (list, tuple))
            if op == OP_RESERVE and args[1] <= args[0]:
                raise MessageError(where + " field until must be after from")
        elif op == OP_SCHEDULE:
            _schedule(where, args)
        else:
            _config(where, args)
    except MessageError as error:
        error.result = BAD_ARGS
        raise


def _schedule(where: str, schedule: object) -> None:
    _map(where, SCHEDULE_FIELDS, schedule, 0)
    assert isinstance(schedule, dict)
    _steps(where, "steps", schedule[1])
    if 2 in schedule:
        for i, exception in enumerate(_list(where, "exceptions", schedule[2], MAX_EXCEPTIONS)):
            _array(where, EXCEPTION_FIELDS, exception, "exceptions", i)
            first = _date(where, i, "first", exception[0])
            if _date(where, i, "last", exception[1]) < first:
                raise MessageError(f"{where} field exceptions[{i}].last is before first")
            _steps(where, f"exceptions[{i}].steps", exception[4])
    if 3 in schedule:
        previous = -1
        for i, zone in enumerate(_list(where, "tz", schedule[3], MAX_TZ)):
            _array(where, TZ_FIELDS, zone, "tz", i)
            start = zone[0]
            assert isinstance(start, int)
            if start <= previous:
                raise MessageError(f"{where} field tz[{i}].from must be after the previous entry")
            previous = start


def _list(where: str, path: str, value: object, most: int) -> list[list[object]]:
    """A variable-length array of 1..most items (checked by the caller)."""
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= most:
        raise MessageError(f"{where} field {path} must be an array of 1..{most} items")
    return list(value)


def _steps(where: str, path: str, steps: object) -> None:
    for i, step in enumerate(_list(where, path, steps, MAX_STEPS)):
        _array(where, STEP_FIELDS, step, path, i)
        anchor = step[0]
        assert isinstance(anchor, int)
        lo, hi = STEP_OFFSETS[anchor]
        _field(where, "offset", "i", lo, hi, step[1], path, i)


def _date(where: str, index: int, name: str, value: object) -> int:
    """An exception's date, written as the integer YYYYMMDD."""
    if (
        not isinstance(value, int)
        or type(value) is not int
        or not 20000101 <= value <= 99991231
        or not 1 <= value // 100 % 100 <= 12
        or not 1 <= value % 100 <= 31
    ):
        raise MessageError(f"{where} field exceptions[{index}].{name} must be a date YYYYMMDD")
    return value


def _config(where: str, config: object) -> None:
    if not isinstance(config, dict) or not 1 <= len(config) <= MAX_CONFIG:
        raise MessageError(f"{where} data must be a map of 1..{MAX_CONFIG} settings")
    for name, value in config.items():
        if not _config_name(name):
            raise MessageError(
                f"{where} has a bad setting name: want a-z first, then a-z 0-9 _,"
                f" {CONFIG_NAME_BYTES} bytes at most"
            )
        if type(value) is int:
            _field(where, name, "i", CONFIG_INT_MIN, U32, value)
        elif type(value) is str:
            _field(where, name, "t", 0, CONFIG_TEXT_BYTES, value)
        elif value is not None and value is not True and value is not False:
            raise MessageError(f"{where} field {name} must be an integer, text, a boolean or null")


def _config_name(name: object) -> bool:
    if type(name) is not str or not 1 <= len(name) <= CONFIG_NAME_BYTES:
        return False
    assert isinstance(name, str)
    return "a" <= name[0] <= "z" and all(
        "a" <= ch <= "z" or "0" <= ch <= "9" or ch == "_" for ch in name
    )
