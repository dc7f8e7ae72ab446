"""`citisense gateway ...`: run the service and operate it from the shell.

register(subparsers) adds the `gateway` command to the `citisense` CLI; `python -m
citisense_gateway ...` runs the same commands. Every subcommand reads the same
configuration as the service (--config, CITISENSE_* variables, --set), so operator
commands reach the same database; the running service picks up queued commands and new
nodes from there. Data is printed as JSON lines, errors as one plain sentence (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import grp
import json
import os
import pwd
import stat
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from citisense_gateway import acl, air, config, logs, registry, schedules
from citisense_gateway.commands import CommandError, CommandPolicy, Commands
from citisense_gateway.metrics import Metrics
from citisense_gateway.parking import Parking
from citisense_gateway.reconcile import Reconciler
from citisense_gateway.store import StoreError, open_store
from citisense_gateway.store.base import Store
from citisense_gateway.twin import liveness
from citisense_protocols import messages

Handler = Callable[[argparse.Namespace], int]
EXPECTED = (config.ConfigError, StoreError, CommandError, registry.RegistryError,
            schedules.ScheduleError, acl.AclError, OSError)


def _guard(fn: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except EXPECTED as err:
            print(f"citisense gateway: {err}", file=sys.stderr)
            return 2
    return run


def _config(args: argparse.Namespace) -> config.GatewayConfig:
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise config.ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[name.strip()] = value
    for flag, name in (("store", "store.url"), ("mqtt_url", "mqtt.url"),
                       ("metrics_port", "metrics.port")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "serial", None):
        overrides["serial.ports"] = ",".join(args.serial)
    return config.load(args.config, overrides=overrides)


def _with_store(fn: Callable[[argparse.Namespace, Store], Awaitable[int]]) -> Handler:
    @_guard
    def run(args: argparse.Namespace) -> int:
        cfg = _config(args)

        async def main() -> int:
            store = open_store(cfg.store_url, quarantine_limit=cfg.store.quarantine_limit)
            await store.open()
            try:
                return await fn(args, store)
            finally:
                await store.close()

        return asyncio.run(main())
    return run


def _print(obj: object) -> None:
    print(json.dumps(obj, default=str, sort_keys=True))


def _user(args: argparse.Namespace) -> str:
    return str(args.user or getpass.getuser())


def _commands(store: Store) -> Commands:
    class _Queued:  # the running gateway sends; the CLI only queues
        async def send(self, node_id: int, kind: int, message: bytes) -> None:
            raise AssertionError("the CLI does not transmit")

    from citisense_gateway.keyring import KeyRing

    return Commands(store, KeyRing(store), _Queued(), Metrics(), CommandPolicy())


async def _targets(args: argparse.Namespace, store: Store, role: str | None = None) -> list[int]:
    return await registry.targets(store, nodes=args.node, street=args.street, zone=args.zone,
                                  role=role)


# -- run ------------------------------------------------------------------------------------
@_guard
def cmd_run(args: argparse.Namespace) -> int:
    from citisense_gateway.service import Gateway

    cfg = _config(args)
    logs.setup(cfg.gateway.log_level, cfg.gateway.log_format, cfg.gateway.instance)
    asyncio.run(Gateway(cfg).run_until_signalled())
    return 0


# -- nodes ----------------------------------------------------------------------------------
async def _node_add(args: argparse.Namespace, store: Store) -> int:
    # The secrets go once into a new file only its owner can read (never to the terminal
    # or a log); only their hashes stay in the gateway. The file is claimed before the
    # node is registered, so a registered node never ends up with its secrets lost.
    secrets_file = Path(args.secrets_out or f"node-{args.id}.secrets.json")
    try:
        fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise registry.RegistryError(
            f"{secrets_file} already exists: move it away or give --secrets-out") from None
    try:
        p = await registry.provision(store, args.id, args.role, user=_user(args),
                                     zone=args.zone, street=args.street, lat=args.lat,
                                     lon=args.lon, label=args.label)
    except BaseException:
        os.close(fd)
        secrets_file.unlink()
        raise
    with os.fdopen(fd, "w") as handle:
        json.dump({"node": p.node.node_id, "mac_key": p.mac_key.hex(),
                   "broker_user": acl.node_user(p.node.node_id),
                   "broker_password": p.broker_password}, handle, indent=1)
    _print({"node": p.node.node_id, "role": p.node.role,
            "broker_user": acl.node_user(p.node.node_id), "secrets_file": str(secrets_file)})
    return 0


async def _node_list(args: argparse.Namespace, store: Store) -> int:
    for n in await store.nodes(zone=args.zone, street=args.street, role=args.role):
        _print({"node": n.node_id, "role": n.role, "zone": n.zone, "street": n.street,
                "lat": n.lat, "lon": n.lon, "label": n.label})
    return 0


async def _node_remove(args: argparse.Namespace, store: Store) -> int:
    await store.remove_node(args.id, _user(args))
    return 0


# -- broker files ---------------------------------------------------------------------------
# passwd and acl are for the broker's eyes only. Mosquitto 2 started as root (as Debian's
# service starts it) reads them after switching to its `user` (default mosquitto): written as
# root, they belong to that user and its group, mode 0640, readable by nobody else.
# gateway.password is the gateway's: owned by whoever runs this command, mode 0600.
def _system_user(name: str) -> tuple[int, int, list[int]] | None:
    """uid, primary gid and every group of a system user; None if there is no such user."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(name, entry.pw_gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a name (containers)
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _closed_to(directory: Path, uid: int, gids: list[int]) -> Path | None:
    """The first directory on the way from / to `directory` that user uid may not enter."""
    if uid == 0:
        return None
    for d in [*reversed(directory.parents), directory]:
        st = d.stat()
        if st.st_uid == uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return d
    return None


