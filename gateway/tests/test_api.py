"""The operators' HTTP API against a real gateway core (SQLite store, ingest, commands,
reconciler) whose nodes are simulated (SimNode answers commands as the firmware does)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from citisense_gateway import acl
from citisense_gateway.api import document
from citisense_gateway.api.accounts import Accounts
from citisense_gateway.api.app import WEB, default_accounts
from citisense_gateway.api.devserver import FAULTY_AIR, FAULTY_LAMP, FLEET, SILENT, DevGateway
from citisense_gateway.simnode import SimNode
from citisense_gateway.store import open_store
from citisense_gateway.store.base import Conflict, IngestBatch, TwinUpdate
from citisense_gateway.store.sqlite import SqliteDatabase
from citisense_protocols import messages

PASSWORD = "correct horse battery"
# Cheap Argon2 parameters: the tests log in a lot; the hash's strength is not under test.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ROLES = ("viewer", "operator", "technician", "admin")
# POSTs that change nothing, or only the caller's own session or password.
SELF_SERVICE = {"/api/v1/auth/login", "/api/v1/auth/logout", "/api/v1/auth/password",
                "/api/v1/schedules/validate", "/api/v1/schedules/preview"}
NIGHT = {"timezone": "Europe/Amsterdam",
         "steps": [{"at": "dusk", "level": 100}, {"at": "23:30", "level": 40},
                   {"at": "dawn", "offset": -15, "level": 0}]}
CENTRUM_LAMPS = sorted(p.node_id for p in FLEET if p.zone == "centrum" and p.role == "lighting")
STATION_LAMPS = sorted(p.node_id for p in FLEET if p.zone == "station" and p.role == "lighting")


class Client:
    """An httpx client that logs in as one user per role."""

    def __init__(self, http: httpx.AsyncClient, gateway: DevGateway) -> None:
        self.http = http
        self.gateway = gateway
        self.tokens: dict[str, str] = {}

    async def login(self, name: str, password: str = PASSWORD) -> str:
        r = await self.http.post("/api/v1/auth/login",
                                 json={"username": name, "password": password})
        assert r.status_code == 200, r.text
        token: str = r.json()["token"]
        return token

    async def as_(self, role: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return await self.http.request(method, path, headers=headers, **kw)

    async def ok(self, role: str, method: str, path: str, **kw: Any) -> Any:
        r = await self.as_(role, method, path, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Client]:
    gateway = DevGateway(tmp_path / "gw.db", period=3600, hasher=FAST)
    await gateway.start()
    client = Client(httpx.AsyncClient(base_url=gateway.url, timeout=30), gateway)
    for role in ROLES:
        await gateway.accounts.add_user(role, PASSWORD, role, by="test")
        client.tokens[role] = await client.login(role)
    await settle(client)
    try:
        yield client
    finally:
        await client.http.aclose()
        await gateway.stop()


async def settle(client: Client) -> None:
    """Until the simulated nodes' first messages are stored."""
    await until(lambda: online(client), "the simulated nodes come online")


async def online(client: Client) -> bool:
    nodes = await client.ok("viewer", "GET", "/api/v1/nodes")
    return bool(sum(n["status"] == "online" for n in nodes) == len(FLEET) - len(SILENT))


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting until {what}")
        await asyncio.sleep(0.1)


