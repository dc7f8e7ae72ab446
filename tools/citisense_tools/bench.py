"""`make bench`: every benchmark, one JSON line each, printed and appended to a results file.

    python -m citisense_tools.bench [--only NAME ...] [--out FILE] [--nodes N] ...

Each line: {"bench": NAME, ...figures..., "machine": {...}, "reference": "..."}, where
`reference` says what the figures are measured against. The benchmarks reuse the
project's own measuring code:

    wire       wire_sizes.py: signed CBOR telemetry per role against its JSON equivalent
    ingest     citisense_gateway.bench_ingest: gateway against mosquitto_sub
    boards     citisense_boards.bench: 20 virtual boards, start time and memory
    footprint  bench_node_memory.py: MicroPython heap per role over simulated time, and
               the bundle `citisense build --role R --board virtual-esp32` makes
    commands   bench_fleet.py: API call to the node's ack committed, with N (10,000)
               connected nodes in worker processes
    storm      bench_fleet.py: the N nodes' links drop at once; time from their return to
               a complete, consistent view with nothing lost
               (commands and storm share one fleet: setting it up costs about a minute)

Timing figures are printed, never asserted (DESIGN.md, test tiers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from citisense_tools.board_modules import REPO

DEFAULT_OUT = REPO / "var" / "bench" / "results.jsonl"
Figures = dict[str, Any]
Result = tuple[Figures, str, float, dict[str, Any]]  # figures, reference, took_s, machine()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as f:
        mem_kib = int(f.readline().split()[1])
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "load_avg": list(os.getloadavg())}


def _run_json(args: list[str], timeout: float) -> Figures:
    """Run a benchmark module and return the JSON object on its last output line."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{' '.join(args)} printed nothing (exit {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    figures: Figures = json.loads(lines[-1])
    figures["exit_code"] = done.returncode
    return figures


# -- wire --------------------------------------------------------------------------------


def bench_wire(args: argparse.Namespace) -> tuple[Figures, str]:
    from citisense_tools import wire_sizes

    roles: Figures = {}
    for row in wire_sizes.size_rows():
        if row.kind != "telemetry":
            continue
        # telemetry-ROLE (typical) and telemetry-ROLE-worst (every field at its longest)
        _, role, *variant = row.name.split("-")
        entry = roles.setdefault(role, {})
        key = "worst" if variant == ["worst"] else "typical" if not variant else variant[0]
        entry[key] = {"cbor_bytes": row.cbor, "json_bytes": row.json,
                      "json_over_cbor": round(row.json / row.cbor, 2)}
    return {"telemetry": roles}, ("JSON equivalent of the same signed message (protocols/"
                                  "SPEC.md, Examples); CBOR includes the 8-byte MAC")


# -- ingest ------------------------------------------------------------------------------


def bench_ingest(args: argparse.Namespace) -> tuple[Figures, str]:
    figures = _run_json(["-m", "citisense_gateway.bench_ingest", "--messages",
                         str(args.messages)], timeout=600)
    return figures, ("mosquitto_sub draining the same queued QoS 1 stream from the same "
                     "private Mosquitto (receive and ack only)")


# -- boards ------------------------------------------------------------------------------

_BOARD_ROW = re.compile(r"^(\S+)\s+([\d.]+)\s+([\d.]+)$")
_SUMMARY = {
    "start_s": re.compile(r"start time\s+mean ([\d.]+) s, max ([\d.]+) s, "
                          r"all booted after ([\d.]+) s"),
    "rss_mib": re.compile(r"memory\s+mean ([\d.]+) MiB, max ([\d.]+) MiB, total ([\d.]+) MiB"),
    "cpu": re.compile(r"CPU\s+(\d+)% of one core"),
}


def parse_boards(text: str) -> Figures:
    """The figures of citisense_boards.bench's report."""
    boards = [m.groups() for line in text.splitlines() if (m := _BOARD_ROW.match(line.strip()))
              and m.group(1) != "board"]
    found = {key: pattern.search(text) for key, pattern in _SUMMARY.items()}
    missing = [key for key, match in found.items() if match is None]
    if missing or not boards:
        raise RuntimeError(f"citisense_boards.bench: no {missing or 'board rows'} in:\n{text}")
    start, rss, cpu = (found[key] for key in ("start_s", "rss_mib", "cpu"))
    assert start is not None and rss is not None and cpu is not None
    return {
        "boards": len(boards),
        "start_s": {"mean": float(start[1]), "max": float(start[2]), "all_up": float(start[3])},
        "rss_mib_per_board": {"mean": float(rss[1]), "max": float(rss[2]),
                              "total": float(rss[3])},
        "fleet_cpu_percent_of_one_core": int(cpu[1]),
    }


