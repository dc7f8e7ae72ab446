# mypy: ignore-errors
# Boot of the virtual ESP32, run before boot.py like _boot.py on a real board:
# mount the flash (a host directory) at / and complete os and gc.
import binascii
import os
import sys

import _board_gc
import _vboard
import vfs

# The board's own modules (in /rom/lib) come before the port's frozen ones.
sys.path[:] = ["", "/rom/lib", ".frozen", "/lib"]
vfs.umount("/")
vfs.mount(vfs.VfsPosix("/flash"), "/")
os.chdir("/")


def _urandom(n):
    return binascii.unhexlify(_vboard.urandom(n))


def _uname():
    version = ".".join(str(v) for v in sys.implementation.version[:3])
    return os.uname_result(
        "esp32", "esp32", version, "v" + version, "Virtual ESP32 (citisense) with ESP32"
    )


_ilistdir = os.ilistdir


def _ilistdir_sized(path="."):
    # littlefs on an ESP32 lists sizes too (mpremote's ls shows them).
    for entry in _ilistdir(path):
        size = 0 if entry[1] == 0x4000 else os.stat(path.rstrip("/") + "/" + entry[0])[6]
        yield (entry[0], entry[1], 0, size)


os.uname_result = __import__("collections").namedtuple(
    "uname_result", ("sysname", "nodename", "release", "version", "machine")
)
os.urandom = _urandom
os.uname = _uname
os.ilistdir = _ilistdir_sized
sys.modules["gc"] = _board_gc


def _load_rom():
    """Import the ROM modules now: like an ESP32's C modules they are always
    there, and the heap they take comes from a reserve firmware never sees."""
    _board_gc.collect()
    before = _board_gc.mem_alloc()
    for name in os.listdir("/rom/lib"):
        if not name.startswith("_"):
            __import__(name[:-4] if name.endswith(".mpy") else name)
    for name in os.listdir("/rom/lib/asyncio"):
        if name != "__init__.mpy":
            __import__("asyncio." + name[:-4])
    _board_gc.collect()
    left = _vboard.rom_reserve() - (_board_gc.mem_alloc() - before) - 64
    ballast = bytearray(left) if left > 0 else None
    _board_gc.collect()
    _board_gc.set_rom(_board_gc.mem_alloc() - before, ballast)


_load_rom()
