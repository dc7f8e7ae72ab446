"""Fixtures of the technicians' tooling tests: a board link over the real MicroPython VM
and small application bundles built with the real build (mpy-cross included).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from citisense_boards.mpvm import MicroPythonError, MicroPythonVM
from citisense_tools import build
from citisense_tools.board_link import BoardCodeError
from citisense_tools.bundle import Bundle

MACHINE = "Test ESP32 module with ESP32"

# A stand-in application: on start it prints what a birth message would carry, computed
# on the board from the bundle's modules and /config.json.
FAKE_APP_MAIN = '''
import json
import citisense_release
from citisense_board import BOARD

def main():
    try:
        with open('/config.json') as f:
            doc = json.loads(f.read())
    except OSError:
        doc = {}
    where = doc.get('location')
    loc = [where['lat'], where['lon']] if where else None
    print('BIRTH ' + json.dumps({'node': doc.get('node'), 'fw': citisense_release.VERSION,
                                 'role': citisense_release.ROLE, 'board': BOARD['name'],
                                 'config': doc, 'loc': loc}))
'''

# What the board does at power-up, minus the hardware: forget every module and the mounted
# application, run /main.py.
REBOOT = """
import sys, vfs
for _name in list(sys.modules):
    if _name.startswith('citisense'):
        del sys.modules[_name]
try:
    vfs.umount('/slot')
except OSError:
    pass
sys.path[:] = ['', '.frozen', '/lib']
exec(open('/main.py').read(), {'__name__': '__main__'})
"""


# The "romfs" application partition of a board built with ROMFS, in the VM's RAM: esp32's
# Partition (erase, then write whole 4 KiB sectors) and vfs.rom_ioctl mapping it, put in
# sys.modules ahead of the VM's own. (The virtual board has the real thing: test_flash.py.)
PARTITION_BYTES = 64 * 1024
ROMFS_PARTITION = f"""
import sys, vfs as _real_vfs
_flash = bytearray(b'\\xff' * {PARTITION_BYTES})
class Partition:
    TYPE_APP = 0
    TYPE_DATA = 1
    @staticmethod
    def find(type=0, subtype=0xff, label=None, block_size=4096):
        return [Partition()] if type == 1 and label in (None, 'romfs') else []
    def info(self):
        return (1, 0x80, 0x200000, len(_flash), 'romfs', False)
    def readblocks(self, n, buf, offset=0):
        at = n * 4096 + offset
        buf[:] = _flash[at:at + len(buf)]
    def writeblocks(self, n, buf, offset=None):
        at = n * 4096 + (offset or 0)
        if offset is None:
            _flash[at:at + len(buf)] = b'\\xff' * len(buf)
        for i in range(len(buf)):
            _flash[at + i] &= buf[i]
class _Esp32:
    Partition = Partition
class _Vfs:
    VfsRom = _real_vfs.VfsRom
    mount = _real_vfs.mount
    umount = _real_vfs.umount
    @staticmethod
    def rom_ioctl(op, *args):
        return 1 if op == 1 else _flash
sys.modules['esp32'] = _Esp32
sys.modules['vfs'] = _Vfs
"""


class VMLink:
    """A BoardLink to the MicroPython VM; reset() runs the board's /main.py like a boot."""

    name = "micropython-vm"

    def __init__(self, vm: MicroPythonVM, *, romfs: bool = True) -> None:
        self.vm = vm
        self.boot_output = ""
        # The virtual and real ESP32 ports name the module in os.uname().machine.
        vm.run(f"import os\nclass _U:\n machine = {MACHINE!r}\nos.uname = lambda: _U()")
        if romfs:
            vm.run(ROMFS_PARTITION)

    def exec(self, code: str) -> str:
        try:
            return self.vm.run(code)
        except MicroPythonError as err:
            raise BoardCodeError(err.traceback) from None

    def reset(self) -> None:
        self.boot_output = self.vm.run(REBOOT)

    def close(self) -> None:
        pass

    def births(self) -> list[dict[str, object]]:
        """What the applications started at the last reset announced."""
        return [json.loads(line[len("BIRTH "):]) for line in self.boot_output.splitlines()
                if line.startswith("BIRTH ")]

    def boot(self) -> list[str]:
        """Power-cycle; the firmware versions that started (one for a healthy board)."""
        self.reset()
        return [str(birth["fw"]) for birth in self.births()]


@pytest.fixture
def vm_link(mp: MicroPythonVM) -> VMLink:
    return VMLink(mp)


@pytest.fixture
def vm_link_without_romfs(mp: MicroPythonVM) -> VMLink:
    """A board with MicroPython as micropython.org ships it for an ESP32: no ROMFS."""
    return VMLink(mp, romfs=False)


@pytest.fixture(scope="session")
def fake_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Source of the stand-in application package citisense_fakeapp."""
    package = tmp_path_factory.mktemp("fakeapp") / "citisense_fakeapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(FAKE_APP_MAIN)
    return package


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory: pytest.TempPathFactory,
                fake_app: Path) -> Callable[..., Bundle]:
    """Build (once per arguments) a bundle of the stand-in application."""
    made: dict[tuple[str, str, str], Bundle] = {}

    def make(version: str = "1.0.0", role: str = "lighting",
             board: str = "esp32-devkitc") -> Bundle:
        key = (version, role, board)
        if key not in made:
            out = tmp_path_factory.mktemp("bundle") / f"{version}-{role}-{board}"
            made[key] = build.build(role, board, out, version=version,
                                    packages={"citisense_fakeapp": fake_app},
                                    entry="citisense_fakeapp.main")
        return made[key]

    return make


TEST_KEY_HEX = bytes(range(1, 33)).hex()  # test-only


def _node_config(node: int = 42, role: str = "lighting", board: str = "esp32-devkitc",
                 lat: float = 52.0907, lon: float = 5.1214) -> dict[str, object]:
    return {
        "node": node, "role": role, "board": board, "key": TEST_KEY_HEX,
        "uplink": {"transport": "mqtt", "host": "broker.example", "port": 1883,
                   "user": str(node), "password": "test-password"},
        "location": {"lat": round(lat * 1e7), "lon": round(lon * 1e7)}, "group": "",
        "zone": "",
    }


@pytest.fixture
def node_config() -> Callable[..., dict[str, object]]:
    """A provisioned node's config document (test key), with chosen fields."""
    return _node_config


@pytest.fixture
def config_bytes() -> bytes:
    """The config file of node 42 (lighting, esp32-devkitc)."""
    return json.dumps(_node_config()).encode()


@pytest.fixture
def connect(mp: MicroPythonVM) -> Callable[[], VMLink]:
    """A new link to the VM (after mp.reset(), as after a power-up)."""
    return lambda: VMLink(mp)
