"""Provisioned config, durable records and the boot guard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_firmware.config import (
    BootGuard,
    Config,
    Counter,
    DurableRecord,
    Fault,
    digest,
)
from citisense_firmware.config_load import load_config, parse_config, save_settings
from citisense_protocols import messages

TEST_KEY_HEX = bytes(range(1, 33)).hex()  # test-only


def valid_doc() -> dict[str, Any]:
    return {
        "node": 4711,
        "role": "lighting",
        "board": "esp32-devkitc",
        "key": TEST_KEY_HEX,
        "uplink": {
            "transport": "mqtt", "host": "broker.example", "port": 8883,
            "user": "node-4711", "password": "s3cret",
        },
        "location": {"lat": 520907000, "lon": 51214000},
        "group": "oudegracht",
        "zone": "centre",
        "intervals": {"telemetry": 30},
    }


def test_valid_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    raw = json.dumps(valid_doc()).encode()
    path.write_bytes(raw)
    config = load_config(str(path))
    assert isinstance(config, Config)
    assert config.node_id == 4711 and config.role == "lighting"
    assert config.key == bytes(range(1, 33))
    assert config.transport == "mqtt" and config.uplink["port"] == 8883
    assert config.location == [520907000, 51214000]
    assert (config.lat, config.lon) == (52.0907, 5.1214)
    assert config.intervals == {"telemetry": 30, "health": 900}
    assert config.role_code == messages.LIGHTING


def test_digest_leaves_out_the_secrets_and_follows_everything_else() -> None:
    doc = valid_doc()
    public = {k: v for k, v in doc.items() if k != "key"}
    public["uplink"] = {k: v for k, v in doc["uplink"].items() if k != "password"}
    expected = hashlib.sha256(cbor2.dumps(public, canonical=True)).digest()[:8]
    assert digest(doc) == expected
    rotated = valid_doc()
    rotated["key"] = "ab" * 32
    rotated["uplink"]["password"] = "new"
    assert digest(rotated) == expected
    with_wifi = valid_doc()
    with_wifi["wifi"] = {"ssid": "city-iot", "password": "one"}
    other_wifi_password = valid_doc()
    other_wifi_password["wifi"] = {"ssid": "city-iot", "password": "two"}
    assert digest(with_wifi) == digest(other_wifi_password) != expected
    moved = valid_doc()
    moved["zone"] = "north"
    assert digest(moved) != expected


def test_settings_change_all_together_and_survive_reboots(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(json.dumps(valid_doc()).encode())
    settings = str(tmp_path / "state" / "settings")
    known = ("telemetry_s", "failsafe_level")
    before = load_config(str(path), settings)
    assert isinstance(before, Config) and before.settings == {}
    assert save_settings({"telemetry_s": 30, "bogus": 1}, known, settings) is not None
    assert save_settings({"telemetry_s": 30, "failsafe_level": "x" * 65}, known, settings)
    assert save_settings({"telemetry_s": 30, "failsafe_level": 80}, known, settings) is None
    assert save_settings({"failsafe_level": None}, known, settings) is None  # default again
    after = load_config(str(path), settings)
    assert isinstance(after, Config) and after.settings == {"telemetry_s": 30}
    assert after.digest != before.digest


def test_serial_uplink_needs_no_credentials() -> None:
    doc = valid_doc()
    doc["uplink"] = {"transport": "serial", "baud": 57600}
    assert isinstance(parse_config(json.dumps(doc).encode()), Config)


def test_missing_config_is_a_fault_not_an_exception(tmp_path: Path) -> None:
    fault = load_config(str(tmp_path / "absent.json"))
    assert isinstance(fault, Fault) and fault.reason.startswith("missing")


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[1, 2]", b"null"])
def test_corrupt_config_is_a_fault(raw: bytes) -> None:
    fault = parse_config(raw)
    assert isinstance(fault, Fault)
    assert fault.reason.startswith(("corrupt", "invalid"))


BROKEN: list[tuple[str, Any, str]] = [
    ("node", 0, "node:"),
    ("node", 2**32, "node:"),
    ("node", True, "node:"),
    ("role", "toaster", "role:"),
    ("key", "00" * 32, "all zero"),
    ("key", "ab" * 31, "64 hex digits"),
    ("key", "zz" * 32, "not hex"),
    ("uplink", {"transport": "carrier-pigeon"}, "uplink.transport"),
    ("uplink", {"transport": "mqtt", "host": "b", "user": "u"}, "uplink.password"),
    ("uplink", {"transport": "mqtt", "host": "b", "user": "u", "password": "p", "port": 0},
     "uplink.port"),
    ("location", {"lat": 910000000, "lon": 0}, "location.lat"),
    ("location", {"lat": 52.09, "lon": 5}, "10^-7 degrees"),
    ("location", {"lat": 0}, "location.lon"),
    ("settings", {"Bad": 1}, "settings: bad name"),
    ("settings", {"level": 0.5}, "settings.level"),
    ("intervals", {"telemetry": 0}, "intervals.telemetry"),
    ("group", 7, "group:"),
    ("wifi", {"password": "x"}, "wifi.ssid"),
]


@pytest.mark.parametrize(("field", "value", "reason"), BROKEN)
def test_invalid_fields_are_named(field: str, value: Any, reason: str) -> None:
    doc = valid_doc()
    doc[field] = value
    fault = parse_config(json.dumps(doc).encode())
    assert isinstance(fault, Fault)
    assert reason in fault.reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_config_or_a_fault(raw: bytes) -> None:
    assert isinstance(parse_config(raw), (Config, Fault))


def test_durable_record_keeps_the_previous_value_when_a_write_is_torn(tmp_path: Path) -> None:
    path = str(tmp_path / "rec")
    record = DurableRecord(path)
    record.save(b"first")
    record.save(b"second")
    assert DurableRecord(path).load() == b"second"
    newest = tmp_path / "rec.0"  # generation 2 went to slot 0
    newest.write_bytes(newest.read_bytes()[:-3])  # power cut mid-write
    assert DurableRecord(path).load() == b"first"
    again = DurableRecord(path)
    again.load()
    again.save(b"third")  # overwrites the torn slot, not the good one
    assert DurableRecord(path).load() == b"third"


def test_counter_survives_restarts(tmp_path: Path) -> None:
    path = str(tmp_path / "boot")
    assert Counter(path).value is None
    counter = Counter(path)
    for value in (1, 2, 2**64 - 1):
        counter.set(value)
        assert Counter(path).value == value


def test_boot_guard_enters_safe_mode_after_repeated_failures(tmp_path: Path) -> None:
    path = str(tmp_path / "failures")
    decisions = [BootGuard(path, limit=3).begin() for _ in range(5)]
    assert decisions == [False, False, False, True, True]
    guard = BootGuard(path, limit=3)
    assert guard.begin()
    guard.healthy()
    assert not BootGuard(path, limit=3).begin()


FIRMWARE = Path(__file__).resolve().parents[1] / "citisense_firmware"

MP_BOOT = """
import json
from citisense_firmware.config import BootGuard, DurableRecord, Fault
from citisense_firmware.config_load import load_config
out = []
for path in ('/config.json', '/missing.json', '/broken.json'):
    c = load_config(path)
    out.append(c.reason if isinstance(c, Fault) else [c.node_id, c.role, c.key.hex(),
               c.location, c.digest.hex()])
out.append([BootGuard('/tmp/fails').begin() for _ in range(5)])
g = BootGuard('/tmp/fails')
g.healthy()
out.append(BootGuard('/tmp/fails').begin())
r = DurableRecord('/tmp/rec')
r.save(b'one')
r.save(b'two')
with open('/tmp/rec.0', 'rb') as f:
    torn = f.read()[:-1]
with open('/tmp/rec.0', 'wb') as f:
    f.write(torn)
out.append(DurableRecord('/tmp/rec').load().decode())
print(json.dumps(out))
"""


@pytest.mark.micropython
def test_config_and_boot_guard_on_micropython(mp: Any) -> None:
    mp.install_package(FIRMWARE)
    raw = json.dumps(valid_doc()).encode()
    mp.put("/config.json", raw)
    mp.put("/broken.json", raw[:-5])
    config, missing, broken, decisions, after_healthy, record = json.loads(mp.run(MP_BOOT))
    assert config == [4711, "lighting", TEST_KEY_HEX, [520907000, 51214000],
                      digest(valid_doc()).hex()]
    assert missing == "missing: /missing.json"
    assert broken.startswith("corrupt: not JSON")
    assert decisions == [False, False, False, True, True]
    assert after_healthy is False
    assert record == "one"
