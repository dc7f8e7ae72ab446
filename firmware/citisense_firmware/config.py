"""Node-local persistent state: the provisioned config, small durable records, boot guard.

The config file /config.json is JSON written at provisioning (a technician can read it
with `mpremote cat`):

    {"node": 4711,                           1..4294967295
     "role": "lighting",                     lighting | parking | air
     "board": "esp32-devkitc",               board definition name, 1..32 characters
     "key": "<64 hex digits>",               the node's 32-byte MAC key, never all zero
     "uplink": {"transport": "mqtt", "host": "broker.city", "port": 1883,
                "user": "node-4711", "password": "...", "keepalive": 60}
            or {"transport": "serial", "baud": 115200},
     "location": {"lat": 520907000, "lon": 51214000},   WGS 84, 10^-7 degrees
     "group": "oudegracht", "zone": "centre",           optional
     "wifi": {"ssid": "city-iot", "password": "..."},   optional (boards with Wi-Fi)
     "intervals": {"telemetry": 60, "health": 900},     optional, seconds
     "settings": {"name": value}}                       optional, set_config rules

Numbers are integers only: ESP32 MicroPython floats are single precision, and integers
make the birth `cfg` digest (digest()) the same on the node and the gateway.
citisense_firmware.config_load reads and checks it (at boot and for set_config only).
Settings changed later by set_config live in a separate durable record laid over the
file's: the provisioned file itself is never rewritten on the node.

DurableRecord keeps a small blob in two alternating slot files, each with a generation
number and a CRC-32. A power cut during a write can only damage the slot being written,
so the previous value survives on any filesystem (FAT has no atomic rename). Counters
(boot counter, downlink counter, failed boots, the store index) build on it.
"""

import binascii
import hashlib
import os
import struct

from citisense_firmware.compat import const
from citisense_protocols import cbor

CONFIG_PATH = "/config.json"
SETTINGS_PATH = "/state/settings"
ROLES = ("lighting", "parking", "air")
# Defaults in seconds; provisioning may override each within [1, 1 day].
DEFAULT_INTERVALS = {"telemetry": 60, "health": 900}
SAFE_MODE_AFTER = const(3)  # failed boots in a row before the node stops running its role

_SLOT_HEAD = ">II"  # generation, CRC-32 of generation + data
_SLOT_HEAD_SIZE = const(8)


def _crc(data: bytes) -> int:
    return binascii.crc32(data) & 0xFFFFFFFF


def remove(path: str) -> bool:
    """Delete a file; False if it did not exist."""
    try:
        os.remove(path)
    except OSError:
        return False
    return True


def read_file(path: str) -> bytes | None:
    """The whole file, or None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def makedirs(path: str) -> None:
    """Create `path` and its parents; existing folders are fine (os.makedirs is CPython-only)."""
    current = ""
    for part in path.split("/"):
        if not part:
            continue
        current += "/" + part if (current or path.startswith("/")) else part
        try:
            os.mkdir(current)
        except OSError:
            continue  # exists


class DurableRecord:
    """A small blob that survives power cuts: two slots, the newest valid one wins."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._generation = None  # of the newest slot, known after load()
        self.writes = 0  # slot files written since construction (flash budget)

    def _slot(self, generation: int) -> str:
        return f"{self._path}.{generation & 1}"

    def load(self) -> bytes | None:
        """The newest intact value, or None if neither slot holds one."""
        best = None
        best_generation = 0
        for slot in (0, 1):
            raw = read_file(self._slot(slot))
            if raw is None or len(raw) < _SLOT_HEAD_SIZE:
                continue
            generation, crc = struct.unpack(_SLOT_HEAD, raw[:_SLOT_HEAD_SIZE])
            data = raw[_SLOT_HEAD_SIZE:]
            if crc != _crc(raw[:4] + data) or generation & 1 != slot:
                continue
            if best is None or generation > best_generation:
                best = data
                best_generation = generation
        self._generation = best_generation
        return best

    def save(self, data: bytes) -> None:
        """Write `data` to the older slot; the other keeps the previous value meanwhile."""
        if self._generation is None:
            self.load()
        generation = (self._generation + 1) & 0xFFFFFFFF
        head = struct.pack(">I", generation)
        raw = head + struct.pack(">I", _crc(head + data)) + data
        path = self._slot(generation)
        try:
            write_file(path, raw)
        except OSError:  # first boot of a fresh board: the folder may not exist yet
            slash = path.rfind("/")
            if slash <= 0:
                raise
            makedirs(path[:slash])
            write_file(path, raw)
        self._generation = generation
        self.writes += 1


