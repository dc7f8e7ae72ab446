"""`citisense board start`: a virtual ESP32 on the command line.

The first line printed is the REPL's serial port, so scripts can read it and
run mpremote against it; the board runs until interrupted (Ctrl-C or SIGTERM).
The citisense CLI adds them with `register`, like its other subcommands.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from citisense_boards.street import Street, StreetClock
from citisense_boards.virtual_board import VirtualBoard
from citisense_boards.wiring import ROLES


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    board = subparsers.add_parser("board", help="run virtual ESP32 boards")
    commands = board.add_subparsers(dest="board_command", required=True)
    start = commands.add_parser(
        "start", help="start a virtual board: prints its REPL port, runs until Ctrl-C"
    )
    start.add_argument("--role", choices=sorted(ROLES), default="all",
                       help="which node the board is: which sensors and lamp it carries")
    start.add_argument("--name", default="board", help="board name (sets its unique id)")
    start.add_argument("--dir", type=Path,
                       help="keep the board's flash and NVS here (default: a temporary directory)")
    start.add_argument("--speed", type=float, default=1.0,
                       help="how fast the street's clock runs (60: a minute per second)")
    start.set_defaults(run=board_start_command)


def board_start_command(args: argparse.Namespace) -> int:
    street = Street(clock=StreetClock(speed=args.speed))
    board = VirtualBoard(args.name, role=args.role, street=street, directory=args.dir)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        board.start()
        print(board.repl_port, flush=True)
        print(f"uplink UART: {board.uart_port}", flush=True)
        print(f"flash: {board.flash_dir}", flush=True)
        stop.wait()
    finally:
        board.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citisense")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
