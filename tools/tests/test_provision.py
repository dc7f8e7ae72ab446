"""citisense provision: a new identity registered with the gateway's registry, a config
file the firmware accepts, created 0600, and secrets that never reach the screen or logs."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from citisense_firmware import config as firmware_config
from citisense_firmware import config_load as firmware_config_load
from citisense_gateway import acl
from citisense_gateway.api.devserver import FLEET, DevGateway, Threaded, running
from citisense_gateway.simnode import SimNode
from citisense_gateway.store import open_store
from citisense_gateway.store.base import Node
from citisense_protocols import messages
from citisense_tools import cli, commissioning, flash, operator_cmds, provision

STREET = ["--lat", "52.0907", "--lon", "5.1214", "--zone", "centre", "--street", "oudegracht"]


def _nodes(url: str) -> list[Node]:
    async def read() -> list[Node]:
        store = open_store(url)
        await store.open()
        try:
            return await store.nodes()
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, store_url: str) -> Callable[..., int]:
    monkeypatch.setattr(cli, "REGISTRARS", [provision.register])

    def run(*args: str) -> int:
        return cli.main(["provision", "--store", store_url, "--user", "tech-anna", *args])

    return run


def test_provision_registers_the_node_and_writes_its_config(
        run: Callable[..., int], tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "node.json"
    assert run("--role", "lighting", "--board", "olimex-esp32-poe", "--broker-host",
               "broker.city", "--out", str(out), *STREET) == 0
    printed = capsys.readouterr()
    raw = out.read_bytes()
    doc = json.loads(raw)

    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    config = firmware_config_load.parse_config(raw)
    assert isinstance(config, firmware_config.Config), config
    assert (config.node_id, config.role, config.board) == (1, "lighting", "olimex-esp32-poe")
    assert config.location == [520907000, 51214000]
    assert doc["uplink"] == {"transport": "mqtt", "host": "broker.city", "port": 1883,
                             "user": "1", "password": doc["uplink"]["password"]}

    (node,) = _nodes(store_url)
    assert node.node_id == 1 and node.mac_key == bytes.fromhex(doc["key"])
    assert len(node.mac_key) == 32 and node.mac_key != bytes(32)
    assert acl.verify_password(doc["uplink"]["password"], node.broker_hash)
    assert (node.zone, node.street, node.lat, node.lon) == ("centre", "oudegracht", 52.0907,
                                                            5.1214)

    for secret in (doc["key"], doc["key"].upper(), doc["uplink"]["password"]):
        assert secret not in printed.out and secret not in printed.err
        assert secret not in caplog.text
    assert "node 1 registered" in printed.out


def test_the_file_is_private_whatever_the_umask(run: Callable[..., int], tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert run("--role", "air", "--board", "olimex-esp32-poe", "--broker-host", "b",
                   "--out", str(tmp_path / "n.json"), *STREET) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "n.json").stat().st_mode) == 0o600


def test_ids_are_allocated_and_never_reused(run: Callable[..., int], tmp_path: Path, store_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--board", "olimex-esp32-poe", "--broker-host", "b", *STREET]
    assert run("--role", "parking", "--out", str(tmp_path / "a.json"), *common) == 0
    assert run("--role", "parking", "--out", str(tmp_path / "b.json"), *common) == 0
    assert [n.node_id for n in _nodes(store_url)] == [1, 2]
    keys = {json.loads((tmp_path / f).read_text())["key"] for f in ("a.json", "b.json")}
    assert len(keys) == 2
    capsys.readouterr()
    assert run("--role", "parking", "--node", "2", "--out", str(tmp_path / "c.json"),
               *common) == 2
    assert "node 2 is already registered" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_an_existing_file_is_never_overwritten(
        run: Callable[..., int], tmp_path: Path, store_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "node.json"
    out.write_text("another node's key")
    assert run("--role", "lighting", "--board", "olimex-esp32-poe", "--broker-host", "b",
               "--out", str(out), *STREET) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "another node's key"
    assert _nodes(store_url) == []  # refused before registering anything


def test_a_config_that_cannot_be_written_undoes_the_registration(
        run: Callable[..., int], tmp_path: Path, store_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--role", "lighting", "--board", "olimex-esp32-poe", "--broker-host", "b",
               "--out", str(tmp_path / "missing-folder" / "n.json"), *STREET) == 2
    assert "cannot create" in capsys.readouterr().err
    assert _nodes(store_url) == []


def test_wifi_boards_need_a_network_and_get_it_in_their_config(
        run: Callable[..., int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--role", "lighting", "--board", "esp32-devkitc", "--broker-host", "b", *STREET]
    assert run(*common, "--out", str(tmp_path / "a.json")) == 2
    assert "--wifi-ssid" in capsys.readouterr().err
    monkeypatch.setenv(provision.WIFI_PASSWORD_ENV, "wifi-secret-123")
    assert run(*common, "--wifi-ssid", "city-iot", "--out", str(tmp_path / "b.json")) == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["wifi"] == {"ssid": "city-iot", "password": "wifi-secret-123"}
    assert "wifi-secret-123" not in capsys.readouterr().out
    assert isinstance(firmware_config_load.parse_config((tmp_path / "b.json").read_bytes()),
                      firmware_config.Config)


def test_a_serial_node_gets_no_broker_credentials(run: Callable[..., int], tmp_path: Path) -> None:
    assert run("--role", "parking", "--board", "esp32-devkitc", "--serial", "--baud", "57600",
               "--out", str(tmp_path / "n.json"), *STREET) == 0
    doc = json.loads((tmp_path / "n.json").read_text())
    assert doc["uplink"] == {"transport": "serial", "baud": 57600}


def test_bad_places_are_refused_in_words(run: Callable[..., int], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--role", "lighting", "--board", "olimex-esp32-poe", "--broker-host", "b",
               "--lat", "95", "--lon", "5", "--out", str(tmp_path / "n.json")) == 2
    assert "location.lat" in capsys.readouterr().err


# -- through a running gateway's API --------------------------------------------------------
TECH_PASSWORD = "the technician's secret"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
BOARD = ["--board", "olimex-esp32-poe", "--broker-host", "broker.city", *STREET]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Threaded]:
    db = tmp_path_factory.mktemp("provision-api") / "gw.db"
    placements = [p for p in FLEET if p.node_id in (101, 301)]
    with running(DevGateway(db, placements=placements, period=3600, hasher=FAST)) as t:
        for name, role in (("tech-bo", "technician"), ("op-cy", "operator")):
            t.call(t.gateway.accounts.add_user(name, TECH_PASSWORD, role, by="test"))
        yield t


@pytest.fixture
def api_cli(gateway: Threaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`citisense ARGS` with the operator commands, against the gateway; nobody logged in."""
    monkeypatch.setattr(cli, "REGISTRARS", [provision.register, operator_cmds.register])
    monkeypatch.setenv(operator_cmds.CONFIG_ENV, str(tmp_path / "operator.json"))
    monkeypatch.setenv(operator_cmds.URL_ENV, gateway.gateway.url)
    monkeypatch.delenv(operator_cmds.TOKEN_ENV, raising=False)

    def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def login(api_cli: Callable[..., tuple[int, str, str]], user: str) -> None:
    code, _, err = api_cli("login", "--user", user, stdin=TECH_PASSWORD + "\n")
    assert code == 0, err


