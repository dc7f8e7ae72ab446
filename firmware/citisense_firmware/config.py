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
load_config() never raises: a missing or bad file yields a Fault naming the reason, so
the node can come up in a provisioning state and say why instead of crash-looping.
Settings changed later by set_config live in a separate durable record laid over the
file's: the provisioned file itself is never rewritten on the node.

DurableRecord keeps a small blob in two alternating slot files, each with a generation
number and a CRC-32. A power cut during a write can only damage the slot being written,
so the previous value survives on any filesystem (FAT has no atomic rename). Counters
(boot counter, downlink counter, failed boots, the store index) build on it.
"""

import binascii
import hashlib
import json
import os
import struct

from citisense_firmware.compat import const
from citisense_protocols import cbor

CONFIG_PATH = "/config.json"
SETTINGS_PATH = "/state/settings"
ROLES = ("lighting", "parking", "air")
TRANSPORTS = ("mqtt", "serial")
KEY_LENGTH = const(32)
_MAX_NODE_ID = const(0xFFFFFFFF)
# Defaults in seconds; provisioning may override each within [1, 1 day].
DEFAULT_INTERVALS = {"telemetry": 60, "health": 900}
_MAX_INTERVAL = const(86400)
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
    """A validated provisioned config (attributes only; build it with load_config)."""

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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value: object, low: int, high: int) -> bool:
    return _is_int(value) and low <= value <= high


def _check_uplink(uplink: object) -> str | None:
    if not isinstance(uplink, dict):
        return "uplink: must be an object"
    transport = uplink.get("transport")
    if transport not in TRANSPORTS:
        return "uplink.transport: must be one of mqtt, serial"
    if transport == "mqtt":
        host = uplink.get("host")
        if not isinstance(host, str) or not host:
            return "uplink.host: must be a non-empty string"
        if not _in_range(uplink.get("port", 1883), 1, 65535):
            return "uplink.port: must be 1..65535"
        for name in ("user", "password"):
            if not isinstance(uplink.get(name), str) or not uplink[name]:
                return f"uplink.{name}: must be a non-empty string"
        if not _in_range(uplink.get("keepalive", 60), 10, 3600):
            return "uplink.keepalive: must be 10..3600 s"
    elif not _in_range(uplink.get("baud", 115200), 1200, 4000000):
        return "uplink.baud: must be 1200..4000000"
    return None


def _check_key(key: object) -> str | None:
    if not isinstance(key, str) or len(key) != 2 * KEY_LENGTH:
        return f"key: must be {2 * KEY_LENGTH} hex digits"
    try:
        raw = binascii.unhexlify(key)
    except ValueError:
        return "key: not hex"
    if raw == bytes(KEY_LENGTH):
        return "key: all zero (never provisioned)"
    return None


def _check_settings(settings: object) -> str | None:
    """set_config rules: names [a-z][a-z0-9_]{0,23}; int, text <= 64 bytes, bool."""
    if not isinstance(settings, dict):
        return "settings: must be an object"
    for name, value in settings.items():
        if not isinstance(name, str) or not 0 < len(name) <= 24 or not "a" <= name[0] <= "z":
            return "settings: bad name"
        for ch in name:
            if not ("a" <= ch <= "z" or "0" <= ch <= "9" or ch == "_"):
                return "settings: bad name " + name
        if isinstance(value, str):
            if len(value.encode()) > 64:
                return f"settings.{name}: text longer than 64 bytes"
        elif not (isinstance(value, bool) or _in_range(value, -0x80000000, 0xFFFFFFFF)):
            return f"settings.{name}: must be an integer, text or a boolean"
    return None


def validate(doc: object) -> str | None:
    """The first problem in a config document, or None if it is usable."""
    if not isinstance(doc, dict):
        return "config: must be a JSON object"
    if not _in_range(doc.get("node"), 1, _MAX_NODE_ID):
        return "node: must be an integer 1..4294967295"
    if doc.get("role") not in ROLES:
        return "role: must be one of lighting, parking, air"
    if not isinstance(doc.get("board"), str) or not 0 < len(doc["board"]) <= 32:
        return "board: must be a string of 1..32 characters"
    problem = _check_key(doc.get("key")) or _check_uplink(doc.get("uplink"))
    if problem:
        return problem
    location = doc.get("location")
    if not isinstance(location, dict):
        return "location: must be an object with lat and lon"
    # 10^-7 degrees as integers: ESP32 floats are single precision (about 1 m here).
    if not _in_range(location.get("lat"), -900000000, 900000000):
        return "location.lat: must be an integer -900000000..900000000 (10^-7 degrees)"
    if not _in_range(location.get("lon"), -1800000000, 1800000000):
        return "location.lon: must be an integer -1800000000..1800000000 (10^-7 degrees)"
    for name in ("group", "zone"):
        if not isinstance(doc.get(name, ""), str):
            return f"{name}: must be a string"
    wifi = doc.get("wifi", {})
    if not isinstance(wifi, dict):
        return "wifi: must be an object with ssid and password"
    if wifi:
        if not isinstance(wifi.get("ssid"), str) or not 0 < len(wifi["ssid"]) <= 32:
            return "wifi.ssid: must be a string of 1..32 characters"
        if not isinstance(wifi.get("password", ""), str) or len(wifi.get("password", "")) > 64:
            return "wifi.password: must be a string of at most 64 characters"
    intervals = doc.get("intervals", {})
    if not isinstance(intervals, dict):
        return "intervals: must be an object"
    for name, value in intervals.items():
        if not _in_range(value, 1, _MAX_INTERVAL):
            return f"intervals.{name}: must be 1..{_MAX_INTERVAL} s"
    return _check_settings(doc.get("settings", {}))


def parse_config(raw: bytes, settings: dict | None = None) -> Config | Fault:
    """Validate the bytes of a config file, with runtime `settings` laid over its own."""
    try:
        doc = json.loads(raw.decode())
    except (ValueError, UnicodeError) as error:
        return Fault(f"corrupt: not JSON ({error})")
    if settings and isinstance(doc, dict) and isinstance(doc.get("settings", {}), dict):
        merged = dict(doc.get("settings", {}))
        merged.update(settings)
        doc["settings"] = merged
    problem = validate(doc)
    if problem:
        return Fault("invalid: " + problem)
    return Config(doc)


def _load_settings(path: str) -> dict:
    raw = DurableRecord(path).load()
    if raw is None:
        return {}
    try:
        settings = json.loads(raw.decode())
    except (ValueError, UnicodeError):
        return {}
    return settings if isinstance(settings, dict) else {}


def load_config(path: str = CONFIG_PATH, settings_path: str = SETTINGS_PATH) -> Config | Fault:
    """The provisioned config with the settings changed since (set_config), or a Fault
    saying why the node cannot use it."""
    raw = read_file(path)
    if raw is None:
        return Fault("missing: " + path)
    return parse_config(raw, _load_settings(settings_path))


def save_settings(changes: dict, known, path: str = SETTINGS_PATH) -> str | None:
    """Apply a set_config map all together, or nothing: the problem, or None when stored.

    `known` holds the setting names the firmware defines; null restores the default.
    The provisioned file is never rewritten: a power cut cannot corrupt it.
    """
    for name in changes:
        if name not in known:
            return "unknown setting " + str(name)
    settings = _load_settings(path)
    for name, value in changes.items():
        if value is None:
            settings.pop(name, None)
        else:
            settings[name] = value
    problem = _check_settings(settings)
    if problem:
        return problem
    DurableRecord(path).save(json.dumps(settings).encode())
    return None


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