def _write_file(path: Path, text: str, mode: int, owner: tuple[int, int] | None) -> None:
    # Aside, then renamed: a broker reloading meanwhile reads the old file or the new. The
    # aside file is new (a leftover would keep its old mode and owner) and never readable
    # by anyone else before it has its owner and mode.
    aside = path.with_name(f".{path.name}.tmp")
    aside.unlink(missing_ok=True)
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(fd, "w") as handle:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        handle.write(text)
    aside.replace(path)


async def _broker_config(args: argparse.Namespace, store: Store) -> int:
    out = Path(args.out).absolute()  # the broker resolves relative paths from its own cwd
    broker_user = args.broker_user
    account = _system_user(broker_user)
    me = os.geteuid()
    my_name = _user_name(me)
    warnings = []
    owner: tuple[int, int] | None = None
    if account is None:
        warnings.append(f"no system user {broker_user!r} here: passwd and acl are left to "
                        f"{my_name} (mode 0600) and Mosquitto started as root cannot read "
                        "them; create the user or name the broker's with --broker-user")
    elif me in (0, account[0]):
        owner = account[0], account[1]
    else:
        warnings.append(f"not run as root: passwd and acl are left to {my_name} (mode 0600), "
                        f"and only a Mosquitto running as {my_name} can read them; run "
                        f"broker-config as root to give them to {broker_user}")
    if not out.is_dir():
        out.mkdir(parents=True)
        if owner is not None and me == 0:  # root:<broker group> 0750: the broker may enter
            os.chown(out, 0, owner[1])
            out.chmod(0o750)
    if account is not None and (closed := _closed_to(out, account[0], account[2])):
        warnings.append(f"user {broker_user} may not enter {closed}: Mosquitto cannot read "
                        f"passwd and acl there (allow it, e.g. chmod o+x {closed}, or choose "
                        "another --out)")
    # The running gateway keeps the password it started with: rewriting the files after
    # provisioning (then reloading the broker) must not lock it out. Rotate on request: a
    # gateway reading mqtt.password_file rereads it when the broker refuses the old one.
    kept = out / "gateway.password"
    password = "" if args.new_gateway_password or not kept.is_file() else kept.read_text().strip()
    state = ("kept" if password else "new: reload the broker; a gateway reading it through "
             "mqtt.password_file rereads it when the broker refuses the old one")
    password = password or acl.new_password()
    accounts = [acl.gateway_account(args.gateway_user, acl.hash_password(password))]
    accounts += [acl.node_account(n.node_id, n.broker_hash) for n in await store.nodes()]
    broker_mode = 0o640 if owner is not None else 0o600
    files = {
        "passwd": (acl.password_file(accounts), broker_mode, owner),
        "acl": (acl.acl_file(accounts), broker_mode, owner),
        "mosquitto.conf": (acl.mosquitto_conf(port=args.port, bind=args.bind,
                                              password_path=str(out / "passwd"),
                                              acl_path=str(out / "acl"), user=broker_user),
                           0o644, None),
        "gateway.password": (password + "\n", 0o600, None),
    }
    for name, (text, mode, file_owner) in files.items():
        _write_file(out / name, text, mode, file_owner)
    await store.audit(_user(args), "broker.config", str(out), {"accounts": len(accounts)})
    st = (out / "passwd").stat()
    report: dict[str, object] = {
        "dir": str(out), "accounts": len(accounts),
        "broker_user": broker_user,  # mosquitto.conf says `user <broker_user>`
        "broker_files": f"passwd, acl: {_user_name(st.st_uid)}:{_group_name(st.st_gid)} "
                        f"{stat.S_IMODE(st.st_mode):04o}",
        "gateway_password_file": str(out / "gateway.password"), "gateway_password": state}
    if warnings:
        report["warnings"] = warnings
    _print(report)
    return 0