def registered(gateway: Threaded) -> dict[int, Node]:
    store = gateway.gateway.store
    assert store is not None
    return {n.node_id: n for n in gateway.call(store.nodes())}


def test_provision_registers_through_the_gateway_api(
        api_cli: Callable[..., tuple[int, str, str]], gateway: Threaded, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    login(api_cli, "tech-bo")
    out = tmp_path / "node.json"
    code, printed, err = api_cli("provision", "--role", "lighting", "--label", "lamp 3",
                                 "--out", str(out), *BOARD)
    assert code == 0, err
    raw = out.read_bytes()
    doc = json.loads(raw)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert isinstance(firmware_config_load.parse_config(raw), firmware_config.Config)
    assert f"registered with the gateway at {gateway.gateway.url}" in printed

    node = registered(gateway)[doc["node"]]
    assert node.mac_key == bytes.fromhex(doc["key"]) and node.role == "lighting"
    assert doc["uplink"]["user"] == str(node.node_id)
    assert acl.verify_password(doc["uplink"]["password"], node.broker_hash)
    assert (node.zone, node.street, node.label) == ("centre", "oudegracht", "lamp 3")
    found = gateway.gateway.keyring.get(node.node_id)
    assert found is not None and found.key == node.mac_key  # the gateway checks it at once

    store = gateway.gateway.store
    assert store is not None
    entry = next(e for e in gateway.call(store.audit_log())
                 if (e.action, e.target) == ("node.add", str(node.node_id)))
    assert entry.user == "tech-bo"  # the logged-in technician, not --user
    for secret in (doc["key"], doc["key"].upper(), doc["uplink"]["password"]):
        assert secret not in printed and secret not in err
        assert secret not in caplog.text and secret not in entry.details


def test_provision_through_the_api_refuses_in_words(
        api_cli: Callable[..., tuple[int, str, str]], gateway: Threaded,
        tmp_path: Path) -> None:
    before = registered(gateway)
    out = tmp_path / "n.json"
    code, _, err = api_cli("provision", "--role", "air", "--out", str(out), *BOARD)
    assert code == 2
    assert "not logged in: run `citisense login` or give --store on the gateway host" in err

    login(api_cli, "op-cy")
    code, _, err = api_cli("provision", "--role", "air", "--out", str(out), *BOARD)
    assert code == 2 and "needs the technician role" in err and "HTTP 403" in err

    login(api_cli, "tech-bo")
    code, _, err = api_cli("provision", "--role", "air", "--node", "101", "--out", str(out),
                           *BOARD)
    assert code == 2 and "node 101 is already registered: choose another --node" in err
    code, _, err = api_cli("provision", "--role", "air", "--out", str(out), "--api",
                           gateway.gateway.url, "--store", "sqlite:///x.db", *BOARD)
    assert code == 2 and "not both" in err
    assert not out.exists()
    # A config that cannot be written: the registration is undone through the API.
    code, _, err = api_cli("provision", "--role", "air", "--out",
                           str(tmp_path / "missing" / "n.json"), *BOARD)
    assert code == 2 and "cannot create" in err
    assert registered(gateway).keys() == before.keys()


def test_store_flag_still_registers_straight_into_the_database(
        api_cli: Callable[..., tuple[int, str, str]], gateway: Threaded, tmp_path: Path,
        store_url: str) -> None:
    login(api_cli, "tech-bo")  # logged in, yet --store on the gateway host wins
    before = registered(gateway)
    code, printed, err = api_cli("provision", "--role", "parking", "--store", store_url,
                                 "--user", "bootstrap", "--out", str(tmp_path / "n.json"),
                                 *BOARD)
    assert code == 0, err
    assert "node 1 registered with the gateway's store" in printed
    assert [n.node_id for n in _nodes(store_url)] == [1]
    assert registered(gateway).keys() == before.keys()


def test_flash_watches_the_birth_through_the_gateway_api(
        api_cli: Callable[..., tuple[int, str, str]], gateway: Threaded) -> None:
    """A logged-in technician's flash sees the node's birth as the gateway accepted it: no
    broker account needed, and a birth the gateway refused (wrong key) is never taken."""
    login(api_cli, "tech-bo")
    source = flash.birth_source(argparse.Namespace(broker=None, api_url=None, token_file=None))
    assert isinstance(source, commissioning.ApiBirthSource)
    source.POLL_S = 0.1
    street = gateway.gateway.street
    lamp = street.nodes[101]

    async def offer(message: bytes) -> None:
        street.offer(101, messages.BIRTH, message)

    with source.watch(101, None) as wait:
        assert wait(0.3) is None  # the births the gateway had before do not count
        forged = SimNode(101, bytes(32), "lighting", boot=lamp.boot + 1)  # not its key
        gateway.call(offer(forged.birth()))
        assert wait(1.0) is None
        lamp.boot += 1  # the node restarts after the flash
        gateway.call(offer(lamp.birth()))
        birth = wait(10)
    assert birth is not None and birth.verified
    assert (birth.node, birth.fw, birth.role, birth.cfg) == (101, "1.0.0", "lighting",
                                                             lamp.config_hash.hex())