class Counter:
    """A persisted unsigned integer (up to 64 bits); None until first set."""

    def __init__(self, path: str) -> None:
        self._record = DurableRecord(path)
        raw = self._record.load()
        self.value = struct.unpack(">Q", raw)[0] if raw is not None and len(raw) == 8 else None

    def set(self, value: int) -> None:
        self._record.save(struct.pack(">Q", value))
        self.value = value


class Fault:
    """Why there is no usable config; the node reports it instead of running a role."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Fault({self.reason!r})"


class Config:
    """A validated provisioned config (attributes only; config_load.load_config builds it)."""

    def __init__(self, doc: dict) -> None:
        self.node_id = doc["node"]
        self.role = doc["role"]
        self.role_code = ROLES.index(self.role) + 1  # messages.LIGHTING, PARKING, AIR
        self.board = doc["board"]
        self.key = binascii.unhexlify(doc["key"])
        self.uplink = doc["uplink"]
        self.transport = self.uplink["transport"]
        lat, lon = doc["location"]["lat"], doc["location"]["lon"]
        self.location = [lat, lon]  # birth `loc`: 10^-7 degrees
        self.lat = lat / 10000000
        self.lon = lon / 10000000
        self.group = doc.get("group", "")
        self.zone = doc.get("zone", "")
        intervals = dict(DEFAULT_INTERVALS)
        intervals.update(doc.get("intervals", {}))
        self.intervals = intervals
        self.settings = doc.get("settings", {})
        self.wifi = doc.get("wifi")
        self.digest = digest(doc)


def digest(doc: dict) -> bytes:
    """Birth `cfg`: first 8 bytes of SHA-256 of the deterministic CBOR of the config
    without its secrets (key, uplink and Wi-Fi passwords), so a gateway holding the
    public part of the config computes the same value. Integers only: identical on
    every platform."""
    public = dict(doc)
    public.pop("key", None)
    for section in ("uplink", "wifi"):
        if isinstance(public.get(section), dict):
            public[section] = dict(public[section])
            public[section].pop("password", None)
    return hashlib.sha256(cbor.dumps(public)).digest()[:8]


class BootGuard:
    """Counts boots that did not reach a healthy state, to stop a crash loop.

    begin() at boot costs one flash write; healthy() once the node has run well (e.g.
    connected and a few minutes up) costs one more. After SAFE_MODE_AFTER boots in a row
    without healthy(), safe_mode is True: the app then runs only the fail-safe and the
    uplink, so a bad schedule or app update can still be replaced remotely.
    """

    def __init__(self, path: str, limit: int = SAFE_MODE_AFTER) -> None:
        self._counter = Counter(path)
        self.limit = limit
        self.failures = self._counter.value or 0

    def begin(self) -> bool:
        """Record this boot as unproven; return whether to start in safe mode."""
        self.failures = (self._counter.value or 0) + 1
        self._counter.set(self.failures)
        return self.safe_mode

    @property
    def safe_mode(self) -> bool:
        return self.failures > self.limit

    def healthy(self) -> None:
        """This boot proved itself: reset the count (no write if already zero)."""
        if self._counter.value:
            self._counter.set(0)
        self.failures = 0