# -- schedules --------------------------------------------------------------------------------
def _load_definition(path: str) -> Any:
    text = Path(path).read_text()
    try:
        return tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        kind = "TOML" if path.endswith(".toml") else "JSON"
        raise schedules.ScheduleError("", f"{path} is not valid {kind}: {err}") from err


async def _schedule_save(args: argparse.Namespace, store: Store) -> int:
    source = _load_definition(args.file)
    rec = schedules.record(args.name, source, await store.next_schedule_version(), _user(args))
    await store.add_schedule(rec)
    _print({"schedule": rec.name, "version": rec.version, "wire": schedules.wire_of(rec)})
    return 0


async def _schedule_list(args: argparse.Namespace, store: Store) -> int:
    for rec in await store.schedules():
        _print({"schedule": rec.name, "version": rec.version, "by": rec.created_by,
                "at": rec.created_at})
    return 0


async def _schedule_preview(args: argparse.Namespace, store: Store) -> int:
    rec = await store.get_schedule(args.name, args.version)
    lat, lon = args.lat, args.lon
    if args.at_node is not None:
        node = await store.get_node(args.at_node)
        lat, lon = node.lat, node.lon
    if lat is None or lon is None:
        raise CommandError("give --at-node (with a location) or --lat and --lon")
    night = dt.date.fromisoformat(args.date) if args.date else dt.date.today()
    for change in schedules.preview(schedules.wire_of(rec), lat, lon, night, args.tz):
        local = dt.datetime.fromtimestamp(change.at, ZoneInfo(args.tz))
        _print({"at": local.isoformat(), "level": change.level})
    return 0


async def _schedule_assign(args: argparse.Namespace, store: Store) -> int:
    nodes = await _targets(args, store, role="lighting")
    issued = await Reconciler(store, _commands(store)).assign_schedule(args.name, nodes,
                                                                       _user(args))
    for c in issued:
        _print({"command": c.command_id, "node": c.node_id, "state": c.state})
    return 0


async def _schedule_rollout(args: argparse.Namespace, store: Store) -> int:
    for entry in await Reconciler(store, _commands(store)).rollout(args.name):
        _print(asdict(entry))
    return 0


# -- commands -----------------------------------------------------------------------------------
def _command_args(args: argparse.Namespace) -> tuple[int, object]:
    op = args.op
    if op == "dim":
        return messages.OP_DIM, [args.level, args.duration]
    if op == "identify":
        return messages.OP_IDENTIFY, args.seconds
    if op == "reserve":
        return messages.OP_RESERVE, [args.start, args.until]
    if op == "recalibrate":
        return messages.OP_RECALIBRATE, args.sensor
    if op == "time-sync":
        return messages.OP_TIME_SYNC, int(time.time())
    return {"release": messages.OP_RELEASE, "reboot": messages.OP_REBOOT}[op], None


