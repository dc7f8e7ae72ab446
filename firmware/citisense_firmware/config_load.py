"""Reading and checking the provisioned config (config.py describes the file) and the
settings set_config changes laid over it.

load_config() never raises: a missing or bad file yields a Fault naming the reason, so
the node can come up in a provisioning state and say why instead of crash-looping.
Needed at boot and for a set_config command only: the node unloads this module after
each use (compat.unload), the heap its checks take is free the rest of the time.
"""

import binascii
import json

from citisense_firmware.compat import const
from citisense_firmware.config import (
    CONFIG_PATH,
    ROLES,
    SETTINGS_PATH,
    Config,
    DurableRecord,
    Fault,
    read_file,
)

TRANSPORTS = ("mqtt", "serial")
KEY_LENGTH = const(32)
_MAX_NODE_ID = const(0xFFFFFFFF)
_MAX_INTERVAL = const(86400)


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
