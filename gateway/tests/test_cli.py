"""`citisense gateway ...` commands against a store, as a technician and an operator use them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from gwkit import GatewayCli

from citisense_gateway import acl


def test_provision_and_broker_files(cli: GatewayCli, tmp_path: Path) -> None:
    secrets_file = tmp_path / "node-7.secrets.json"
    code, out, _ = cli("node", "add", "7", "--role", "lighting", "--zone", "centre",
                       "--street", "Kerkstraat", "--lat", "52.37", "--lon", "4.89",
                       "--label", "lamp 7, Kerkstraat", "--secrets-out", str(secrets_file))
    assert code == 0 and out[0]["broker_user"] == "7"
    secrets = json.loads(secrets_file.read_text())
    assert len(bytes.fromhex(secrets["mac_key"])) == 32
    shown = json.dumps(out)
    assert secrets["mac_key"] not in shown and secrets["broker_password"] not in shown
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    code, _, err = cli("node", "add", "7", "--role", "lighting", "--secrets-out",
                       str(tmp_path / "again.json"))
    assert code == 2 and err.strip() == "citisense gateway: node 7 is already registered"
    assert not (tmp_path / "again.json").exists()  # nothing half-made is left behind
    code, _, err = cli("node", "add", "9", "--role", "lighting", "--secrets-out",
                       str(secrets_file))
    assert code == 2 and "already exists" in err
    code, out, _ = cli("node", "list")
    assert [n["node"] for n in out] == [7]  # node 9 was not registered without its secrets
    code, _, err = cli("node", "add", "8", "--role", "air", "--lat", "52", "--secrets-out",
                       str(tmp_path / "eight.json"))
    assert code == 2 and "both latitude and longitude" in err
    code, out, _ = cli("broker-config", "--out", str(tmp_path / "broker"), "--port", "8883")
    assert code == 0 and out[0]["accounts"] == 2
    files = tmp_path / "broker"
    assert "user 7\ntopic read citisense/v1/7/down/#" in (files / "acl").read_text()
    assert [line.split(":")[0] for line in (files / "passwd").read_text().split()] == [
        "gateway", "7"]
    assert not (files / "passwd").stat().st_mode & 0o007  # owner and mode: test_broker_config
    assert "listener 8883 0.0.0.0" in (files / "mosquitto.conf").read_text()
    # Run again after provisioning (as a city does, then reloads the broker): the running
    # gateway's password stays; only --new-gateway-password rotates it.
    password = (files / "gateway.password").read_text()
    code, out, _ = cli("broker-config", "--out", str(files), "--port", "8883")
    assert code == 0 and (files / "gateway.password").read_text() == password
    assert out[0]["gateway_password"] == "kept"
    gateway_hash = (files / "passwd").read_text().split()[0].split(":", 1)[1]
    assert acl.verify_password(password.strip(), gateway_hash)
    assert stat.S_IMODE((files / "gateway.password").stat().st_mode) == 0o600
    code, out, _ = cli("broker-config", "--out", str(files), "--new-gateway-password")
    assert code == 0 and (files / "gateway.password").read_text() != password
    assert out[0]["gateway_password"].startswith("new: reload the broker")
    code, out, _ = cli("node", "list", "--zone", "centre")
    assert [n["node"] for n in out] == [7]


def test_schedules_commands_and_views(cli: GatewayCli, tmp_path: Path) -> None:
    cli("node", "add", "7", "--role", "lighting", "--street", "Kerkstraat", "--lat", "52.37",
        "--lon", "4.89", "--secrets-out", str(tmp_path / "7.json"))
    cli("node", "add", "8", "--role", "parking", "--zone", "market", "--secrets-out",
        str(tmp_path / "8.json"))
    definition = tmp_path / "night.toml"
    definition.write_text('timezone = "Europe/Amsterdam"\n'
                          '[[steps]]\nat = "dusk"\nlevel = 100\n'
                          '[[steps]]\nat = "dawn"\nlevel = 0\n')
    code, out, _ = cli("schedule", "save", "night", str(definition))
    assert code == 0 and out[0]["version"] == 1
    code, out, _ = cli("schedule", "preview", "night", "--at-node", "7", "--date", "2026-06-21",
                       "--tz", "Europe/Amsterdam")
    assert [c["level"] for c in out] == [0, 100, 0]
    assert str(out[1]["at"]).startswith("2026-06-21T22:0")  # midsummer dusk in Amsterdam
    code, out, _ = cli("schedule", "assign", "night", "--street", "Kerkstraat")
    assert code == 0 and [c["node"] for c in out] == [7]
    code, _, err = cli("schedule", "assign", "night", "--node", "8")
    assert code == 2 and "node 8 is a parking node" in err
    code, out, _ = cli("command", "dim", "--node", "7", "40", "600", "--note", "roadworks")
    assert code == 0 and out[0]["state"] == "pending"
    code, _, err = cli("command", "dim", "--node", "7", "140", "600")
    assert code == 2 and "level out of range 0..100" in err
    code, out, _ = cli("command", "reserve", "--zone", "market", "1767232800", "1767240000")
    assert code == 0
    code, out, _ = cli("parking")
    assert out == [{"zone": "market", "free": 0, "occupied": 0, "reserved": 0, "unknown": 1,
                    "total": 1}]
    code, out, _ = cli("schedule", "rollout", "night")
    assert out == [{"node_id": 7, "desired": 1, "reported": None, "state": "pending"}]
    code, out, _ = cli("twin", "--id", "7")
    assert out[0]["status"] == "never-seen" and out[0]["desired_schedule"] == "night"
    code, out, _ = cli("audit", "--limit", "3")
    assert {e["user"] for e in out} == {"tess"}


def test_bad_configuration_stops_with_one_sentence(cli: GatewayCli) -> None:
    code, _, err = cli("run", "--set", "mqtt.receive_maximum=lots")
    assert code == 2
    assert err.strip() == ("citisense gateway: mqtt.receive_maximum = 'lots' (from command "
                           "line): expected an integer")
