"""Benchmark: many virtual boards at once on this machine.

    python -m citisense_boards.bench [--boards 20] [--firmware]

Starts the boards together, then prints each board's start time (power-on to a
booted VM) and its memory (RSS of its Node process), and the CPU the fleet
uses over a few seconds: idle at the REPL, or with --firmware running a small
asyncio main.py (lamp PWM and light sensor every 100 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from citisense_boards.virtual_board import Fleet

FIRMWARE = """
import asyncio
from machine import ADC, PWM, Pin

async def main():
    lamp = PWM(Pin(25), freq=1000)
    light = ADC(Pin(36), atten=ADC.ATTN_11DB)
    while True:
        lamp.duty_u16(65535 if light.read_uv() < 50_000 else 0)
        await asyncio.sleep_ms(100)

asyncio.run(main())
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boards", type=int, default=20)
    parser.add_argument("--firmware", action="store_true", help="run a small main.py on each")
    parser.add_argument("--window", type=float, default=5.0, help="CPU measuring window, s")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(args.boards, role="lighting", prefix="bench", base_dir=Path(tmp))
        for board in fleet.boards:
            board.flash_dir.mkdir(parents=True)
            if args.firmware:
                (board.flash_dir / "main.py").write_text(FIRMWARE)
        began = time.monotonic()
        with fleet:
            all_up = time.monotonic() - began
            time.sleep(2.0)  # let boot.py/main.py and the first sensor updates settle
            pids = [board.pid for board in fleet.boards]
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            time.sleep(args.window)
            cpu = (sum(cpu_seconds(pid) for pid in pids) - cpu_before) / args.window
            rss = {board.name: rss_mib(board.pid) for board in fleet.boards}
            boot = {board.name: board.start_seconds or 0.0 for board in fleet.boards}

    print(f"{'board':<10} {'start s':>8} {'RSS MiB':>8}")
    for name, seconds in boot.items():
        print(f"{name:<10} {seconds:>8.2f} {rss[name]:>8.1f}")
    print(
        f"\n{args.boards} boards ({'firmware' if args.firmware else 'idle at the REPL'}), "
        f"{os.cpu_count()} CPUs\n"
        f"start time  mean {statistics.mean(boot.values()):.2f} s, "
        f"max {max(boot.values()):.2f} s, all booted after {all_up:.2f} s\n"
        f"memory      mean {statistics.mean(rss.values()):.1f} MiB, "
        f"max {max(rss.values()):.1f} MiB, total {sum(rss.values()):.0f} MiB\n"
        f"CPU         {cpu * 100:.0f}% of one core for the whole fleet"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