def operations(*, mutating: bool | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path with its parameters filled in, operation) from the OpenAPI document."""
    found = []
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            changes = method != "get" and path not in SELF_SERVICE
            if mutating is not None and changes != mutating:
                continue
            filled = re.sub(r"\{(\w+)\}", lambda m: "x" if m.group(1) in ("name", "username",
                            "zone") else "301", path)
            found.append((method.upper(), filled, op))
    return found


def needed_role(path: str, method: str) -> str:
    if path.startswith("/api/v1/users"):
        return "admin"
    if re.fullmatch(r"/api/v1/nodes/\d+/commands", path):
        return "technician"
    if path == "/api/v1/nodes" or re.fullmatch(r"/api/v1/nodes/\d+", path):
        return "technician"  # registering and removing nodes
    return "operator"


# -- authentication and roles ---------------------------------------------------------------
async def test_every_operation_needs_a_login(api: Client) -> None:
    for method, path, _ in operations():
        if path in ("/api/v1/auth/login", "/api/v1/health"):
            continue
        for headers in ({}, {"Authorization": "Bearer cs_not-a-token"},
                        {"Authorization": "Basic YWRtaW46YWRtaW4="}):
            r = await api.http.request(method, path, headers=headers, json={})
            assert r.status_code == 401, f"{method} {path} {headers}: {r.status_code}"
            assert r.headers["www-authenticate"] == "Bearer"
            assert "log in" in r.json()["error"]


async def test_a_viewer_cannot_change_anything(api: Client) -> None:
    before = await api.ok("admin", "GET", "/api/v1/audit")
    mutating = operations(mutating=True)
    assert len(mutating) >= 10
    for method, path, _ in mutating:
        needed = needed_role(path, method)
        for role in ROLES[: ROLES.index(needed)]:
            r = await api.as_(role, method, path, json={})
            assert r.status_code == 403, f"{role} {method} {path}: {r.status_code} {r.text}"
            assert f"needs the {needed} role" in r.json()["error"]
    after = await api.ok("admin", "GET", "/api/v1/audit")
    assert [e for e in after if e["user"] in ("viewer", "operator", "technician")
            and e["action"] != "user.login"] == []
    assert len(after) == len(before)


async def test_wrong_password_and_logout(api: Client) -> None:
    r = await api.http.post("/api/v1/auth/login", json={"username": "admin", "password": "x"})
    assert r.status_code == 401 and r.json()["error"] == "wrong user name or password"
    r = await api.http.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"})
    assert r.status_code == 401
    token = await api.login("viewer")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.http.get("/api/v1/auth/me", headers=headers)).json()["role"] == "viewer"
    assert (await api.http.post("/api/v1/auth/logout", headers=headers)).status_code == 200
    assert (await api.http.get("/api/v1/auth/me", headers=headers)).status_code == 401


async def test_no_account_exists_until_one_is_created(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "empty.db")
    await db.open()
    try:
        accounts = Accounts(db, hasher=FAST)
        assert await accounts.users() == []
        for name, password in (("admin", "admin"), ("admin", ""), ("root", "root")):
            assert await accounts.login(name, password, 60) is None
    finally:
        await db.close()


async def test_accounts_admin(api: Client) -> None:
    r = await api.as_("admin", "POST", "/api/v1/users",
                      json={"username": "dana", "password": "short", "role": "operator"})
    assert r.status_code == 422
    assert r.json()["fields"][0]["field"] == "body.password"
    r = await api.as_("admin", "POST", "/api/v1/users",
                      json={"username": "Dana!", "password": PASSWORD, "role": "operator"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.username"
    r = await api.as_("admin", "POST", "/api/v1/users",
                      json={"username": "dana", "password": PASSWORD, "role": "boss"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.role"
    created = await api.ok("admin", "POST", "/api/v1/users",
                           json={"username": "dana", "password": PASSWORD, "role": "operator"})
    assert created == {"username": "dana", "role": "operator", "created_at": created[
        "created_at"], "created_by": "admin"}
    r = await api.as_("admin", "POST", "/api/v1/users",
                      json={"username": "dana", "password": PASSWORD, "role": "viewer"})
    assert r.status_code == 409
    dana = await api.login("dana")
    # A new password ends the user's other sessions.
    await api.ok("admin", "PATCH", "/api/v1/users/dana", json={"password": "another long one"})
    r = await api.http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {dana}"})
    assert r.status_code == 401
    await api.ok("admin", "PATCH", "/api/v1/users/dana", json={"role": "viewer"})
    dana = await api.login("dana", "another long one")
    r = await api.http.post("/api/v1/overrides", headers={"Authorization": f"Bearer {dana}"},
                            json={"zone": "centrum", "level": 10, "duration_s": 60})
    assert r.status_code == 403
    # The last admin stays.
    r = await api.as_("admin", "DELETE", "/api/v1/users/admin")
    assert r.status_code == 409 and "last admin" in r.json()["error"]
    r = await api.as_("admin", "PATCH", "/api/v1/users/admin", json={"role": "operator"})
    assert r.status_code == 409
    await api.ok("admin", "DELETE", "/api/v1/users/dana")
    assert (await api.as_("admin", "DELETE", "/api/v1/users/dana")).status_code == 404
    actions = [(e["user"], e["action"], e["target"])
               for e in await api.ok("admin", "GET", "/api/v1/audit")]
    for entry in (("admin", "user.add", "dana"), ("admin", "user.password", "dana"),
                  ("admin", "user.role", "dana"), ("admin", "user.remove", "dana")):
        assert entry in actions


async def test_own_password_change_needs_the_current_one(api: Client) -> None:
    r = await api.as_("viewer", "POST", "/api/v1/auth/password",
                      json={"current": "wrong", "new": "a brand new secret"})
    assert r.status_code == 403 and r.json()["fields"][0]["field"] == "body.current"
    await api.ok("viewer", "POST", "/api/v1/auth/password",
                 json={"current": PASSWORD, "new": "a brand new secret"})
    await api.ok("viewer", "GET", "/api/v1/auth/me")  # this session goes on
    await api.login("viewer", "a brand new secret")


# -- nodes ----------------------------------------------------------------------------------
async def test_nodes_filters_and_detail(api: Client) -> None:
    parking = await api.ok("viewer", "GET", "/api/v1/nodes", params={"role": "parking"})
    assert {n["role"] for n in parking} == {"parking"}
    assert len(parking) == sum(p.role == "parking" for p in FLEET)
    centrum = await api.ok("viewer", "GET", "/api/v1/nodes",
                           params={"zone": "centrum", "role": "lighting"})
    assert [n["node_id"] for n in centrum] == CENTRUM_LAMPS
    never = await api.ok("viewer", "GET", "/api/v1/nodes", params={"state": "never-seen"})
    assert [n["node_id"] for n in never] == sorted(SILENT)
    r = await api.as_("viewer", "GET", "/api/v1/nodes", params={"state": "asleep"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "query.state"

    lamp = await api.ok("viewer", "GET", f"/api/v1/nodes/{FAULTY_LAMP}")
    assert lamp["status"] == "online" and lamp["firmware"] == "1.0.0"
    assert lamp["last_telemetry"]["flags"] == ["lamp out"]
    assert set(lamp["last_telemetry"]["values"]) == {"level_pct", "source", "power_w",
                                                     "energy_wh", "lux"}
    air = await api.ok("viewer", "GET", "/api/v1/nodes/401")
    assert {"pm25_ugm3", "temp_c", "pressure_hpa"} <= set(air["last_telemetry"]["values"])
    r = await api.as_("viewer", "GET", "/api/v1/nodes/999")
    assert r.status_code == 404 and r.json()["error"] == "node 999 is not registered"
    series = await api.ok("viewer", "GET", "/api/v1/nodes/301/telemetry")
    assert series and series[-1]["values"]["state"] in ("free", "occupied")
    births = await api.ok("viewer", "GET", f"/api/v1/nodes/{FAULTY_LAMP}/births")
    newest = births[0]
    assert (newest["firmware"], newest["boot"], newest["role"], newest["board"],
            newest["config_hash"]) == (lamp["firmware"], lamp["boot"], "lighting",
                                       lamp["board"], lamp["config_hash"])
    assert [b["received_at"] for b in births] == sorted((b["received_at"] for b in births),
                                                        reverse=True)
    r = await api.as_("viewer", "GET", "/api/v1/nodes/999/births")
    assert r.status_code == 404


async def test_maintenance_commands(api: Client) -> None:
    c = await api.ok("technician", "POST", "/api/v1/nodes/101/commands",
                     json={"op": "identify", "seconds": 20})
    assert (c["op"], c["args"], c["created_by"]) == ("identify", 20, "technician")
    r = await api.as_("technician", "POST", "/api/v1/nodes/101/commands",
                      json={"op": "reboot", "seconds": 20})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.seconds"
    r = await api.as_("technician", "POST", "/api/v1/nodes/101/commands",
                      json={"op": "explode"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.op"

    async def acked() -> bool:
        found = await api.ok("viewer", "GET", f"/api/v1/commands/{c['command_id']}")
        return bool(found["state"] == "acked" and found["result"] == "ok")

    await until(acked, "the node acks the identify command")


async def test_registering_a_node_gives_its_secrets_once(
        api: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    new = {"role": "lighting", "zone": "centrum", "street": "Oudegracht", "lat": 52.0901,
           "lon": 5.1222, "label": "lamp 9, Oudegracht"}
    r = await api.as_("technician", "POST", "/api/v1/nodes", json=new)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    made = r.json()
    node_id = max(p.node_id for p in FLEET) + 1  # the next free id
    assert (made["node_id"], made["role"], made["broker_user"]) == (node_id, "lighting",
                                                                     str(node_id))
    key = bytes.fromhex(made["mac_key"])
    assert len(key) == 32
    secrets = (made["mac_key"], made["mac_key"].upper(), made["broker_password"])

    # The gateway keeps the key and only a hash of the password; the keyring has it now.
    store = api.gateway.store
    assert store is not None
    node = await store.get_node(node_id)
    assert node.mac_key == key and acl.verify_password(made["broker_password"],
                                                       node.broker_hash)
    found = api.gateway.keyring.get(node_id)
    assert found is not None and found.key == key
    # A node holding the key is believed: its signed birth and telemetry bring it online.
    sim = SimNode(node_id, key, "lighting")
    api.gateway.street.offer(node_id, messages.BIRTH, sim.birth())
    api.gateway.street.offer(node_id, messages.TELEMETRY,
                             sim.telemetry([100, messages.SOURCE_FAILSAFE, 600, 1, 0, 0]))

    async def online() -> bool:
        detail = await api.ok("viewer", "GET", f"/api/v1/nodes/{node_id}")
        return bool(detail["status"] == "online")

    await until(online, "the new node's signed messages are accepted")

    # Nothing gives the secrets out again, nor records them.
    readable = [await api.as_("admin", "GET", f"/api/v1/nodes/{node_id}"),
                await api.as_("admin", "GET", "/api/v1/nodes"),
                await api.as_("admin", "GET", "/api/v1/audit")]
    for answer in readable:
        assert not any(secret in answer.text for secret in secrets)
    assert not any(secret in caplog.text for secret in secrets)
    entry = next(e for e in readable[2].json() if e["action"] == "node.add")
    assert (entry["user"], entry["target"]) == ("technician", str(node_id))
    assert entry["details"] == {"role": "lighting", "zone": "centrum", "street": "Oudegracht"}


async def test_register_with_a_chosen_id_then_remove_it(api: Client) -> None:
    r = await api.as_("admin", "POST", "/api/v1/nodes", json={"role": "air", "node_id": 900})
    assert r.status_code == 201 and r.json()["node_id"] == 900
    audit_before = await api.ok("admin", "GET", "/api/v1/audit")
    r = await api.as_("technician", "POST", "/api/v1/nodes", json={"role": "air",
                                                                   "node_id": 900})
    assert r.status_code == 409
    assert r.json()["error"].startswith("node 900 is already registered: choose another")
    assert r.json()["fields"] == [{"field": "body.node_id", "problem": "already registered"}]
    r = await api.as_("technician", "POST", "/api/v1/nodes",
                      json={"role": "air", "lat": 52.1})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.lon"
    r = await api.as_("technician", "POST", "/api/v1/nodes", json={"role": "boat"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.role"
    assert await api.ok("admin", "GET", "/api/v1/audit") == audit_before  # refusals: no entry

    r = await api.as_("technician", "DELETE", "/api/v1/nodes/900")
    assert r.status_code == 204 and r.content == b""
    assert api.gateway.keyring.get(900) is None  # its key stops working at once
    assert (await api.as_("viewer", "GET", "/api/v1/nodes/900")).status_code == 404
    r = await api.as_("technician", "DELETE", "/api/v1/nodes/900")
    assert r.status_code == 404 and r.json()["error"] == "node 900 is not registered"
    entry = (await api.ok("admin", "GET", "/api/v1/audit"))[0]
    assert (entry["user"], entry["action"], entry["target"]) == ("technician", "node.remove",
                                                                 "900")
    # The id is free again.
    r = await api.as_("technician", "POST", "/api/v1/nodes", json={"role": "air",
                                                                   "node_id": 900})
    assert r.status_code == 201


# -- schedules ------------------------------------------------------------------------------
async def test_schedule_versions(api: Client) -> None:
    first = await api.ok("operator", "POST", "/api/v1/schedules", json={"name": "night", **NIGHT})
    assert first["definition"] == NIGHT and first["versions"] == [first["version"]]
    assert first["wire"]["steps"] == [[1, 0, 100], [0, 1410, 40], [2, -15, 0]]
    r = await api.as_("operator", "POST", "/api/v1/schedules", json={"name": "night", **NIGHT})
    assert r.status_code == 409 and "PUT" in r.json()["error"]
    other = await api.ok("operator", "POST", "/api/v1/schedules",
                         json={"name": "eco", "steps": [{"at": "dusk", "level": 60},
                                                        {"at": "dawn", "level": 0}]})
    edited = await api.ok("operator", "PUT", "/api/v1/schedules/night",
                          json={**NIGHT, "failsafe": 80})
    # Versions are shared by all schedules, so a lamp never sees one go down.
    assert first["version"] < other["version"] < edited["version"]
    assert edited["versions"] == [first["version"], edited["version"]]
    old = await api.ok("viewer", "GET", "/api/v1/schedules/night",
                       params={"version": first["version"]})
    assert "failsafe" not in old["definition"]
    listed = await api.ok("viewer", "GET", "/api/v1/schedules")
    assert [(s["name"], s["version"]) for s in listed] == [("eco", other["version"]),
                                                           ("night", edited["version"])]
    assert (await api.as_("operator", "PUT", "/api/v1/schedules/nope",
                          json=NIGHT)).status_code == 404


SCHEDULE_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"steps": [{"at": "25:00", "level": 10}]}, "body.steps[0].at", "pattern"),
    ({"steps": [{"at": "dusk", "level": 101}]}, "body.steps[0].level", "less than or equal"),
    ({"steps": [{"at": "22:00", "offset": 5, "level": 10}]}, "body.steps[0].offset",
     "only dusk and dawn"),
    ({"steps": []}, "body.steps", "at least 1"),
    ({"timezone": "Mars/Olympus"}, "body.timezone", "unknown time zone"),
    ({"exceptions": [{"first": "2026-12-26", "last": "2026-12-24",
                      "steps": [{"at": "dusk", "level": 100}]}]},
     "body.exceptions[0].last", "before first"),
    ({"colour": "blue"}, "body.colour", "not permitted"),
]


async def test_schedule_input_errors_name_the_field(api: Client) -> None:
    for change, field, words in SCHEDULE_ERRORS:
        r = await api.as_("viewer", "POST", "/api/v1/schedules/validate",
                          json={**NIGHT, **change})
        assert r.status_code == 422, change
        body = r.json()
        assert body["fields"][0]["field"] == field, body
        assert words in body["fields"][0]["problem"] or words in body["error"], body
    assert (await api.ok("viewer", "POST", "/api/v1/schedules/validate", json=NIGHT))["valid"]


async def test_preview_tonight_marks_dusk_and_dawn(api: Client) -> None:
    await api.ok("operator", "POST", "/api/v1/schedules", json={"name": "night", **NIGHT})
    p = await api.ok("viewer", "GET", "/api/v1/schedules/night/preview",
                     params={"zone": "centrum", "date": "2026-12-21"})
    assert p["date"] == "2026-12-21" and p["timezone"] == "Europe/Amsterdam"
    assert p["end"] - p["start"] == 86400
    assert p["start"] < p["dusk"] < p["dawn"] < p["end"]
    levels = [(c["level"]) for c in p["changes"]]
    assert levels == [0, 100, 40, 0]
    at = {c["level"]: c["at"] for c in p["changes"][1:]}
    assert 0 <= at[100] - p["dusk"] < 60  # evaluated minute by minute, like the lamp's tick
    assert 0 <= at[0] - (p["dawn"] - 15 * 60) < 60
    # An unsaved definition at a node, and where nothing is known.
    q = await api.ok("viewer", "POST", "/api/v1/schedules/preview",
                     json={"definition": NIGHT, "node_id": 201, "date": "2026-12-21"})
    assert [c["level"] for c in q["changes"]] == [0, 100, 40, 0]
    r = await api.as_("viewer", "POST", "/api/v1/schedules/preview", json={"definition": NIGHT})
    assert r.status_code == 422 and "node_id, zone, or lat and lon" in r.json()["error"]
    r = await api.as_("viewer", "POST", "/api/v1/schedules/preview",
                      json={"definition": NIGHT, "name": "night", "zone": "centrum"})
    assert r.status_code == 422


async def rollout_reaches(api: Client, name: str, lamps: list[int]) -> dict[str, Any]:
    result: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal result
        result = await api.ok("viewer", "GET", f"/api/v1/schedules/{name}/rollout")
        running = {n["node_id"] for n in result["nodes"] if n["state"] == "running"}
        return running == {n for n in lamps if n not in SILENT}

    await until(reached, f"{name} runs on {lamps}")
    return result


async def test_assign_to_a_zone_rolls_out(api: Client) -> None:
    saved = await api.ok("operator", "POST", "/api/v1/schedules", json={"name": "night", **NIGHT})
    result = await api.ok("operator", "POST", "/api/v1/schedules/night/assign",
                          json={"zone": "centrum"})
    assert result["nodes"] == CENTRUM_LAMPS and result["version"] == saved["version"]
    rollout = await rollout_reaches(api, "night", CENTRUM_LAMPS)
    silent = [n for n in rollout["nodes"] if n["node_id"] in SILENT]
    assert [(n["status"], n["state"]) for n in silent] == [("never-seen", "sent")] * len(SILENT)
    lamp = await api.ok("viewer", "GET", "/api/v1/nodes/101")
    assert lamp["schedule"] == {"name": "night", "desired_version": saved["version"],
                                "reported_version": saved["version"], "in_sync": True}
    audit = await api.ok("viewer", "GET", "/api/v1/audit")
    assert any(e["action"] == "schedule.assign" and e["user"] == "operator" for e in audit)
    assert any(e["action"] == "schedule.add" and e["user"] == "operator" for e in audit)
    r = await api.as_("operator", "POST", "/api/v1/schedules/night/assign",
                      json={"zone": "centrum", "street": "Neude"})
    assert r.status_code == 422 and "exactly one" in r.json()["error"]
    r = await api.as_("operator", "POST", "/api/v1/schedules/night/assign",
                      json={"node_ids": [301]})
    assert r.status_code == 422 and "parking node" in r.json()["error"]
    r = await api.as_("operator", "POST", "/api/v1/schedules/night/assign",
                      json={"zone": "nowhere"})
    assert r.status_code == 404 and "no lighting nodes in zone 'nowhere'" in r.json()["error"]


async def test_assigning_an_older_schedule_saves_it_above(api: Client) -> None:
    older = await api.ok("operator", "POST", "/api/v1/schedules", json={"name": "night", **NIGHT})
    newer = await api.ok("operator", "POST", "/api/v1/schedules",
                         json={"name": "eco", "steps": [{"at": "dusk", "level": 60},
                                                        {"at": "dawn", "level": 0}]})
    await api.ok("operator", "POST", "/api/v1/schedules/eco/assign", json={"zone": "station"})
    await rollout_reaches(api, "eco", STATION_LAMPS)
    back = await api.ok("operator", "POST", "/api/v1/schedules/night/assign",
                        json={"zone": "station"})
    # The lamps run eco's version; night's old one would be refused as stale.
    assert back["version"] > newer["version"] > older["version"]
    rollout = await rollout_reaches(api, "night", STATION_LAMPS)
    assert {n["reported_version"] for n in rollout["nodes"]} == {back["version"]}


# -- overrides ------------------------------------------------------------------------------
async def test_override_is_sent_and_expires(api: Client) -> None:
    r = await api.as_("operator", "POST", "/api/v1/overrides",
                      json={"zone": "station", "level": 101, "duration_s": 60})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body.level"
    result = await api.ok("operator", "POST", "/api/v1/overrides",
                          json={"zone": "station", "level": 20, "duration_s": 2,
                                "note": "roadworks"})
    assert result["nodes"] == STATION_LAMPS and len(result["commands"]) == len(STATION_LAMPS)

    async def active(count: int) -> bool:
        found = await api.ok("viewer", "GET", "/api/v1/overrides")
        return len(found) == count and all(o["level"] == 20 for o in found)

    await until(lambda: active(len(STATION_LAMPS)), "the override is in force")
    await until(lambda: active(0), "the override expires")
    audit = await api.ok("viewer", "GET", "/api/v1/audit")
    assert any(e["action"] == "override.set" and e["target"] == "station"
               and e["details"]["duration_s"] == 2 for e in audit)


# -- parking --------------------------------------------------------------------------------
async def test_reserve_and_release_a_bay(api: Client) -> None:
    until_ = int(time.time()) + 3600
    r = await api.ok("operator", "POST", "/api/v1/parking/reservations",
                     json={"node_id": 302, "until": until_})
    assert (r["node_id"], r["until"], r["created_by"]) == (302, until_, "operator")
    found = await api.ok("viewer", "GET", "/api/v1/parking/reservations")
    assert [(x["node_id"], x["until"]) for x in found] == [(302, until_)]
    zone = await api.ok("viewer", "GET", "/api/v1/parking/zones/centrum")
    bay = next(b for b in zone["bays"] if b["node_id"] == 302)
    assert bay["reserved_until"] == until_
    summary = zone["summary"]
    assert summary["bays"] == summary["free"] + summary["occupied"] + summary["reserved"] + \
        summary["unknown"] == 6

    async def acked() -> bool:
        c = await api.ok("viewer", "GET", f"/api/v1/commands/{r['command_id']}")
        return bool(c["state"] == "acked")

    await until(acked, "the bay acks the reservation")
    released = await api.ok("operator", "DELETE", "/api/v1/parking/reservations/302")
    assert released["node_id"] == 302
    assert await api.ok("viewer", "GET", "/api/v1/parking/reservations") == []
    actions = [(e["action"], e["target"]) for e in await api.ok("viewer", "GET",
                                                                 "/api/v1/audit")]
    assert ("bay.reserve", "302") in actions and ("bay.release", "302") in actions


RESERVATION_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"node_id": 101, "until": 4000000000}, "node_id"),
    ({"node_id": 302, "start": 4000000000, "until": 3999999999}, "body.until"),
    ({"node_id": 302, "until": 1000}, "body.until"),
    ({"node_id": 302, "until": 4000000000}, "body.until"),  # weeks ahead
    ({"node_id": 0, "until": 4000000000}, "body.node_id"),
    ({"until": 4000000000}, "body.node_id"),
]


async def test_bad_reservations_name_the_field(api: Client) -> None:
    for body, field in RESERVATION_ERRORS:
        r = await api.as_("operator", "POST", "/api/v1/parking/reservations", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["fields"][0]["field"] == field, (body, r.text)
    assert await api.ok("viewer", "GET", "/api/v1/parking/reservations") == []


# -- air quality, alarms, documents ---------------------------------------------------------
async def test_air_quality_index_and_series(api: Client) -> None:
    index = {a["node_id"]: a for a in await api.ok("viewer", "GET", "/api/v1/air/index")}
    assert set(index) == {p.node_id for p in FLEET if p.role == "air"}
    assert 1 <= index[401]["level"] <= 6 and index[401]["name"]
    assert index[401]["driver"] in ("pm25", "pm10", "no2")
    # The failed fan's samples do not count.
    assert (index[FAULTY_AIR]["level"], index[FAULTY_AIR]["flags"]) == (0, ["sensor fault"])
    series = await api.ok("viewer", "GET", "/api/v1/air/nodes/401/series")
    point = series["points"][-1]
    assert isinstance(point["pm25"], float) and 1000 < point["pressure"] < 1030
    r = await api.as_("viewer", "GET", "/api/v1/air/nodes/101/series")
    assert r.status_code == 422 and "not an air-quality node" in r.json()["error"]


async def test_alarms(api: Client) -> None:
    store = api.gateway.store
    assert store is not None
    # Node 201's last will: the node is gone.
    await store.commit_ingest(IngestBatch(twins={201: TwinUpdate(
        node_id=201, last_seen=time.time(), via="loopback", online=False)}))
    alarms = await api.ok("viewer", "GET", "/api/v1/alarms")
    found = {(a["kind"], a["node_id"]) for a in alarms}
    assert found == {("lamp_fault", FAULTY_LAMP), ("sensor_fault", FAULTY_AIR),
                     ("node_offline", 201)}
    lamp = next(a for a in alarms if a["kind"] == "lamp_fault")
    assert lamp["detail"] == "lamp out" and lamp["zone"] == "centrum"


async def test_openapi_document_and_dashboard(api: Client) -> None:
    r = await api.http.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert doc == json.loads(json.dumps(document()))
    page = await api.http.get("/")
    assert page.status_code == 200 and "<title>citisense</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = await api.http.get("/ui/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_dashboard_loads_nothing_from_the_internet() -> None:
    assets = [p for p in WEB.rglob("*") if p.is_file()]
    assert {p.suffix for p in assets} <= {".html", ".js", ".css"}
    for asset in assets:
        text = asset.read_text()
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, f"{asset.name}: {urls}"
        assert "@import" not in text and "import(" not in text


async def test_accounts_on_each_store(store_url: str) -> None:
    """Users and sessions live in the shared database, SQLite or PostgreSQL alike."""
    store = open_store(store_url)
    await store.open()
    try:
        accounts = Accounts(default_accounts(store).db, hasher=FAST)
        await accounts.add_user("ada", PASSWORD, "admin", by="cli:root")
        await accounts.add_user("bob", PASSWORD, "viewer", by="ada")
        with pytest.raises(Conflict):
            await accounts.add_user("bob", PASSWORD, "viewer", by="ada")
        found = await accounts.login("bob", PASSWORD, 60)
        assert found is not None
        token, session = found
        assert token.startswith("cs_") and session.token_hash not in token
        again = await accounts.session(token)
        assert again is not None and again.user.role == "viewer"
        await accounts.set_role("bob", "operator")
        assert (await accounts.session(token)).user.role == "operator"  # type: ignore[union-attr]
        await accounts.set_password("bob", "a different secret")
        assert await accounts.session(token) is None
        with pytest.raises(Conflict):
            await accounts.remove_user("ada")
        await accounts.remove_user("bob")
        assert [u.name for u in await accounts.users()] == ["ada"]
        # A second gateway instance on the same database accepts the same sessions.
        other = Accounts(default_accounts(store).db, hasher=FAST)
        found = await accounts.login("ada", PASSWORD, 60)
        assert found is not None and await other.session(found[0]) is not None
    finally:
        await store.close()
