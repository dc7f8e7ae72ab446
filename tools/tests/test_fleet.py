"""`citisense fleet`: provisioning simulated nodes like real ones, their folders, the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import stat
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_gateway import acl
from citisense_gateway.store import open_store
from citisense_tools import fleet, node_config
from citisense_tools.errors import CommandError


@given(st.integers(0, 200), st.dictionaries(st.sampled_from(["lighting", "parking", "air"]),
                                            st.integers(0, 9), min_size=1))
def test_role_mix_is_followed_within_one_node(count: int, mix: dict[str, int]) -> None:
    if sum(mix.values()) == 0:
        with pytest.raises(CommandError):
            fleet.role_sequence(count, mix)
        return
    roles = fleet.role_sequence(count, mix)
    total = sum(mix.values())
    assert len(roles) == count
    for role, weight in mix.items():
        assert abs(Counter(roles)[role] - count * weight / total) <= 1


def test_roles_are_interleaved_along_the_street() -> None:
    roles = fleet.role_sequence(10, fleet.DEFAULT_MIX)
    assert roles == ["lighting", "parking", "lighting", "lighting", "parking", "lighting", "air",
                     "lighting", "parking", "lighting"]


async def test_provisioned_nodes_are_registered_and_configured(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.open()
    try:
        specs = await fleet.provision_nodes(store, 10)
        more = await fleet.provision_nodes(store, 2)
        registered = {node.node_id: node for node in await store.nodes()}
    finally:
        await store.close()
    assert [s.node_id for s in specs + more] == list(range(1, 13))
    for spec in specs:
        node = registered[spec.node_id]
        assert node.role == spec.role and node.mac_key == spec.key
        assert acl.verify_password(spec.broker_password, node.broker_hash)
        assert spec.broker_password not in repr(spec) and spec.key.hex() not in repr(spec)
        folder = fleet.write_config(tmp_path / "fleet", spec, "broker.local", 1883)
        path = folder / "config.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the key
        doc = node_config.parse_config(path.read_bytes())  # the firmware accepts it
        assert doc["uplink"]["user"] == str(spec.node_id) and doc["board"] == fleet.BOARD
    assert fleet.specs_from_directory(tmp_path / "fleet") == specs
    air = next(s for s in specs if s.role == "air")
    assert dict(air.settings) == fleet.AIR_SETTINGS  # the simulated cell's calibration sheet


@pytest.mark.parametrize(("url", "expected"), [
    ("mqtt://broker.city:1884", ("broker.city", 1884)),
    ("127.0.0.1:1883", ("127.0.0.1", 1883)),
    ("mqtt://broker", ("broker", 1883)),
])
def test_broker_urls(url: str, expected: tuple[str, int]) -> None:
    assert fleet.parse_broker(url) == expected


@pytest.mark.parametrize("url", ["mqtts://broker:8883", "mqtt://:1883", "mqtt://b:port"])
def test_broker_urls_the_fleet_cannot_use(url: str) -> None:
    with pytest.raises(CommandError):
        fleet.parse_broker(url)


def test_role_mix_text() -> None:
    assert fleet.parse_mix("lighting=2, air=1") == {"lighting": 2, "air": 1}
    for bad in ("lighting", "sewer=1", "air=-1"):
        with pytest.raises(CommandError):
            fleet.parse_mix(bad)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="citisense")
    fleet.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["fleet", *argv])


def test_the_command_registers_nodes_once_and_reuses_their_folders(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path / 'gateway.db'}"
    common = ["--broker", "mqtt://127.0.0.1:9", "--store", store, "--dir", str(tmp_path / "f"),
              "--duration", "0.3", "--mix", "parking=1"]
    args = parse("--nodes", "2", *common)
    assert args.run(args) == 0
    assert "registered 2 new nodes" in capsys.readouterr().out
    first = json.loads((tmp_path / "f" / "node-1" / "config.json").read_text())
    args = parse("--nodes", "3", *common)
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "registered 1 new node;" in out and "3 nodes" in out
    assert json.loads((tmp_path / "f" / "node-1" / "config.json").read_text()) == first

    async def count() -> int:
        registry = open_store(store)
        await registry.open()
        try:
            return len(await registry.nodes())
        finally:
            await registry.close()

    assert asyncio.run(count()) == 3
    # The nodes ran: each kept its boot counter in its own folder.
    assert all(list((tmp_path / "f" / f"node-{n}" / "state").glob("boot.*")) for n in (1, 2, 3))


def test_the_command_explains_bad_arguments(tmp_path: Path) -> None:
    args = parse("--nodes", "0", "--broker", "mqtt://b", "--dir", str(tmp_path))
    with pytest.raises(CommandError, match="at least 1"):
        args.run(args)
