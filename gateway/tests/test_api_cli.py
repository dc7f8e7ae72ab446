"""The operator CLI (`citisense nodes|schedule|override|bays|users|login`) against a
running gateway API with a simulated street."""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from citisense_gateway.api.devserver import FLEET, SILENT, DevGateway, Threaded, running
from citisense_tools import cli, operator_cmds

PASSWORD = "the first admin's secret"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Threaded]:
    db = tmp_path_factory.mktemp("cli") / "gw.db"
    with running(DevGateway(db, period=3600, hasher=FAST)) as t:
        yield t


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
                 ) -> None:
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = cli.main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str, stdin: str = "") -> str:
        code, out, err = self(*argv, stdin=stdin)
        assert code == 0, f"citisense {' '.join(argv)}: {err}"
        return out

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "--json"))


@pytest.fixture
def run(gateway: Threaded, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    if operator_cmds.register not in cli.REGISTRARS:
        monkeypatch.setattr(cli, "REGISTRARS", [*cli.REGISTRARS, operator_cmds.register])
    monkeypatch.setenv(operator_cmds.CONFIG_ENV, str(tmp_path / "operator.json"))
    monkeypatch.setenv(operator_cmds.URL_ENV, gateway.gateway.url)
    monkeypatch.delenv(operator_cmds.TOKEN_ENV, raising=False)
    return Cli(capsys, monkeypatch)


def first_admin(run: Cli, gateway: Threaded) -> None:
    """`citisense users add --role admin` on the gateway's machine, then log in."""
    if not any(u.name == "root-admin" for u in gateway.call(gateway.gateway.accounts.users())):
        out = run.ok("users", "add", "root-admin", "--role", "admin", "--store",
                     f"sqlite:///{gateway.gateway.db}", stdin=PASSWORD + "\n")
        assert out.strip() == "added root-admin"
    run.ok("login", "--user", "root-admin", stdin=PASSWORD + "\n")


def test_first_admin_then_login(run: Cli, gateway: Threaded) -> None:
    code, _, err = run("nodes")
    assert code == 2 and "not logged in: run `citisense login`" in err
    first_admin(run, gateway)
    saved = Path(os.environ[operator_cmds.CONFIG_ENV])
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["token"].startswith("cs_")
    code, _, err = run("login", "--user", "root-admin", stdin="wrong password\n")
    assert code == 2 and "wrong user name or password" in err
    # Logged in, account changes go through the API and the audit log.
    assert run.ok("users", "add", "dana", "--role", "viewer",
                  stdin="dana's password\n").strip() == "added dana"
    users = run.json("users", "list")
    assert {(u["username"], u["role"]) for u in users} >= {("root-admin", "admin"),
                                                            ("dana", "viewer")}
    code, _, err = run("users", "add", "eve", "--role", "viewer", stdin="short\n")
    assert code == 2 and "password" in err and "HTTP 422" in err
    run.ok("logout")
    code, _, err = run("nodes")
    assert code == 2 and "not logged in" in err


def test_nodes(run: Cli, gateway: Threaded) -> None:
    first_admin(run, gateway)
    nodes = run.json("nodes")
    assert isinstance(nodes, list) and len(nodes) == len(FLEET)
    table = run.ok("nodes", "--role", "parking").splitlines()
    assert table[0].split()[:4] == ["node", "role", "zone", "street"]
    assert len(table) == 2 + sum(p.role == "parking" for p in FLEET)
    assert "lamp out" in run.ok("nodes", "105")
    code, _, err = run("nodes", "999")
    assert code == 2 and "node 999 is not registered (HTTP 404)" in err


def test_schedule_create_preview_assign(run: Cli, gateway: Threaded) -> None:
    first_admin(run, gateway)
    code, _, err = run("schedule", "create", "late", "--step", "dusk:150", "--step", "dawn:0")
    assert code == 2 and "body.steps[0].level" in err
    out = run.ok("schedule", "create", "late", "--step", "dusk:100", "--step", "23:30:40",
                 "--step", "dawn-15:0", "--timezone", "Europe/Amsterdam")
    assert "saved" in out and "dawn-15min 0%" in out
    listed = run.json("schedule", "list")
    assert [s["name"] for s in listed] == ["late"]
    preview = run.ok("schedule", "preview", "late", "--zone", "centrum", "--date", "2026-12-21")
    assert "dusk 2026-12-21" in preview and "dawn 2026-12-22" in preview
    assert [line.split()[2] for line in preview.splitlines()[4:]] == ["0", "100", "40", "0"]
    out = run.ok("schedule", "assign", "late", "--zone", "centrum", "--wait", "30s")
    assert "assigned to 12 nodes" in out
    rollout = run.json("schedule", "rollout", "late")
    lamps = [p.node_id for p in FLEET if p.zone == "centrum" and p.role == "lighting"]
    assert rollout["summary"]["running"] == len(set(lamps) - SILENT)
    code, _, err = run("schedule", "assign", "late", "--zone", "nowhere")
    assert code == 2 and "no lighting nodes in zone 'nowhere'" in err


def test_override_and_bays(run: Cli, gateway: Threaded) -> None:
    first_admin(run, gateway)
    out = run.ok("override", "--zone", "station", "--level", "30", "--for", "10m",
                 "--note", "market")
    assert out.startswith("override 30 % until") and "on 6 lamps" in out
    assert "ended on 6 lamps" in run.ok("override", "--zone", "station", "--end")
    code, _, err = run("override", "--zone", "station", "--level", "30")
    assert code == 2 and "--for" in err
    out = run.ok("bays", "reserve", "304", "--for", "2h")
    assert out.startswith("bay 304 (bay 4, Neude) reserved")
    listed = run.json("bays", "list")
    assert [r["node_id"] for r in listed["reservations"]] == [304]
    assert "bay 304 released" in run.ok("bays", "release", "304")
    code, _, err = run("bays", "reserve", "101", "--for", "1h")
    assert code == 2 and "not a parking bay" in err


def test_unreachable_api(run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(operator_cmds.TOKEN_ENV, "cs_whatever")
    code, _, err = run("nodes", "--api-url", "http://127.0.0.1:9")
    assert code == 2 and "cannot reach the gateway API at http://127.0.0.1:9" in err
