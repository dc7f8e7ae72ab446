"""Operators' commands: `citisense login|logout|nodes|schedule|override|bays|users`.

They talk to a gateway's HTTP API. The API's URL and token come from flags, else the
environment (CITISENSE_API_URL, CITISENSE_API_TOKEN), else the file `citisense login`
writes ($CITISENSE_OPERATOR_CONFIG, default ~/.config/citisense/operator.json, mode 0600).
Tables by default, --json for scripts. Passwords are read from a prompt or stdin, never
from the command line.

The first admin cannot log in yet: `citisense users add NAME --role admin` without a login
writes the account straight into the gateway's database (its store URL from --store or the
gateway's configuration), on the gateway's machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import re
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from citisense_tools.errors import CommandError
from citisense_tools.gateway_store import store_url

URL_ENV = "CITISENSE_API_URL"
TOKEN_ENV = "CITISENSE_API_TOKEN"
CONFIG_ENV = "CITISENSE_OPERATOR_CONFIG"
DEFAULT_URL = "http://127.0.0.1:8080"
ROLES = ("viewer", "operator", "technician", "admin")
UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


# -- settings and HTTP ----------------------------------------------------------------------
def config_path() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "citisense" / "operator.json"


def read_config() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise CommandError(f"cannot read {path}: {err}") from None
    return data if isinstance(data, dict) else {}


def write_config(data: dict[str, Any]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(path, 0o600)
    return path


def api_url(args: argparse.Namespace) -> str:
    url = args.api_url or os.environ.get(URL_ENV) or read_config().get("url") or DEFAULT_URL
    return str(url).rstrip("/")


def api_token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip()
        except OSError as err:
            raise CommandError(f"cannot read the token file: {err}") from None
    token = os.environ.get(TOKEN_ENV) or read_config().get("token")
    return str(token) if token else None


class ApiError(CommandError):
    """The API refused the request: `status` is its HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Api:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token

    def call(self, method: str, path: str, body: object = None,
             query: dict[str, Any] | None = None) -> Any:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        target = f"{self.url}/api/v1{path}" + (f"?{urllib.parse.urlencode(params)}"
                                               if params else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(target, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            raise ApiError(_explain(err), err.code) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise CommandError(f"cannot reach the gateway API at {self.url}: {reason}") from None

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query=query)

    def post(self, path: str, body: object = None) -> Any:
        return self.call("POST", path, {} if body is None else body)


def _explain(err: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(err.read() or b"{}")
    except ValueError:
        body = {}
    message = body.get("error") if isinstance(body, dict) else None
    text = message or err.reason or "request failed"
    if err.code == 401 and "log in" not in text:
        return f"{text} (log in with `citisense login`)"
    fields = body.get("fields") if isinstance(body, dict) else None
    if fields and len(fields) > 1:
        text += "".join(f"\n  {f['field']}: {f['problem']}" for f in fields)
    return f"{text} (HTTP {err.code})"


def add_api_options(group: argparse._ActionsContainer) -> None:
    """--api and --token-file, for commands that reach the gateway as the logged-in user."""
    group.add_argument("--api", "--api-url", dest="api_url", metavar="URL",
                       help=f"the gateway's API, e.g. {DEFAULT_URL} (default: ${URL_ENV} or "
                            "where you logged in)")
    group.add_argument("--token-file",
                       help=f"file holding the API token (default: ${TOKEN_ENV} or your login)")


def connect(args: argparse.Namespace) -> Api:
    token = api_token(args)
    if not token:
        raise CommandError("not logged in: run `citisense login` (or set "
                           f"{TOKEN_ENV}, or give --token-file)")
    return Api(api_url(args), token)


# -- input and output ----------------------------------------------------------------------
def duration(text: str) -> int:
    """Seconds of '90', '90s', '30m', '2h', '1d'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 30m, 2h")
    return round(float(match.group(1)) * UNITS[match.group(2) or "s"])


def moment(text: str) -> int:
    """Unix time of 'now', '+2h' or a local ISO date and time ('2026-12-24T18:00')."""
    if text == "now":
        return int(time.time())
    if text.startswith("+"):
        return int(time.time()) + duration(text[1:])
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use now, +2h or 2026-12-24T18:00") from None
    return int(when.timestamp())


def node_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in re.split(r"[,\s]+", text.strip()) if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of node ids") from None
    if not ids:
        raise argparse.ArgumentTypeError("no node ids given")
    return ids


def when(t: float | None, zone: str | None = None) -> str:
    if t is None:
        return "-"
    tz = None
    if zone:
        from zoneinfo import ZoneInfo

        tz = ZoneInfo(zone)
    return dt.datetime.fromtimestamp(t, tz or dt.datetime.now().astimezone().tzinfo).strftime(
        "%Y-%m-%d %H:%M")


def ago(t: float | None) -> str:
    if t is None:
        return "never"
    s = max(0, int(time.time() - t))
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def table(rows: Sequence[Sequence[object]], headings: Sequence[str]) -> str:
    cells = [[str(h) for h in headings]] + [["-" if c is None else str(c) for c in r]
                                             for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headings))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: object, render: Callable[[], str]) -> int:
    print(json.dumps(data, indent=2) if args.json else render())
    return 0


def read_password(prompt: str, *, confirm: bool) -> str:
    """From the terminal (asked twice for a new one) or the first line of stdin."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CommandError("no password on standard input")
        return line
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Again: ") != first:
        raise CommandError("the two passwords differ")
    return first


# -- login ----------------------------------------------------------------------------------
def run_login(args: argparse.Namespace) -> int:
    url = api_url(args)
    user = args.user or getpass.getuser()
    password = read_password(f"Password for {user} at {url}: ", confirm=False)
    result = Api(url, None).post("/auth/login", {"username": user, "password": password})
    saved = read_config()
    saved.update({"url": url, "token": result["token"], "user": user,
                  "expires_at": result["expires_at"]})
    path = write_config(saved)
    print(f"logged in as {user} ({result['user']['role']}) until "
          f"{when(result['expires_at'])}; token in {path}")
    return 0


def run_logout(args: argparse.Namespace) -> int:
    api = connect(args)
    api.post("/auth/logout")
    saved = read_config()
    if saved.pop("token", None) is not None:
        write_config(saved)
    print("logged out")
    return 0


# -- nodes ----------------------------------------------------------------------------------
def node_state(n: dict[str, Any]) -> str:
    if n.get("schedule"):
        s = n["schedule"]
        text = f"schedule {s['name'] or '-'} v{s['reported_version']}"
        return text if s["in_sync"] else f"{text} (wants v{s['desired_version']})"
    if n.get("bay_state"):
        return f"bay {n['bay_state']}"
    return ""


def run_nodes(args: argparse.Namespace) -> int:
    api = connect(args)
    if args.node is not None:
        n = api.get(f"/nodes/{args.node}")

        def detail() -> str:
            lines = [f"node {n['node_id']}: {n['label'] or '-'} ({n['role']}, {n['status']})",
                     f"  zone {n['zone'] or '-'}, street {n['street'] or '-'}, "
                     f"at {n['lat']}, {n['lon']}",
                     f"  last heard {ago(n['last_seen'])} via {n['via'] or '-'}; firmware "
                     f"{n['firmware'] or '-'}, board {n['board'] or '-'}, reset "
                     f"{n['reset_cause'] or '-'}"]
            if node_state(n):
                lines.append(f"  {node_state(n)}")
            reading = n["last_telemetry"]
            if reading:
                values = ", ".join(f"{k} {v}" for k, v in reading["values"].items())
                lines.append(f"  telemetry {when(reading['at'])}: {values}")
                if reading["flags"]:
                    lines.append(f"  flags: {', '.join(reading['flags'])}")
            if n["commands"]:
                lines.append(table([(c["command_id"], c["op"], c["state"], c["result"],
                                     c["created_by"], when(c["created_at"]))
                                    for c in n["commands"][:10]],
                                   ["command", "op", "state", "answer", "by", "at"]))
            return "\n".join(lines)

        return emit(args, n, detail)
    nodes = api.get("/nodes", role=args.role, zone=args.zone, street=args.street,
                    state=args.state)
    return emit(args, nodes, lambda: table(
        [(n["node_id"], n["role"], n["zone"], n["street"], n["label"], n["status"],
          ago(n["last_seen"]), node_state(n)) for n in nodes],
        ["node", "role", "zone", "street", "label", "status", "last heard", "state"]))


# -- schedules ------------------------------------------------------------------------------
STEP = re.compile(r"^(dusk|dawn)([+-]\d+)?:(\d+)$|^(\d{1,2}:\d{2}):(\d+)$")


def parse_step(text: str) -> dict[str, Any]:
    """'dusk:100', 'dawn-15:0', '23:30:40' -> a step of the schedule definition."""
    match = STEP.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a step: use dusk:LEVEL, dawn-15:LEVEL or HH:MM:LEVEL")
    if match.group(1):
        step: dict[str, Any] = {"at": match.group(1), "level": int(match.group(3))}
        if match.group(2):
            step["offset"] = int(match.group(2))
        return step
    return {"at": match.group(4), "level": int(match.group(5))}


def definition(args: argparse.Namespace) -> dict[str, Any]:
    if args.file:
        path = Path(args.file)
        try:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as err:
            raise CommandError(f"cannot read schedule file {path}: {err}") from None
        if not isinstance(data, dict):
            raise CommandError(f"{path} holds no schedule object")
    else:
        if not args.step:
            raise CommandError("give --step (several) or --file with the schedule")
        data = {"steps": args.step}
    if args.timezone:
        data["timezone"] = args.timezone
    if args.failsafe is not None:
        data["failsafe"] = args.failsafe
    return data


def step_text(step: dict[str, Any]) -> str:
    offset = step.get("offset")
    return f"{step['at']}{'' if not offset else format(offset, '+d') + 'min'} {step['level']}%"


def show_schedule(s: dict[str, Any]) -> str:
    d = s["definition"]
    steps = ", ".join(step_text(st) for st in d["steps"])
    lines = [f"{s['name']} version {s['version']} (versions {', '.join(map(str, s['versions']))})",
             f"  saved {when(s['created_at'])} by {s['created_by']}; on {s['assigned']} nodes",
             f"  time zone {d.get('timezone', 'UTC')}, fail-safe {d.get('failsafe', 100)}%",
             f"  steps: {steps}"]
    for e in d.get("exceptions", []):
        lines.append(f"  {e['first']}..{e['last']} ({e.get('days', 'all')}, priority "
                     f"{e.get('priority', 0)}): {len(e['steps'])} steps")
    return "\n".join(lines)


def run_schedule(args: argparse.Namespace) -> int:
    api = connect(args)
    action = args.schedule_action
    if action == "list":
        found = api.get("/schedules")
        return emit(args, found, lambda: table(
            [(s["name"], s["version"], s["assigned"], s["definition"].get("timezone", "UTC"),
              s["created_by"], when(s["created_at"])) for s in found],
            ["schedule", "version", "nodes", "time zone", "saved by", "saved"]))
    if action == "show":
        s = api.get(f"/schedules/{args.name}", version=args.version)
        return emit(args, s, lambda: show_schedule(s))
    if action in ("create", "edit"):
        body = definition(args)
        if action == "create":
            s = api.post("/schedules", {"name": args.name, **body})
        else:
            s = api.call("PUT", f"/schedules/{args.name}", body)
        return emit(args, s, lambda: f"saved\n{show_schedule(s)}")
    if action == "assign":
        result = api.post(f"/schedules/{args.name}/assign", target(args))
        if args.wait:
            follow(api, args.name, args.wait)
        return emit(args, result, lambda: (
            f"{result['schedule']} version {result['version']} assigned to "
            f"{len(result['nodes'])} nodes; commands {_ids(result['commands'])}"))
    if action == "rollout":
        r = api.get(f"/schedules/{args.name}/rollout")
        return emit(args, r, lambda: rollout_text(r))
    return preview(args, api)


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")


def rollout_text(r: dict[str, Any]) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(r["summary"].items())) or "no nodes"
    return f"{r['schedule']} latest version {r['latest_version']}: {counts}\n" + table(
        [(n["node_id"], n["zone"], n["street"], n["status"], n["desired_version"],
          n["reported_version"], n["state"], n["result"]) for n in r["nodes"]],
        ["node", "zone", "street", "status", "desired", "reported", "push", "answer"])


def follow(api: Api, name: str, timeout: float) -> None:
    """Wait until every online node runs the assigned version, or time out."""
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/schedules/{name}/rollout")
        waiting = [n for n in r["nodes"] if n["status"] == "online" and n["state"] != "running"]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise CommandError(f"{len(waiting)} online nodes do not run {name} yet: "
                               f"{_ids([n['node_id'] for n in waiting])}")
        time.sleep(1)


def preview(args: argparse.Namespace, api: Api) -> int:
    p = api.get(f"/schedules/{args.name}/preview", node_id=args.node, zone=args.zone,
                date=args.date)
    zone = p["timezone"]

    def render() -> str:
        lines = [f"{args.name} on the night of {p['date']} ({zone}) at {p['lat']:.4f}, "
                 f"{p['lon']:.4f}",
                 f"  dusk {when(p['dusk'], zone)}, dawn {when(p['dawn'], zone)}"]
        lines.append(table([(when(c["at"], zone), f"{c['level']} %", "#" * (c["level"] // 5))
                            for c in p["changes"]], ["from", "level", ""]))
        return "\n".join(lines)

    return emit(args, p, render)


# -- overrides and bays ---------------------------------------------------------------------
def target(args: argparse.Namespace) -> dict[str, Any]:
    if args.zone:
        return {"zone": args.zone}
    if args.street:
        return {"street": args.street}
    return {"node_ids": args.nodes}


def run_override(args: argparse.Namespace) -> int:
    api = connect(args)
    seconds = 0 if args.end else args.duration
    if seconds is None:
        raise CommandError("say how long: --for 30m (or --end)")
    result = api.post("/overrides", {**target(args), "level": args.level, "duration_s": seconds,
                                     "note": args.note})
    what = "ended" if seconds == 0 else f"{args.level} % until {when(result['ends_at'])}"
    return emit(args, result, lambda: f"override {what} on {len(result['nodes'])} lamps; "
                                      f"commands {_ids(result['commands'])}")


def run_bays(args: argparse.Namespace) -> int:
    api = connect(args)
    if args.bays_action == "list":
        zones = api.get("/parking/zones")
        reservations = api.get("/parking/reservations")

        def render() -> str:
            text = table([(z["zone"], z["bays"], z["free"], z["occupied"], z["reserved"],
                           z["unknown"]) for z in zones],
                          ["zone", "bays", "free", "occupied", "reserved", "unknown"])
            if reservations:
                text += "\n\n" + table([(r["node_id"], r["zone"], r["label"], when(r["start"]),
                                         when(r["until"]), r["created_by"])
                                        for r in reservations],
                                       ["bay", "zone", "label", "from", "until", "by"])
            return text

        return emit(args, {"zones": zones, "reservations": reservations}, render)
    if args.bays_action == "reserve":
        until = args.until if args.until is not None else (
            (args.start or int(time.time())) + args.duration if args.duration else None)
        if until is None:
            raise CommandError("say until when: --until TIME or --for 2h")
        r = api.post("/parking/reservations", {"node_id": args.node, "start": args.start,
                                               "until": until})
        return emit(args, r, lambda: f"bay {r['node_id']} ({r['label']}) reserved "
                                     f"{when(r['start'])} .. {when(r['until'])}; command "
                                     f"{r['command_id']}")
    r = api.call("DELETE", f"/parking/reservations/{args.node}")
    return emit(args, r, lambda: f"bay {r['node_id']} released; command {r['command_id']}")


# -- users ----------------------------------------------------------------------------------
def local(args: argparse.Namespace) -> bool:
    """Straight to the database: asked for, or nobody is logged in (the first admin)."""
    return bool(args.store or args.gateway_config or not api_token(args))


async def _local_users(args: argparse.Namespace, password: str | None) -> Any:
    from citisense_gateway.api.accounts import AccountError
    from citisense_gateway.api.app import default_accounts
    from citisense_gateway.store import open_store
    from citisense_gateway.store.base import StoreError

    url = store_url(args)
    by = f"cli:{getpass.getuser()}"
    try:
        store = open_store(url)
        await store.open()
    except StoreError as err:
        raise CommandError(str(err)) from None
    try:
        accounts = default_accounts(store)
        action = args.users_action
        if action == "list":
            return [{"username": u.name, "role": u.role, "created_at": u.created_at,
                     "created_by": u.created_by} for u in await accounts.users()]
        if action == "add":
            assert password is not None
            user = await accounts.add_user(args.name, password, args.role, by=by)
            await store.audit(by, "user.add", user.name, {"role": user.role})
        elif action == "remove":
            await accounts.remove_user(args.name)
            await store.audit(by, "user.remove", args.name, {})
        elif action == "set-role":
            await accounts.set_role(args.name, args.role)
            await store.audit(by, "user.role", args.name, {"role": args.role})
        else:
            assert password is not None
            await accounts.set_password(args.name, password)
            await store.audit(by, "user.password", args.name, {})
        return None
    except (AccountError, StoreError) as err:
        raise CommandError(str(err)) from None
    finally:
        await store.close()


def run_users(args: argparse.Namespace) -> int:
    action = args.users_action
    password = None
    if action in ("add", "passwd"):
        password = read_password(f"New password for {args.name}: ", confirm=True)
    if local(args):
        result = asyncio.run(_local_users(args, password))
    else:
        api = connect(args)
        if action == "list":
            result = api.get("/users")
        elif action == "add":
            result = api.post("/users", {"username": args.name, "password": password,
                                         "role": args.role})
        elif action == "remove":
            result = api.call("DELETE", f"/users/{args.name}")
        elif action == "set-role":
            result = api.call("PATCH", f"/users/{args.name}", {"role": args.role})
        else:
            result = api.call("PATCH", f"/users/{args.name}", {"password": password})
    if action == "list":
        return emit(args, result, lambda: table(
            [(u["username"], u["role"], when(u["created_at"]), u["created_by"]) for u in result],
            ["user", "role", "created", "by"]))
    done = {"add": "added", "remove": "removed", "set-role": "changed the role of",
            "passwd": "changed the password of"}[action]
    return emit(args, result or {"ok": True}, lambda: f"{done} {args.name}")


# -- argument parsing -----------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", help=f"gateway API, e.g. {DEFAULT_URL} (or ${URL_ENV})")
    common.add_argument("--token-file", help=f"file holding the API token (or ${TOKEN_ENV})")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common


def _targets(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--zone")
    group.add_argument("--street")
    group.add_argument("--nodes", type=node_ids, help="node ids, e.g. 101,102")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = _common()
    p = subparsers.add_parser("login", parents=[common], help="log in to a gateway's API")
    p.add_argument("--user", help="user name (default: your login name)")
    p.set_defaults(run=run_login)
    p = subparsers.add_parser("logout", parents=[common], help="end the saved API session")
    p.set_defaults(run=run_logout)

    p = subparsers.add_parser("nodes", parents=[common], help="the fleet and its live status")
    p.add_argument("node", nargs="?", type=int, help="one node's detail")
    p.add_argument("--role", choices=("lighting", "parking", "air"))
    p.add_argument("--zone")
    p.add_argument("--street")
    p.add_argument("--state", choices=("online", "offline", "stale", "never-seen"))
    p.set_defaults(run=run_nodes)

    p = subparsers.add_parser("schedule", help="lighting schedules")
    actions = p.add_subparsers(dest="schedule_action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="schedules at their latest version")
    a = actions.add_parser("show", parents=[common], help="one schedule")
    a.add_argument("name")
    a.add_argument("--version", type=int)
    for verb, text in (("create", "a new schedule"), ("edit", "save a new version")):
        a = actions.add_parser(verb, parents=[common], help=text)
        a.add_argument("name")
        a.add_argument("--file", help="JSON or TOML schedule definition")
        a.add_argument("--step", action="append", type=parse_step,
                       help="dusk:100, dawn-15:0 or 23:30:40 (repeat, in order)")
        a.add_argument("--timezone", help="e.g. Europe/Amsterdam")
        a.add_argument("--failsafe", type=int, help="level when it cannot be followed")
    a = actions.add_parser("assign", parents=[common], help="push a schedule to lamps")
    a.add_argument("name")
    _targets(a)
    a.add_argument("--wait", type=duration, metavar="TIME",
                   help="wait up to TIME for every online lamp to run it")
    a = actions.add_parser("rollout", parents=[common], help="which lamps run it")
    a.add_argument("name")
    a = actions.add_parser("preview", parents=[common], help="tonight's levels")
    a.add_argument("name")
    where = a.add_mutually_exclusive_group(required=True)
    where.add_argument("--node", type=int)
    where.add_argument("--zone")
    a.add_argument("--date", help="the night of YYYY-MM-DD (default tonight)")
    p.set_defaults(run=run_schedule)

    p = subparsers.add_parser("override", parents=[common],
                              help="hold lamps at a level for a while")
    _targets(p)
    p.add_argument("--level", type=int, default=100, help="percent (default 100)")
    p.add_argument("--for", dest="duration", type=duration, help="how long, e.g. 30m, 2h")
    p.add_argument("--end", action="store_true", help="end the override now")
    p.add_argument("--note", default="", help="why, for the audit log")
    p.set_defaults(run=run_override)

    p = subparsers.add_parser("bays", help="parking zones and reservations")
    actions = p.add_subparsers(dest="bays_action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="zone occupancy and reservations")
    a = actions.add_parser("reserve", parents=[common], help="reserve a bay")
    a.add_argument("node", type=int, help="the bay's node id")
    a.add_argument("--from", dest="start", type=moment, help="now, +1h or 2026-12-24T18:00")
    a.add_argument("--until", type=moment)
    a.add_argument("--for", dest="duration", type=duration)
    a = actions.add_parser("release", parents=[common], help="cancel a reservation")
    a.add_argument("node", type=int)
    p.set_defaults(run=run_bays)

    p = subparsers.add_parser("users", help="operator accounts")
    actions = p.add_subparsers(dest="users_action", required=True, metavar="ACTION")
    local_db = argparse.ArgumentParser(add_help=False)
    local_db.add_argument("--store", help="write to this gateway store URL directly")
    local_db.add_argument("--gateway-config", help="the gateway's TOML configuration file")
    both = [common, local_db]
    actions.add_parser("list", parents=both, help="accounts and roles")
    a = actions.add_parser("add", parents=both, help="add an account (password asked)")
    a.add_argument("name", nargs="?", default=getpass.getuser(),
                   help="user name (default: your login name)")
    a.add_argument("--role", choices=ROLES, required=True)
    a = actions.add_parser("remove", parents=both, help="remove an account")
    a.add_argument("name")
    a = actions.add_parser("set-role", parents=both, help="change an account's role")
    a.add_argument("name")
    a.add_argument("role", choices=ROLES)
    a = actions.add_parser("passwd", parents=both, help="set an account's password")
    a.add_argument("name")
    p.set_defaults(run=run_users)