async def _command(args: argparse.Namespace, store: Store) -> int:
    op, payload = _command_args(args)
    nodes = await _targets(args, store)
    issued = await _commands(store).issue(nodes, op, payload, user=_user(args), ttl=args.ttl,
                                          note=args.note)
    if op == messages.OP_RESERVE:
        for node_id in nodes:
            await store.set_reservation(node_id, float(args.until))
    elif op == messages.OP_RELEASE:
        for node_id in nodes:
            await store.set_reservation(node_id, None)
    for c in issued:
        _print({"command": c.command_id, "node": c.node_id, "state": c.state})
    return 0


async def _command_list(args: argparse.Namespace, store: Store) -> int:
    for c in await store.commands(args.id, args.limit):
        _print(asdict(c))
    return 0


# -- views ------------------------------------------------------------------------------------
async def _twin(args: argparse.Namespace, store: Store) -> int:
    cfg = _config(args)
    now = time.time()
    twins = [await store.twin(args.id)] if args.id else await store.twins()
    for t in twins:
        _print({**asdict(t), "status": liveness(t, now, cfg.liveness.stale_after)})
    return 0


async def _parking(args: argparse.Namespace, store: Store) -> int:
    for zone in (await Parking(store).zones()).values():
        _print({**asdict(zone), "total": zone.total})
    return 0


async def _air(args: argparse.Namespace, store: Store) -> int:
    hours = await air.node_hours(store, args.id, time.time() - args.hours * 3600)
    for h, index in zip(hours, air.eaqi(hours), strict=True):
        _print({**asdict(h), "eaqi": index.level, "eaqi_name": index.name,
                "driver": index.driver})
    return 0


async def _quarantine(args: argparse.Namespace, store: Store) -> int:
    for q in await store.quarantined(args.limit):
        _print({"at": q.received_at, "source": q.source, "reason": q.reason,
                "detail": q.detail, "node": q.node_id, "payload": q.payload[:64].hex()})
    return 0


async def _audit(args: argparse.Namespace, store: Store) -> int:
    for entry in await store.audit_log(args.limit):
        _print(asdict(entry))
    return 0


@_guard
def cmd_bench(args: argparse.Namespace) -> int:
    from citisense_gateway import bench_ingest

    return bench_ingest.main(["--messages", str(args.messages), "--store", args.bench_store,
                              "--instances", str(args.instances)])


# -- parser -------------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (default: $CITISENSE_CONFIG)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one setting, e.g. --set ingest.batch_size=1000")
    parser.add_argument("--store", help="store URL (store.url)")
    parser.add_argument("--user", help="who is acting, for the audit log (default: login name)")


