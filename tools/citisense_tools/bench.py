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
    commands   bench_fleet.py: command issue-to-ack latency with N connected nodes
    storm      bench_fleet.py: N nodes reconnect at once; time to a complete, consistent view

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
    from citisense_boards.mpvm import MicroPythonVM
    from citisense_tools import bench_node_memory as memory

    roles: Figures = {}
    with tempfile.TemporaryDirectory(prefix="citisense-bench-") as tmp:
        work = Path(tmp)
        sizes = memory.compile_packages(work / "mpy")
        for role in args.roles:
            with MicroPythonVM() as vm:  # a fresh VM per role, as bench_node_memory does
                f = memory.measure(vm, role, work / "mpy", sizes, period_s=args.period,
                                   speed=args.speed)
            roles[role] = {
                "heap_booted_bytes": f.booted, "heap_peak_bytes": f.peak,
                "heap_peak_live_bytes": f.peak_live, "heap_settled_bytes": f.settled,
                "samples": f.samples, "messages_sent": sum(f.published.values()),
                "commands_acked": len(f.acks), "loaded_mpy_bytes": f.mpy_bytes,
                "bundle": bundle_bytes(role, work / f"bundle-{role}"),
            }
    return {"street_s": args.period, "code_from": ".mpy files (copied into RAM on import)",
            "heap_budget_bytes": memory.BUDGET_BYTES, "roles": roles}, (
        "heap: gc.mem_alloc() on the MicroPython 1.29 VM sampled every 20 ms (peak: before a "
        "collection, peak_live: after); budget = bench_node_memory.BUDGET_BYTES (ESP32 "
        "without PSRAM); bundle: citisense build --board virtual-esp32")


# -- fleet: commands and storm -----------------------------------------------------------


def _fleet(args: argparse.Namespace, what: str) -> tuple[Figures, str]:
    from citisense_tools.bench_fleet import FleetBench

    async def run(work: Path) -> Figures:
        bench = FleetBench(args.nodes, work, speed=args.street_speed)
        try:
            await bench.start(timeout=args.fleet_timeout)
            if what == "commands":
                return await bench.commands(args.samples, timeout=args.fleet_timeout)
            return await bench.storm(args.outage, timeout=args.fleet_timeout)
        finally:
            await bench.stop()

    with tempfile.TemporaryDirectory(prefix="citisense-bench-") as tmp:
        figures = asyncio.run(run(Path(tmp)))
    return figures, (f"target 10,000 nodes; measured at {args.nodes}, gateway (SQLite) and "
                     "every simulated node (firmware app under CPython) in this one process, "
                     "private Mosquitto beside it")


def bench_commands(args: argparse.Namespace) -> tuple[Figures, str]:
    return _fleet(args, "commands")


def bench_storm(args: argparse.Namespace) -> tuple[Figures, str]:
    return _fleet(args, "storm")


BENCHES: dict[str, Callable[[argparse.Namespace], tuple[Figures, str]]] = {
    "wire": bench_wire, "ingest": bench_ingest, "boards": bench_boards,
    "footprint": bench_footprint, "commands": bench_commands, "storm": bench_storm,
}


def record(name: str, args: argparse.Namespace) -> Figures:
    """Run one benchmark; its JSON line (an "error" figure if it failed)."""
    at_start = machine()
    began = time.monotonic()
    try:
        figures, reference = BENCHES[name](args)
    except Exception as err:  # one broken benchmark must not hide the others' figures
        figures, reference = {"error": f"{type(err).__name__}: {err}"}, ""
    return {"bench": name, **figures, "took_s": round(time.monotonic() - began, 1),
            "machine": at_start, "reference": reference}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m citisense_tools.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), metavar="NAME",
                        help=f"run only these ({', '.join(BENCHES)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="results file, appended to (default: var/bench/results.jsonl)")
    parser.add_argument("--messages", type=int, default=50_000, help="ingest: messages")
    parser.add_argument("--boards", type=int, default=20, help="boards: virtual boards")
    parser.add_argument("--roles", nargs="+", default=["lighting", "parking", "air"],
                        choices=["lighting", "parking", "air"], help="footprint: roles")
    parser.add_argument("--period", type=int, default=600, help="footprint: street seconds")
    parser.add_argument("--speed", type=int, default=50,
                        help="footprint: street seconds per real second")
    parser.add_argument("--nodes", type=int, default=1000,
                        help="commands, storm: connected simulated nodes")
    parser.add_argument("--street-speed", type=float, default=1.0,
                        help="commands, storm: street seconds per real second")
    parser.add_argument("--samples", type=int, default=100,
                        help="commands: single commands timed one after another")
    parser.add_argument("--outage", type=float, default=10.0, help="storm: seconds links are down")
    parser.add_argument("--fleet-timeout", type=float, default=180.0,
                        help="commands, storm: give up waiting after this many seconds")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in args.only or list(BENCHES):
        result = record(name, args)
        failed |= "error" in result
        line = json.dumps(result)
        print(line, flush=True)
        with args.out.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
