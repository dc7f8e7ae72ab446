"""The message catalogue of protocols/SPEC.md: numbers and builders.

Bodies are CBOR maps with small integer keys; kind-specific data sits under key 7.
The field tables and the validator (decode_body) are in citisense_protocols.catalogue:
a node loads them only to check a downlink message and unloads them after (its
compat.unload): about 3 KB of heap on the MicroPython VM it would otherwise hold for a
few commands a day.
Runs on MicroPython and CPython.
"""

from citisense_protocols import cbor, mac
from citisense_protocols.errors import DecodeError
from citisense_protocols.errors import MessageError as MessageError
from citisense_protocols.mac import MAX_MESSAGE

VERSION = 1
# MAX_MESSAGE (508 bytes, a serial frame less its CRC) bounds a signed message on every transport.
# The deepest body (command > schedule > exceptions > exception > steps > step) nests 6.
MAX_DEPTH = 6
# A worst-case schedule command holds 223 data items.
MAX_ITEMS = 256
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF

# Envelope keys
KEY_VERSION = 0
KEY_KIND = 1
KEY_NODE = 2
KEY_BOOT = 3
KEY_SEQ = 4
KEY_TS = 5
KEY_TQ = 6
KEY_DATA = 7
KEY_ID = 8
KEY_EXPIRY = 9
KEY_COUNTER = 10
KEY_OP = 11

# Kinds: uplink 1..15, downlink 16..31
BIRTH = 1
TELEMETRY = 2
EVENT = 3
HEALTH = 4
ACK = 5
WILL = 6
COMMAND = 16
UPLINK_ACK = 17
KIND_NAMES = {
    BIRTH: "birth", TELEMETRY: "telemetry", EVENT: "event", HEALTH: "health", ACK: "ack",
    WILL: "will", COMMAND: "command", UPLINK_ACK: "uplink-ack",
}

# Time quality (key 6)
TQ_UPTIME = 0  # ts counts seconds since boot
TQ_GATEWAY = 1  # ts is Unix time set by a gateway time sync
TQ_NTP = 2  # ts is Unix time from NTP

# Roles (birth field role); the telemetry array length tells them apart
LIGHTING = 1
PARKING = 2
AIR = 3
ROLE_NAMES = ("", "lighting", "parking", "air")
ROLE_BY_LENGTH = {6: LIGHTING, 5: PARKING, 7: AIR}

# Lighting telemetry: source of the current level
SOURCE_SCHEDULE = 0
SOURCE_OVERRIDE = 1
SOURCE_FAILSAFE = 2
SOURCE_AMBIENT = 3
SOURCE_FAULT = 4
SOURCE_IDENTIFY = 5
# Lighting fault flags
LAMP_OUT = 1
DRIVER_FAULT = 2
OVERHEAT = 4
SUPPLY_FAULT = 8
LIGHT_SENSOR_FAULT = 16
METER_FAULT = 32
# Parking: bay state, bay light, flags
BAY_FREE = 0
BAY_OCCUPIED = 1
BAY_UNKNOWN = 2
INDICATOR_FREE = 0
INDICATOR_OCCUPIED = 1
INDICATOR_RESERVED = 2
PARKING_CALIBRATING = 1
PARKING_UNCALIBRATED = 2
PARKING_SENSOR_FAULT = 4
PARKING_RESERVED_TAKEN = 8
PARKING_DRIFT = 16
# Air quality flags
AIR_WARMUP = 1
AIR_HUMID = 2
AIR_SENSOR_FAULT = 4
AIR_UNCALIBRATED = 8

# Sensors (event detail, recalibrate argument; 0 = every sensor of the node)
SENSOR_ALL = 0
SENSOR_MAGNETOMETER = 1
SENSOR_PM = 2
SENSOR_NO2 = 3
SENSOR_CLIMATE = 4
SENSOR_LIGHT = 5
SENSOR_POWER = 6

# Reset causes (birth, health)
RESET_UNKNOWN = 0
RESET_POWER_ON = 1
RESET_EXTERNAL = 2
RESET_WATCHDOG = 3
RESET_DEEP_SLEEP = 4
RESET_SOFT = 5
RESET_BROWNOUT = 6
RESET_PANIC = 7
RESET_COMMANDED = 8
RESET_UPDATE = 9

# Event types
EV_BAY_OCCUPIED = 1
EV_BAY_FREE = 2
EV_LAMP_FAULT = 3
EV_LAMP_OK = 4
EV_SENSOR_FAULT = 5
EV_SENSOR_OK = 6

# Ack result codes
OK = 0
EXPIRED = 1
BAD_ARGS = 2
UNSUPPORTED = 3
STALE = 4
FAILED = 5
DUPLICATE = 6
BUSY = 7
NO_TIME = 8
RESULT_NAMES = (
    "ok", "expired", "bad-args", "unsupported", "stale", "failed", "duplicate", "busy",
    "no-time",
)

# Opcodes
OP_DIM = 1
OP_SCHEDULE = 2
OP_RESERVE = 3
OP_RELEASE = 4
OP_RECALIBRATE = 5
OP_IDENTIFY = 6
OP_SET_CONFIG = 7
OP_REBOOT = 8
OP_TIME_SYNC = 9
OP_APP_UPDATE = 10

# Schedule step anchors
AT_TIME = 0
AT_DUSK = 1
AT_DAWN = 2

# Schedule limits (SPEC: command-schedule-largest)
MAX_STEPS = 8
MAX_EXCEPTIONS = 4
MAX_TZ = 4


# ---- builders ----


def uplink(
    kind: int, node: int, boot: int, seq: int, ts: int, tq: int, data: object
) -> dict[int, object]:
    """An uplink body (birth, telemetry, event, health, ack, will)."""
    return {
        KEY_VERSION: VERSION, KEY_KIND: kind, KEY_NODE: node, KEY_BOOT: boot, KEY_SEQ: seq,
        KEY_TS: ts, KEY_TQ: tq, KEY_DATA: data,
    }


def command(
    node: int, cid: int, expiry: int, counter: int, op: int, args: object
) -> dict[int, object]:
    """A command body: the node acks `cid`; `expiry` is Unix seconds."""
    return {
        KEY_VERSION: VERSION, KEY_KIND: COMMAND, KEY_NODE: node, KEY_ID: cid,
        KEY_EXPIRY: expiry, KEY_COUNTER: counter, KEY_OP: op, KEY_DATA: args,
    }


def uplink_ack(node: int, counter: int, boot: int, seq: int) -> dict[int, object]:
    """The serial-link ack: uplink (boot, seq) of `node` is stored durably."""
    return {
        KEY_VERSION: VERSION, KEY_KIND: UPLINK_ACK, KEY_NODE: node, KEY_COUNTER: counter,
        KEY_DATA: [boot, seq],
    }


def encode_signed(key: bytes, body: dict[int, object]) -> bytes:
    """The COSE_Mac0 message carrying `body` under the node key `key`.

    MessageError if it exceeds MAX_MESSAGE: no transport could deliver it.
    """
    try:
        return mac.sign(key, cbor.dumps(body))
    except ValueError as err:  # mac.sign refuses a message above MAX_MESSAGE
        raise MessageError(str(err)) from err


def decode_signed(key: bytes, message: bytes) -> dict[int, object]:
    """The validated body of `message`; AuthError, DecodeError or MessageError if not."""
    if len(message) > MAX_MESSAGE:
        raise DecodeError(
            f"message of {len(message)} bytes exceeds the {MAX_MESSAGE}-byte limit", MAX_MESSAGE
        )
    from citisense_protocols.catalogue import decode_body

    return decode_body(mac.verify(key, message))
