"""The node app on the real MicroPython VM: each role boots from compiled modules, runs
its control loop on a scripted board, obeys signed commands, and fits an ESP32's heap.

citisense_tools.bench_node_memory does the work (and prints the full table when run as a
script); here each role runs four street minutes with its commands, from a ROMFS image
as a board would execute it in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from citisense_boards.mpvm import ESP32_HEAP_BYTES, MicroPythonVM
from citisense_boards.rom_image import pack_romfs
from citisense_protocols import messages
from citisense_tools import bench_node_memory as bench

pytestmark = pytest.mark.micropython

# What each role answers to bench.role_commands(), in order.
RESULTS = {
    "lighting": [messages.OK, messages.OK, messages.OK, messages.OK, messages.OK, messages.OK,
                 messages.UNSUPPORTED],
    "parking": [messages.OK, messages.OK, messages.OK, messages.OK, messages.OK,
                messages.UNSUPPORTED],
    "air": [messages.OK, messages.OK, messages.OK, messages.UNSUPPORTED],
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, int],
                                                                          bytes]]:
    folder = tmp_path_factory.mktemp("mpy")
    sizes = bench.compile_packages(folder)
    yield folder, sizes, pack_romfs(folder)


@pytest.fixture(scope="module")
def heap_vm() -> Iterator[MicroPythonVM]:
    """A VM whose host collects its JS garbage often, as the footprint bench's does."""
    with MicroPythonVM(js_gc_ms=100) as vm:
        yield vm


@pytest.mark.parametrize("role", bench.ROLES)
def test_role_runs_on_micropython_within_the_esp32_heap(
        heap_vm: MicroPythonVM, compiled: tuple[Path, dict[str, int], bytes], role: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder, sizes, image = compiled
    figures = bench.measure(heap_vm, role, folder, sizes, period_s=280, speed=60, romfs=image)
    # The control loop ran and the uplink carried its reports and the command acks.
    assert figures.street_s >= 280 and figures.fed > 0
    assert figures.published["birth"] == 1 and figures.published["telemetry"] >= 4
    assert f"citisense_firmware.roles.{role}" in figures.modules
    others = {f"citisense_firmware.roles.{other}" for other in bench.ROLES if other != role}
    assert not others & set(figures.modules)  # a node loads only its own role
    # The catalogue checked each command and the config loader read the config at boot
    # and for set_config: both unloaded after.
    assert "citisense_protocols.catalogue" not in figures.modules
    assert "citisense_firmware.config_load" not in figures.modules
    assert list(figures.acks) == [(100 + i, result) for i, result in enumerate(RESULTS[role])]
    assert figures.peak < ESP32_HEAP_BYTES
    with capsys.disabled():
        print(f"\n{role}: heap after boot {figures.booted} B, peak {figures.peak} B, peak "
              f"live {figures.peak_live} B, "
              f"modules loaded {figures.mpy_bytes} B of .mpy")


def test_the_catalogue_unloaded_after_a_check_gives_its_heap_back(
        heap_vm: MicroPythonVM, compiled: tuple[Path, dict[str, int], bytes]) -> None:
    """What commands.py does for each downlink message: load, check, unload. Unloading
    frees the module's functions and tables (its names stay interned), and rounds of it
    leave nothing behind."""
    _, _, image = compiled
    heap_vm.reset()
    heap_vm.put("/romfs.img", image)
    body = messages.command(7, 1, 2_000_000_000, 1, messages.OP_DIM, [50, 60])
    out = heap_vm.run(bench._MOUNT_ROMFS + f"""
import asyncio, gc, sys
import citisense_protocols
from citisense_protocols import messages
from citisense_firmware.compat import unload

async def heap():  # this port collects at a suspension
    gc.collect()
    await asyncio.sleep_ms(1)
    return gc.mem_alloc()

async def check():
    from citisense_protocols import catalogue
    catalogue.decode_body({body!r})

await check()
loaded = await heap()
unload("citisense_protocols.catalogue")
once = await heap()
for _ in range(5):
    await check()
    unload("citisense_protocols.catalogue")
print(loaded - once, await heap() - once, "citisense_protocols.catalogue" in sys.modules,
      hasattr(citisense_protocols, "catalogue"))
""")
    freed, grown, in_modules, bound = out.split()[-4:]
    assert in_modules == bound == "False"
    assert int(freed) > 2000, freed  # the loaded module's functions and data
    assert int(grown) < 400, grown  # five more rounds: nothing accumulates