def bench_boards(args: argparse.Namespace) -> tuple[Figures, str]:
    flags = ["--boards", str(args.boards), "--firmware"]
    done = subprocess.run([sys.executable, "-m", "citisense_boards.bench", *flags],
                          capture_output=True, text=True, timeout=600, check=True)
    figures = parse_boards(done.stdout)
    figures["mode"] = "firmware main.py (lamp PWM + light sensor every 100 ms)"
    return figures, ("each board is a Node process running the MicroPython WebAssembly VM; "
                     "RSS is that process's resident memory")


# -- footprint ---------------------------------------------------------------------------


def bundle_bytes(role: str, out: Path) -> dict[str, int]:
    """Size of what `citisense build --role R --board virtual-esp32` makes."""
    from citisense_tools import build

    made = build.build(role, "virtual-esp32", out)
    app = sum(int(item["size"]) for item in made.manifest["files"])
    root = sum(int(item["size"]) for item in made.root_files)
    return {"app_mpy_bytes": app, "root_bytes": root, "files": len(made.manifest["files"])}


def bench_footprint(args: argparse.Namespace) -> tuple[Figures, str]:
    flags = ["--json", "--roles", *args.roles]
    for flag, value in (("--period", args.period), ("--mpy-period", args.mpy_period),
                        ("--speed", args.speed)):
        if value is not None:
            flags += [flag, str(value)]
    figures = _run_json(["-m", "citisense_tools.bench_node_memory", *flags], timeout=900)
    with tempfile.TemporaryDirectory(prefix="citisense-bench-") as tmp:
        for role, entry in figures.get("roles", {}).items():
            entry["bundle"] = bundle_bytes(role, Path(tmp) / f"bundle-{role}")
    return figures, (
        "heap: gc.mem_alloc() of the node app with the board's HAL and drivers on the "
        "MicroPython 1.29 VM (python -m citisense_tools.bench_node_memory --json: code "
        "executed in place from ROMFS for the whole period, and loaded from .mpy files; "
        "commands, a link outage in hour 3; the VM collects every 4 KB allocated), peak "
        "before and after each collection, against heap_budget_bytes (an ESP32 without "
        "PSRAM); bundle: what citisense build --role R --board virtual-esp32 makes")


# -- fleet: commands and storm -----------------------------------------------------------

FLEET = ("commands", "storm")


def fleet_benches(names: Sequence[str], args: argparse.Namespace) -> dict[str, Result]:
    """Run the fleet benchmarks among `names` on one fleet: setting up 10,000 nodes costs
    a minute, so commands and storm share it (storm last: it disturbs the fleet)."""
    from citisense_tools.bench_fleet import FleetBench

    wanted = [name for name in FLEET if name in names]
    results: dict[str, Result] = {}

    async def run(work: Path) -> None:
        bench = FleetBench(args.nodes, work, processes=args.processes, speed=args.street_speed,
                           boot_rate=args.boot_rate)
        try:
            began, at_start = time.monotonic(), machine()
            try:
                await bench.start(timeout=args.fleet_timeout)
            except Exception as err:
                for name in wanted:
                    results[name] = _failed(err, began, at_start)
                return
            for name in wanted:
                at_start = machine()
                try:
                    if name == "commands":
                        figures = await bench.commands(args.samples, args.burst,
                                                       timeout=args.fleet_timeout)
                    else:
                        figures = await bench.storm(args.outage, timeout=args.fleet_timeout)
                except Exception as err:
                    results[name] = _failed(err, began, at_start)
                else:
                    results[name] = (figures, _fleet_reference(name, args),
                                     time.monotonic() - began, at_start)
                began = time.monotonic()  # the first one's time includes the setup
        finally:
            await bench.stop()

    with tempfile.TemporaryDirectory(prefix="citisense-bench-") as tmp:
        asyncio.run(run(Path(tmp)))
    return results