def _targets_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--node", type=int, action="append", help="node id (repeatable)")
    group.add_argument("--street", help="every node of a street group")
    group.add_argument("--zone", help="every node of a zone")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gw = subparsers.add_parser("gateway", help="run and operate the gateway service")
    sub = gw.add_subparsers(dest="gateway_command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler | None, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        if handler is not None:  # groups get theirs from their subcommands
            _common(p)
            p.set_defaults(run=handler)
        return p

    p = add("run", cmd_run, "run the gateway service")
    p.add_argument("--mqtt-url", help="external broker, mqtt://host:1883 (default: embedded)")
    p.add_argument("--metrics-port", type=int, help="/metrics port (0: any free, -1: off)")
    p.add_argument("--serial", action="append", metavar="PORT", help="serial concentrator port")

    node = add("node", None, "register and list nodes")
    nsub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    for name, fn, text in (("add", _node_add, "provision a node (secrets to a 0600 file)"),
                           ("list", _node_list, "list registered nodes"),
                           ("remove", _node_remove, "remove a node")):
        p = nsub.add_parser(name, help=text)
        _common(p)
        p.set_defaults(run=_with_store(fn))
        if name in ("add", "remove"):
            p.add_argument("id", type=int)
        if name == "add":
            p.add_argument("--role", required=True, choices=registry.ROLES)
            p.add_argument("--lat", type=float)
            p.add_argument("--lon", type=float)
            p.add_argument("--label", default="")
            if name == "add":
                p.add_argument("--secrets-out", metavar="FILE",
                               help="new file (mode 0600) for the node's key and broker "
                                    "password (default node-ID.secrets.json)")
        if name in ("add", "list"):
            p.add_argument("--zone", default="" if name == "add" else None)
            p.add_argument("--street", default="" if name == "add" else None)
        if name == "list":
            p.add_argument("--role", choices=registry.ROLES)

    p = add("broker-config", _with_store(_broker_config),
            "write Mosquitto password file, ACL and settings from the registry")
    p.add_argument("--out", required=True, help="directory for passwd, acl, mosquitto.conf")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--gateway-user", default="gateway")
    p.add_argument("--broker-user", default="mosquitto",
                   help="system user Mosquitto runs as once started as root (mosquitto.conf "
                        "says `user` so; drop that line if your main mosquitto.conf sets it): "
                        "passwd and acl become its own, mode 0640 (default %(default)s)")
    p.add_argument("--new-gateway-password", action="store_true",
                   help="rotate the gateway's broker password (then reload the broker: a "
                        "gateway reading --out/gateway.password as mqtt.password_file rereads "
                        "it when the broker refuses the old one); by default it is kept")

    sched = add("schedule", None, "lighting schedules")
    ssub = sched.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")
    for name, fn, text in (("save", _schedule_save, "save a new version from a JSON/TOML file"),
                           ("list", _schedule_list, "list schedules and versions"),
                           ("preview", _schedule_preview, "what a lamp does on a night"),
                           ("assign", _schedule_assign, "assign to nodes and push"),
                           ("rollout", _schedule_rollout, "which node runs which version")):
        p = ssub.add_parser(name, help=text)
        _common(p)
        p.set_defaults(run=_with_store(fn))
        if name != "list":
            p.add_argument("name")
        if name == "save":
            p.add_argument("file")
        if name == "preview":
            p.add_argument("--version", type=int)
            p.add_argument("--at-node", type=int, help="use this node's location")
            p.add_argument("--lat", type=float)
            p.add_argument("--lon", type=float)
            p.add_argument("--date", help="YYYY-MM-DD, the evening of the night (default today)")
            p.add_argument("--tz", default="UTC", help="time zone of the output, e.g. "
                                                       "Europe/Amsterdam")
        if name == "assign":
            _targets_args(p)

    cmd = add("command", None, "send a command to nodes")
    csub = cmd.add_subparsers(dest="op", required=True, metavar="OPERATION")
    for name in ("dim", "identify", "reserve", "release", "recalibrate", "reboot", "time-sync"):
        p = csub.add_parser(name, help=f"{name} command")
        _common(p)
        _targets_args(p)
        p.add_argument("--ttl", type=float, help="seconds until it expires (default 3600)")
        p.add_argument("--note", default="", help="why, for the audit log")
        p.set_defaults(run=_with_store(_command))
        if name == "dim":
            p.add_argument("level", type=int, help="percent")
            p.add_argument("duration", type=int, help="seconds (0 ends an override)")
        elif name == "identify":
            p.add_argument("seconds", type=int)
        elif name == "reserve":
            p.add_argument("start", type=int, help="Unix time")
            p.add_argument("until", type=int, help="Unix time")
        elif name == "recalibrate":
            p.add_argument("sensor", type=int, nargs="?", default=0)

    p = add("commands", _with_store(_command_list), "list commands and their states")
    p.add_argument("--id", type=int, help="only this node")
    p.add_argument("--limit", type=int, default=50)
    p = add("twin", _with_store(_twin), "device twins with liveness")
    p.add_argument("--id", type=int, help="only this node")
    add("parking", _with_store(_parking), "free bays per zone")
    p = add("air", _with_store(_air), "hourly air quality and EAQI of a node")
    p.add_argument("id", type=int)
    p.add_argument("--hours", type=int, default=24)
    p = add("quarantine", _with_store(_quarantine), "refused uplinks, newest first")
    p.add_argument("--limit", type=int, default=50)
    p = add("audit", _with_store(_audit), "audit log, newest first")
    p.add_argument("--limit", type=int, default=50)
    p = add("bench", cmd_bench, "ingest benchmark against a private Mosquitto")
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--bench-store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--instances", type=int, default=1,
                   help="also measure this many gateway processes on a shared subscription")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citisense")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["gateway", *(sys.argv[1:] if argv is None else argv)])
    return int(args.run(args))
