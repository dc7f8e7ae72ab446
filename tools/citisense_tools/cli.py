"""The `citisense` command: one entry point for technicians, operators and test rigs.

Each subcommand lives in its own module and registers itself here; the CLI only parses
arguments and reports errors in plain words with a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from citisense_boards import board_cli
from citisense_gateway import cli as gateway_cli
from citisense_tools import build, demo, doctor, flash, fleet, operator_cmds, provision
from citisense_tools.errors import CommandError

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
REGISTRARS: list[Registrar] = [
    demo.register,
    gateway_cli.register,
    board_cli.register,
    operator_cmds.register,
    build.register,
    provision.register,
    flash.register,
    doctor.register,
    fleet.register,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citisense", description="Street lighting, parking and air-quality nodes and gateway."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except CommandError as err:
        print(f"citisense {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
