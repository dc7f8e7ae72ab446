"""`citisense provision`: give a node its identity, register it, write its config file.

The node is registered through the gateway's API as the logged-in technician (`citisense
login`), or with --store / --gateway-config straight into the gateway's database on the
gateway host (to bootstrap). The node's 32-byte MAC key and broker password are made
from the secrets module (by the gateway's registry), stored in the gateway's registry
(the password only as a hash) and in the config file, nowhere else: never printed, never
logged. The file is created with mode 0600 in one step (os.open), so it is never
readable by others, not even briefly, and an existing file is never overwritten.
"""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path
from typing import Any

from citisense_boards import definitions
from citisense_tools import node_config
from citisense_tools.errors import CommandError
from citisense_tools.operator_cmds import add_api_options
from citisense_tools.registration import (
    Identity,
    NodeInfo,
    Registry,
    choose,
    describe,
    register_node,
    unregister_node,
)

WIFI_PASSWORD_ENV = "CITISENSE_WIFI_PASSWORD"
PLACEHOLDER_KEY = "11" * 32  # validates the document before any key exists


def config_doc(identity: Identity, args: argparse.Namespace,
               wifi_password: str | None) -> dict[str, Any]:
    """The node's config in the firmware's format (citisense_firmware.config)."""
    uplink: dict[str, Any]
    if args.serial:
        uplink = {"transport": "serial", "baud": args.baud}
    else:
        uplink = {"transport": "mqtt", "host": args.broker_host, "port": args.broker_port,
                  "user": identity.broker_user, "password": identity.broker_password}
    doc: dict[str, Any] = {
        "node": identity.node_id,
        "role": args.role,
        "board": args.board,
        "key": identity.mac_key.hex(),
        "uplink": uplink,
        "location": {"lat": node_config.degrees_e7(args.lat),
                     "lon": node_config.degrees_e7(args.lon)},
        "group": args.street,
        "zone": args.zone,
    }
    if args.wifi_ssid:
        doc["wifi"] = {"ssid": args.wifi_ssid, "password": wifi_password or ""}
    return doc


def write_secret_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 and write `data`; never replaces an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandError(f"{path} already exists: it may hold another node's key; choose "
                           "another --out") from None
    except OSError as err:
        raise CommandError(f"cannot create {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as err:
        path.unlink(missing_ok=True)
        raise CommandError(f"cannot write {path}: {err.strerror or err}") from None


def _wifi_password(args: argparse.Namespace) -> str | None:
    if not args.wifi_ssid:
        return None
    password = os.environ.get(WIFI_PASSWORD_ENV)
    if password is None:
        password = getpass.getpass(f"WiFi password for {args.wifi_ssid}: ")
    return password


def _check_args(args: argparse.Namespace) -> None:
    try:
        board = definitions.load(args.board)
    except definitions.UnknownBoard as err:
        raise CommandError(str(err)) from None
    if args.role not in board["roles"]:
        raise CommandError(f"board {args.board} is not wired for the {args.role} role")
    if not args.serial and not args.broker_host:
        raise CommandError("give the broker the node connects to (--broker-host), or --serial "
                           "for a node on a serial link")
    if board["network"]["kind"] == "wlan" and not args.serial and not args.wifi_ssid:
        raise CommandError(f"board {args.board} reaches the network over WiFi: give --wifi-ssid")
    if args.out is not None and args.out.exists():
        raise CommandError(f"{args.out} already exists: it may hold another node's key; choose "
                           "another --out")


def provision(args: argparse.Namespace) -> tuple[Identity, Path, Registry]:
    _check_args(args)
    wifi_password = _wifi_password(args)
    draft = config_doc(Identity(args.node or 1, bytes.fromhex(PLACEHOLDER_KEY), "1", "draft"),
                       args, wifi_password)
    problem = node_config.problem(draft)
    if problem:
        raise CommandError(f"the node's config would be refused by the firmware: {problem}")
    where = choose(args)
    identity = register_node(
        where,
        NodeInfo(args.role, zone=args.zone, street=args.street, lat=args.lat, lon=args.lon,
                 label=args.label),
        user=args.user, node_id=args.node)
    out = args.out or Path(f"node-{identity.node_id}.json")
    try:
        write_secret_file(out, node_config.encode(config_doc(identity, args, wifi_password)))
    except BaseException as failed:
        try:
            unregister_node(where, identity.node_id, user=args.user)
        except CommandError as err:
            raise CommandError(f"{failed}; node {identity.node_id} stays registered without "
                               f"a config (undoing it failed: {err}): remove it with "
                               f"`citisense gateway node remove {identity.node_id}` on the "
                               "gateway host") from None
        raise
    return identity, out, where


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "provision", help="give a new node its identity and key and register it",
        description="Create a node's identity and 32-byte key, register it with the gateway "
                    "and write its config file (mode 0600) for citisense flash.")
    parser.add_argument("--role", required=True, choices=node_config.ROLES)
    parser.add_argument("--board", required=True,
                        help=f"board definition ({', '.join(definitions.names())})")
    parser.add_argument("--lat", type=float, required=True, help="latitude, WGS 84 degrees")
    parser.add_argument("--lon", type=float, required=True, help="longitude, WGS 84 degrees")
    parser.add_argument("--node", type=int, help="node id (default: the next free one)")
    parser.add_argument("--zone", default="", help="district or zone the node belongs to")
    parser.add_argument("--street", default="", help="street or group of the node")
    parser.add_argument("--label", default="",
                        help="what the public sees, e.g. 'lamp 4, Kerkstraat'")
    parser.add_argument("--broker-host", help="MQTT broker the node connects to")
    parser.add_argument("--broker-port", type=int, default=1883)
    parser.add_argument("--serial", action="store_true",
                        help="the node talks over a serial link (RS-485) instead of MQTT")
    parser.add_argument("--baud", type=int, default=115200, help="serial link speed")
    parser.add_argument("--wifi-ssid",
                        help=f"WiFi network (password from ${WIFI_PASSWORD_ENV} or a prompt)")
    parser.add_argument("--out", type=Path, help="config file to write (default: node-ID.json)")
    via = parser.add_argument_group(
        "where the node is registered",
        "through the gateway's API as the user `citisense login` logged in (default), or "
        "on the gateway host straight into its database (--store or --gateway-config, to "
        "bootstrap)")
    add_api_options(via)
    via.add_argument("--store", help="the gateway's store URL, on the gateway host")
    via.add_argument("--gateway-config",
                     help="the gateway's TOML configuration file, for its store URL")
    via.add_argument("--user", default=getpass.getuser(),
                     help="who provisions, for the audit log with --store (through the API "
                          "the logged-in user is recorded; default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    identity, out, where = provision(args)
    print(f"node {identity.node_id} registered with {describe(where)}: {args.role} on "
          f"{args.board} at {args.lat}, {args.lon}")
    print(f"config written to {out} (readable by you only): it holds the node's key and broker "
          "password; keep it safe and install it with citisense flash --config "
          f"{out} --bundle BUNDLE")
    return 0
