"""`citisense flash`: put a bundle (and the node's config) on a board and commission it.

    citisense flash --bundle DIR [--config node-42.json] [--port PATH|auto]
                    [--broker URL | --no-watch]
    citisense flash --micropython-image FILE [--erase] [--dry-run] --board B | --bundle DIR

Steps: optionally write MicroPython with esptool; read the board; refuse what would not
run (no MicroPython, wrong board, MicroPython or .mpy version mismatch, another node's
identity, not enough flash); install the bundle in the inactive slot and switch to it
(deploy.py); reset; wait for the node's birth message and check it is the node expected.
Any failure before the switch leaves the previous application active.

The birth is watched through the gateway's API (as `citisense login` logged in) or on
--broker. With neither, the command refuses before touching the board: exit 0 means
"commissioned". --no-watch flashes without that check, and says what it did not verify.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from citisense_boards import definitions
from citisense_tools import bundle as bundles
from citisense_tools import commissioning, esptool_cmd, operator_cmds
from citisense_tools.board_link import BoardLink, SerialLink, find_port
from citisense_tools.board_state import BoardState, probe
from citisense_tools.deploy import Progress, install
from citisense_tools.errors import CommandError
from citisense_tools.node_config import birth_digest, parse_config

DEFAULT_TIMEOUT = 120.0
BROKER_ENV = "CITISENSE_BROKER_URL"


class ConsoleProgress:
    """Numbered steps; a transfer counter in place on a terminal, quarters otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.count = 0
        self._quarter = -1
        self._open_line = False

    def step(self, text: str) -> None:
        self._end_line()
        self.count += 1
        self._quarter = -1
        print(f"[{self.count}] {text}", file=self.stream, flush=True)

    def transfer(self, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        text = f"    {done / 1024:.1f} of {total / 1024:.1f} KiB ({percent}%)"
        if self.tty:
            print("\r" + text, end="", file=self.stream, flush=True)
            self._open_line = True
        elif percent // 25 > self._quarter:
            self._quarter = percent // 25
            print(text, file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self._open_line:
            print(file=self.stream)
            self._open_line = False


def preflight(state: BoardState, bundle: bundles.Bundle, board: dict[str, Any],
              config: dict[str, Any] | None, *, new_identity: bool = False) -> None:
    """Refuse, in a technician's words, a flash that would not give a working node."""
    wanted = str(bundle.manifest["micropython"])
    have = "{}.{}".format(*state.micropython[:2])
    if have != wanted:
        raise CommandError(
            f"MicroPython version mismatch: the board runs MicroPython {state.micropython_text}, "
            f"the bundle is built for {wanted}: write MicroPython {wanted} first "
            f"(citisense flash --micropython-image FILE), or build for a board definition "
            f"of MicroPython {have}")
    mpy = tuple(bundle.manifest["mpy"])
    if state.mpy_version != mpy:
        raise CommandError(
            f"the board's MicroPython loads .mpy v{state.mpy_version[0]}.{state.mpy_version[1]}, "
            f"the bundle has .mpy v{mpy[0]}.{mpy[1]}: write the matching MicroPython first")
    chip = str(board["chip"])
    if not state.machine.endswith(f"with {chip}"):
        raise CommandError(f"wrong board: it says it is {state.machine!r}, but the bundle is "
                           f"for {bundle.board} (an {chip})")
    on_board = state.config if state.has_config else None
    if on_board is None and config is None:
        raise CommandError("this board has no config: give --config with the file made by "
                           "citisense provision")
    if on_board is not None and not (new_identity and config is not None):
        _check_config(on_board, bundle, "this board is provisioned")
    if config is not None:
        _check_config(config, bundle, "the config file is")
        if on_board is not None and on_board.get("node") != config.get("node") \
                and not new_identity:
            raise CommandError(
                f"not the expected node: this board is node {on_board.get('node')}, the config "
                f"file is for node {config.get('node')}. Pass --new-identity to give this board "
                "the new identity (its old node will stop talking)")


def _check_config(doc: dict[str, Any], bundle: bundles.Bundle, whose: str) -> None:
    if doc.get("board") != bundle.board:
        raise CommandError(f"wrong board: {whose} for board {doc.get('board')}, the bundle is "
                           f"for {bundle.board}: build for --board {doc.get('board')}")
    if doc.get("role") != bundle.role:
        raise CommandError(f"{whose} for the {doc.get('role')} role, the bundle is for "
                           f"{bundle.role}: build for --role {doc.get('role')}")


def expected_birth(bundle: bundles.Bundle, state: BoardState,
                   config: dict[str, Any] | None) -> commissioning.Expected:
    """What the node must announce after the flash: its new config's, or the board's."""
    doc = config if config is not None else state.config or {}
    where = doc["location"]
    # The digest of a config just written must match; an older one may carry settings
    # changed since by set_config, which the node lays over its file.
    cfg = birth_digest(config) if config is not None else None
    return commissioning.Expected(node=int(doc["node"]), fw=bundle.version, role=bundle.role,
                                  board=bundle.board, cfg=cfg,
                                  loc=(int(where["lat"]), int(where["lon"])))


def flash(link: BoardLink, bundle: bundles.Bundle, progress: Progress, *,
          config: bytes | None = None, births: commissioning.BirthSource | None = None,
          timeout: float = DEFAULT_TIMEOUT, new_identity: bool = False,
          ) -> commissioning.Birth | None:
    """Install `bundle` through `link` and commission the node; its birth, if watched."""
    doc = parse_config(config) if config is not None else None
    progress.step(f"reading the board on {link.name}")
    state = probe(link)
    board = definitions.load(bundle.board)
    preflight(state, bundle, board, doc, new_identity=new_identity)
    expected = expected_birth(bundle, state, doc)
    if births is None:
        install(link, bundle, state, progress, config=config)
        progress.step("resetting the board (its birth is not watched)")
        link.reset()
        return None
    key = bytes.fromhex(doc["key"]) if doc is not None else None
    # Listening before anything is written: a broker problem shows up while the board
    # still runs its old application, and no birth can slip by.
    with births.watch(expected.node, key) as wait:
        installed = install(link, bundle, state, progress, config=config)
        progress.step(f"resetting the board; waiting up to {timeout:.0f} s for node "
                      f"{expected.node} to announce itself")
        link.reset()
        birth = wait(timeout)
    if birth is None:
        raise CommandError(
            f"no birth message from node {expected.node} within {timeout:.0f} s: the new "
            f"application is installed (slot {installed.slot}) but the node did not come "
            "online: check its network, broker address and credentials (citisense doctor)")
    problems = commissioning.differences(birth, expected)
    if problems:
        raise CommandError("not the expected node: " + "; ".join(problems))
    return birth


def birth_source(args: argparse.Namespace) -> commissioning.BirthSource | None:
    """Where the birth is watched: the broker if one is given, else the gateway's API as
    the technician logged in; None when neither is known."""
    if args.broker:
        return commissioning.MqttBirthSource(commissioning.Broker.from_url(args.broker))
    token = operator_cmds.api_token(args)
    if token is None:
        return None
    return commissioning.ApiBirthSource(operator_cmds.Api(operator_cmds.api_url(args), token))


NOTHING_WATCHES = (
    "not flashing: nothing would check that the node comes online (nobody is logged in and "
    "no --broker is given). Log in with `citisense login --api URL` (the gateway's API), or "
    f"give --broker mqtt://user:password@host:1883 (or set ${BROKER_ENV}), or pass "
    "--no-watch to flash without that check. The board was not touched.")


def unwatched_summary(bundle: bundles.Bundle) -> str:
    """What a --no-watch flash verified, and what it did not."""
    return (f"flashed citisense {bundle.version} ({bundle.role} on {bundle.board}) and reset "
            "the board, NOT commissioned (--no-watch). Verified: the board's MicroPython, "
            "chip and config match the bundle, and the application arrived intact (SHA-256 "
            "on the board). Not verified: that the application starts, and that the node "
            "connects and announces itself as the expected node: check it with `citisense "
            "nodes` or flash again with a login or --broker")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "flash", help="install a firmware bundle on a board over USB and commission it",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bundle", type=Path, help="bundle folder made by citisense build")
    parser.add_argument("--config", type=Path,
                        help="the node's config file made by citisense provision")
    parser.add_argument("--port", default="auto",
                        help="serial port of the board, or auto (default: the one ESP32 on USB)")
    watch = parser.add_argument_group(
        "where the node's birth is watched",
        "through the gateway's API as the user `citisense login` logged in (default), or "
        "on an MQTT broker")
    operator_cmds.add_api_options(watch)
    watch.add_argument("--broker", default=os.environ.get(BROKER_ENV),
                       help="MQTT broker to watch instead, mqtt://user:password@host:1883 "
                            f"(default: ${BROKER_ENV})")
    watch.add_argument("--no-watch", action="store_true",
                       help="flash without waiting for the node's birth: nothing checks that "
                            "the node comes online (without a login or --broker, flash "
                            "refuses unless this is given)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait for the birth message (default: %(default)s)")
    parser.add_argument("--new-identity", action="store_true",
                        help="replace the identity of a board provisioned as another node")
    parser.add_argument("--micropython-image", type=Path, metavar="FILE",
                        help="first write this MicroPython image (.bin) with esptool")
    parser.add_argument("--board", help="board definition, when writing an image without "
                                        "a bundle")
    parser.add_argument("--erase", action="store_true",
                        help="erase the whole flash before writing the image (the board "
                             "loses its config and key)")
    parser.add_argument("--baud", type=int, default=esptool_cmd.DEFAULT_BAUD,
                        help="esptool baud rate (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="only show the esptool commands of --micropython-image")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    bundle = bundles.read_bundle(args.bundle) if args.bundle else None
    config = _read_config(args.config) if args.config else None
    if bundle is None and not args.micropython_image:
        raise CommandError("give --bundle (from citisense build), or --micropython-image")
    if args.dry_run and not args.micropython_image:
        raise CommandError("--dry-run shows the esptool commands of --micropython-image; "
                           "installing a bundle has no dry run (leave out --dry-run to "
                           "flash). The board was not touched.")
    births = None
    image_only = args.micropython_image and args.dry_run  # returns before the bundle
    if bundle is not None and not image_only and not args.no_watch:
        # Decided before anything is written, MicroPython image included: a flash nobody
        # checks would end with exit 0 and a node that may never come online.
        births = birth_source(args)
        if births is None:
            raise CommandError(NOTHING_WATCHES)
    if args.micropython_image:
        _write_image(args, bundle)
        if args.dry_run or bundle is None:
            return 0
    assert bundle is not None
    port = find_port() if args.port == "auto" else args.port
    progress = ConsoleProgress()
    link = SerialLink(port)
    try:
        birth = flash(link, bundle, progress, config=config, births=births,
                      timeout=args.timeout, new_identity=args.new_identity)
    except BaseException:
        link.close()
        raise
    if birth is None:
        print(unwatched_summary(bundle))
    else:
        print(f"commissioned {commissioning.describe(birth)}")
    return 0


def _read_config(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CommandError(f"cannot read the config file {path}: {err.strerror or err}") from None
    parse_config(raw, str(path))
    return raw


def _write_image(args: argparse.Namespace, bundle: bundles.Bundle | None) -> None:
    name = bundle.board if bundle is not None else args.board
    if not name:
        raise CommandError("writing MicroPython needs the board: give --board or --bundle")
    try:
        board = definitions.load(name)
    except definitions.UnknownBoard as err:
        raise CommandError(str(err)) from None
    port = args.port
    if port == "auto":
        try:
            port = find_port()
        except CommandError:
            if not args.dry_run:
                raise
            port = "PORT"  # a dry run shows the command even with no board plugged in
    program = None
    if args.dry_run:
        try:
            program = esptool_cmd.esptool_program()
        except CommandError:
            program = ["esptool.py"]  # show the command even where esptool is missing
    commands = esptool_cmd.write_commands(args.micropython_image, port, board, erase=args.erase,
                                          baud=args.baud, program=program)
    if args.erase:
        print("note: --erase wipes the board's files, its config and key included; give "
              "--config again to restore its identity")
    if args.dry_run:
        for command in commands:
            print(esptool_cmd.show(command))
        print("dry run: nothing was written")
        return
    esptool_cmd.run_commands(commands)
    print(f"MicroPython written to the board on {port}")