def _fleet_reference(name: str, args: argparse.Namespace) -> str:
    setup = (f"{args.nodes} simulated nodes (firmware app under CPython, own key and MQTT "
             f"connection each, {args.boot_rate:g} booted a second) in worker processes; "
             "gateway (SQLite, synchronous=full) with its HTTP API in the bench process; "
             "private Mosquitto configured from the registry; all on this machine")
    if name == "commands":
        return ("target p99 < 100 ms at 10,000 nodes; single: POST /api/v1/nodes/ID/commands "
                "(identify) to the node's ack committed in the gateway's store, one at a "
                "time; burst: Commands.issue to many nodes at once; " + setup)
    return (f"target < 60 s, nothing lost; every link dropped for {args.outage:g} s, nodes "
            "back by their own jittered backoff; timed from the links' return to every node "
            "online with its last birth, every will and every queued message stored; "
            + setup)


def _failed(err: Exception, began: float, at_start: dict[str, Any]) -> Result:
    return {"error": f"{type(err).__name__}: {err}"}, "", time.monotonic() - began, at_start


BENCHES: dict[str, Callable[[argparse.Namespace], tuple[Figures, str]]] = {
    "wire": bench_wire, "ingest": bench_ingest, "boards": bench_boards,
    "footprint": bench_footprint,
}
NAMES = [*BENCHES, *FLEET]


def record(name: str, args: argparse.Namespace) -> Figures:
    """Run one benchmark; its JSON line (an "error" figure if it failed)."""
    at_start = machine()
    began = time.monotonic()
    try:
        figures, reference = BENCHES[name](args)
    except Exception as err:  # one broken benchmark must not hide the others' figures
        figures, reference = {"error": f"{type(err).__name__}: {err}"}, ""
    return line(name, (figures, reference, time.monotonic() - began, at_start))


def line(name: str, result: Result) -> Figures:
    figures, reference, took_s, at_start = result
    return {"bench": name, **figures, "took_s": round(took_s, 1), "machine": at_start,
            "reference": reference}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m citisense_tools.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(NAMES), metavar="NAME",
                        help=f"run only these ({', '.join(NAMES)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="results file, appended to (default: var/bench/results.jsonl)")
    parser.add_argument("--messages", type=int, default=50_000, help="ingest: messages")
    parser.add_argument("--boards", type=int, default=20, help="boards: virtual boards")
    parser.add_argument("--roles", nargs="+", default=["lighting", "parking", "air"],
                        choices=["lighting", "parking", "air"], help="footprint: roles")
    parser.add_argument("--period", type=int,
                        help="footprint: street seconds per role, code in ROMFS "
                             "(default: bench_node_memory's, 24 hours)")
    parser.add_argument("--mpy-period", type=int,
                        help="footprint: street seconds per role, code from .mpy files")
    parser.add_argument("--speed", type=int,
                        help="footprint: street seconds per real second")
    parser.add_argument("--nodes", type=int, default=10_000,
                        help="commands, storm: connected simulated nodes")
    parser.add_argument("--processes", type=int,
                        help="commands, storm: worker processes for the nodes (default: one "
                             "per 4000 nodes, at most one per CPU)")
    parser.add_argument("--boot-rate", type=float, default=500.0,
                        help="commands, storm: nodes powered on per second at the start")
    parser.add_argument("--street-speed", type=float, default=1.0,
                        help="commands, storm: street seconds per real second")
    parser.add_argument("--samples", type=int, default=300,
                        help="commands: single commands timed one after another")
    parser.add_argument("--burst", type=int, default=1000,
                        help="commands: nodes sent one command each at once")
    parser.add_argument("--outage", type=float, default=2.0, help="storm: seconds links are down")
    parser.add_argument("--fleet-timeout", type=float, default=180.0,
                        help="commands, storm: give up waiting after this many seconds")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    names = args.only or NAMES
    fleet: dict[str, Result] = {}
    failed = False
    for name in [name for name in NAMES if name in names]:
        if name in FLEET:
            fleet = fleet or fleet_benches(names, args)
            result = line(name, fleet[name])
        else:
            result = record(name, args)
        failed |= "error" in result
        text = json.dumps(result)
        print(text, flush=True)
        with args.out.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
