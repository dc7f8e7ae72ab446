"""`citisense doctor --port PATH`: what a board holds and what is wrong with it.

Reads MicroPython's version, free flash and RAM, the installed applications, the config
(secrets replaced on the board) and the reset cause, then names the problems a
technician can fix on the spot. Reading the board stops its application (the node goes
offline): afterwards doctor resets the board, watches its console until the citisense
loader says which application it started, and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from citisense_boards import definitions
from citisense_tools.board_link import SerialLink, find_port
from citisense_tools.board_state import BoardState, probe
from citisense_tools.deploy import RESERVE
from citisense_tools.node_config import birth_digest

RESTART_WAIT_S = 20.0  # for the loader to say what it started after doctor's reset
LOADER = "citisense: "  # how the loader's boot lines begin (app_loader.py)
# The loader's last boot line: an application started, or none can be.
LOADER_DONE = (" from slot ", "no complete application", "no ROMFS partition")

RESET_CAUSES = {
    "PWRON_RESET": "power-on", "HARD_RESET": "external reset (button or USB)",
    "WDT_RESET": "watchdog (a task hung)", "DEEPSLEEP_RESET": "wake from deep sleep",
    "SOFT_RESET": "soft reset", "BROWNOUT_RESET": "brownout (supply voltage dropped)",
}


def _slot_text(state: BoardState, name: str) -> str:
    slot = state.slots[name]
    if not slot.present:
        return "empty"
    if not slot.complete:
        return "incomplete (an interrupted flash; the next flash reuses it)"
    marks = []
    if state.boots == name:
        marks.append("starts at boot")
    if state.pointer == name:
        marks.append("active")
    return (f"citisense {slot.version}, {slot.role} on {slot.board}, flash #{slot.seq}, "
            f"{slot.bytes / 1024:.1f} KiB" + (f" [{', '.join(marks)}]" if marks else ""))


def _degrees(value: object) -> str:
    return f"{value / 1e7:.7f}" if isinstance(value, int) else "?"


def _config_text(config: dict[str, Any]) -> str:
    where = config.get("location") or {}
    uplink = config.get("uplink") or {}
    if uplink.get("transport") == "mqtt":
        link = f"mqtt {uplink.get('host')}:{uplink.get('port', 1883)} as {uplink.get('user')}"
    else:
        link = f"{uplink.get('transport')} {uplink.get('baud', '')}".strip()
    key = "present" if config.get("key") else "MISSING"
    try:
        cfg = f", birth cfg {birth_digest(config)}"
    except (TypeError, ValueError):
        cfg = ""
    return (f"node {config.get('node')}, {config.get('role')} on {config.get('board')}, at "
            f"{_degrees(where.get('lat'))}, {_degrees(where.get('lon'))}; uplink {link}; key "
            f"{key} (not shown){cfg}")


def problems(state: BoardState) -> list[str]:
    """What a technician should fix, in words."""
    found = []
    board_name = (state.config or {}).get("board")
    wanted = None
    if board_name in definitions.names():
        wanted = definitions.load(str(board_name))["micropython"]
    have = "{}.{}".format(*state.micropython[:2])
    if wanted is not None and have != wanted:
        found.append(f"MicroPython {state.micropython_text} is installed; this board's firmware "
                     f"needs {wanted}: write it with citisense flash --micropython-image")
    if not state.romfs_bytes:
        found.append("this MicroPython has no \"romfs\" partition for the application: write "
                     "the citisense MicroPython image with citisense flash --micropython-image")
    if not state.loader and any(slot.present for slot in state.slots.values()):
        found.append("the citisense loader (/lib/citisense_loader.mpy) is missing, so nothing "
                     "starts: flash again to restore it")
    elif state.boots is None:
        found.append("no complete application: install one with citisense flash")
    if not state.has_config:
        found.append("no config: this board has no identity; citisense provision, then flash "
                     "with --config")
    elif state.config is None:
        found.append("the config file is damaged (not JSON): flash again with --config")
    if state.fs_free < RESERVE:
        found.append(f"flash almost full ({state.fs_free // 1024} KiB free): the application "
                     "needs room for its queue")
    if state.reset_cause in ("WDT_RESET", "BROWNOUT_RESET"):
        found.append(f"last reset: {RESET_CAUSES[state.reset_cause]}")
    return found


def report(state: BoardState, port: str) -> list[str]:
    mpy = state.mpy_version
    lines = [
        f"board        {port}: {state.machine or state.platform}"
        + (f", id {state.uid}" if state.uid else ""),
        f"micropython  {state.micropython_text} (.mpy v{mpy[0]}.{mpy[1]})",
        f"flash        {state.fs_free / 1024:.0f} KiB free of {state.fs_total / 1024:.0f} KiB; "
        + (f"application partition {state.romfs_bytes // 1024} KiB (2 slots)"
           if state.romfs_bytes else "no application partition"),
        f"ram          {state.ram_free / 1024:.0f} KiB free, {state.ram_used / 1024:.0f} KiB "
        "used (after gc)",
        f"reset cause  {RESET_CAUSES.get(state.reset_cause or '', state.reset_cause or 'unknown')}",
    ]
    for name in sorted(state.slots):
        lines.append(f"slot {name}       {_slot_text(state, name)}")
    if state.config is not None:
        lines.append(f"config       {_config_text(state.config)}")
    found = problems(state)
    lines.append("problems     " + ("none" if not found else found[0]))
    lines += [f"             {problem}" for problem in found[1:]]
    return lines


def _loader_lines(console: str) -> list[str]:
    """The loader's complete lines (a line still arriving may lack the slot's name)."""
    complete = console[:console.rfind("\n") + 1]
    return [line.strip() for line in complete.splitlines() if line.startswith(LOADER)]


def _loader_done(console: str) -> bool:
    return any(mark in line for line in _loader_lines(console) for mark in LOADER_DONE)


def restart(link: SerialLink, state: BoardState, wait: float = RESTART_WAIT_S) -> str:
    """Reset the board after the check and say, in words, whether its application is
    running again (what the loader printed) or the node stays offline."""
    if not state.loader:
        link.close()
        return ("the board was reset after the check; it has no citisense loader, so no "
                "application runs: the node is offline until citisense flash installs one")
    console = link.reset_and_listen(_loader_done, wait)
    if console is None:
        return ("the board was reset after the check; its console could not be read after "
                "the reset, so its restart was not seen: run citisense doctor again to check")
    said = _loader_lines(console)
    started = [line for line in said if " from slot " in line]
    if started:
        return ("the application was stopped for the check and restarted: "
                f"{started[-1][len(LOADER):]}")
    if said:
        return ("the application was stopped for the check; after the reset the loader "
                f"said \"{said[-1][len(LOADER):]}\": the node is offline")
    return (f"the application was stopped for the check; after the reset it did not say it "
            f"started within {wait:.0f} s: the node may be offline until the board is reset "
            "(press its reset button, or power it off and on)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "doctor", help="show what a board holds and what is wrong with it",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", default="auto",
                        help="serial port of the board, or auto (default)")
    parser.add_argument("--json", action="store_true", help="print the state as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    port = find_port() if args.port == "auto" else args.port
    link = SerialLink(port)
    try:
        state = probe(link)
    except BaseException:
        link.close()
        raise
    if args.json:
        after = restart(link, state)
        print(json.dumps(dict(dataclasses.asdict(state), problems=problems(state),
                              after_check=after), indent=1))
    else:
        print("\n".join(report(state, port)), flush=True)
        print(f"after check  {restart(link, state)}")
    return 0
