"""The A/B loader (/main.py) on the real MicroPython VM: whatever a power cut left in the
slots and the pointer, the board starts a complete application, never a half-written one.

The "romfs" partition is a bytearray here, handed to the loader in place of the mapped
flash (the virtual-board tests in test_flash.py use the board's real partition).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from citisense_boards.mpvm import MicroPythonVM
from citisense_boards.rom_image import pack_romfs
from citisense_tools.build import LOADER_SOURCE, MAIN_SOURCE

pytestmark = pytest.mark.micropython

APP_MAIN = "from citisense_demo import VERSION\n\ndef main():\n    print('RUNNING', VERSION)\n"
SLOT_BYTES = 16 * 1024
OFFSETS = {"a": 0, "b": SLOT_BYTES}


def _files(version: str) -> dict[str, bytes]:
    return {
        "citisense_demo/__init__.py": f"VERSION = {version!r}\n".encode(),
        "citisense_demo/main.py": APP_MAIN.encode(),
    }


def image_of(files: dict[str, bytes]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        for path, data in files.items():
            (Path(tmp) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / path).write_bytes(data)
        return pack_romfs(Path(tmp))


@pytest.fixture
def flash() -> bytearray:
    return bytearray(b"\xff" * (2 * SLOT_BYTES))  # erased


def install_slot(mp: MicroPythonVM, flash: bytearray, slot: str, version: str, seq: int, *,
                 manifest: bool = True, cut_at: float | None = None,
                 files: dict[str, bytes] | None = None) -> None:
    """Put an application in `slot`, as a flash would, or as a power cut left it (the image
    written up to the fraction `cut_at`)."""
    image = image_of(files or _files(version))
    written = image if cut_at is None else image[: int(len(image) * cut_at)]
    start = OFFSETS[slot]
    flash[start : start + SLOT_BYTES] = b"\xff" * SLOT_BYTES
    flash[start : start + len(written)] = written
    mp.put("/flash.bin", bytes(flash))
    mp.run(f"import os\ntry:\n    os.mkdir('/app')\nexcept OSError:\n    pass\n"
           f"try:\n    os.mkdir('/app/{slot}')\nexcept OSError:\n    pass")
    if manifest:
        doc = {"version": version, "seq": seq, "entry": "citisense_demo.main",
               "image": {"offset": start, "size": len(image),
                         "sha256": hashlib.sha256(image).hexdigest()}}
        mp.put(f"/app/{slot}/manifest.json", json.dumps(doc).encode())


def boot(mp: MicroPythonVM) -> str:
    """Run /main.py as the board does at power-up (fresh modules and path)."""
    mp.put("/lib/citisense_loader.py", LOADER_SOURCE.read_bytes())
    mp.put("/main.py", MAIN_SOURCE)
    return mp.run(
        "import sys, vfs\nfor _n in list(sys.modules):\n"
        "    if _n.startswith('citisense'):\n        del sys.modules[_n]\n"
        "try:\n    vfs.umount('/slot')\nexcept OSError:\n    pass\n"
        "sys.path[:] = ['', '.frozen', '/lib']\n"
        "import citisense_loader\n"
        "_flash = open('/flash.bin', 'rb').read()\n"
        "citisense_loader.partition = lambda: memoryview(_flash)\n"
        "exec(open('/main.py').read(), {'__name__': '__main__'})"
    )


def running(output: str) -> list[str]:
    return [line.split()[1] for line in output.splitlines() if line.startswith("RUNNING")]


def test_boots_the_active_slot(mp: MicroPythonVM, flash: bytearray) -> None:
    install_slot(mp, flash, "a", "1.0", 1)
    install_slot(mp, flash, "b", "2.0", 2)
    mp.put("/app/active", b"a")  # e.g. rolled back on purpose: the pointer wins
    assert running(boot(mp)) == ["1.0"]
    mp.put("/app/active", b"b\n")
    assert running(boot(mp)) == ["2.0"]


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        ("image half-written, no manifest yet", "1.0"),
        ("image damaged under a manifest", "1.0"),
        ("new slot complete, pointer not switched", "1.0"),
        ("pointer written aside, not renamed", "1.0"),
        ("pointer missing (FAT rename window)", "2.0"),
        ("pointer garbage", "2.0"),
        ("pointer switched", "2.0"),
    ],
)
def test_a_power_cut_leaves_a_complete_application(mp: MicroPythonVM, flash: bytearray,
                                                    cut: str, expected: str) -> None:
    install_slot(mp, flash, "a", "1.0", 1)
    mp.put("/app/active", b"a")
    if cut == "image half-written, no manifest yet":
        install_slot(mp, flash, "b", "2.0", 2, manifest=False, cut_at=0.5)
        mp.put("/app/active", b"b")  # even a pointer to it does not make it bootable
    elif cut == "image damaged under a manifest":
        install_slot(mp, flash, "b", "2.0", 2, cut_at=0.9)  # e.g. a worn sector
        mp.put("/app/active", b"b")
    else:
        install_slot(mp, flash, "b", "2.0", 2)
    if cut == "pointer written aside, not renamed":
        mp.put("/app/active.tmp", b"b")
    elif cut == "pointer missing (FAT rename window)":
        mp.run("import os\nos.remove('/app/active')")
    elif cut == "pointer garbage":
        mp.put("/app/active", b"\xff\x00")
    elif cut == "pointer switched":
        mp.put("/app/active", b"b")
    assert running(boot(mp)) == [expected]


def test_falls_back_when_the_active_slot_cannot_even_import(mp: MicroPythonVM,
                                                            flash: bytearray) -> None:
    install_slot(mp, flash, "a", "1.0", 1)
    broken = _files("2.0")
    broken["citisense_demo/main.py"] = b"def main(:\n"  # a complete image of a bad module
    install_slot(mp, flash, "b", "2.0", 2, files=broken)
    mp.put("/app/active", b"b")
    output = boot(mp)
    assert "slot b cannot start" in output
    assert running(output) == ["1.0"]  # with slot a's own modules, not b's leftovers


def test_a_board_without_a_complete_application_says_so(mp: MicroPythonVM,
                                                         flash: bytearray) -> None:
    install_slot(mp, flash, "a", "1.0", 1, manifest=False)
    output = boot(mp)
    assert running(output) == []
    assert "no complete application" in output


def test_a_damaged_manifest_makes_a_slot_incomplete(mp: MicroPythonVM,
                                                     flash: bytearray) -> None:
    install_slot(mp, flash, "a", "1.0", 1)
    install_slot(mp, flash, "b", "2.0", 2)
    mp.put("/app/active", b"b")
    for damage in (b'{"version": "2.0", "seq": 2, "entry": "citisense_demo.main", "im',
                   b'{"version": "2.0", "seq": 2, "image": {}}', b"[1, 2]", b"\xff\xfe",
                   b'{"version": "2.0", "seq": 2, "entry": "citisense_demo.main", '
                   b'"image": {"offset": 16384, "size": 99999, "sha256": ""}}'):
        mp.put("/app/b/manifest.json", damage)
        assert running(boot(mp)) == ["1.0"]


def test_a_board_without_romfs_says_what_to_write(mp: MicroPythonVM, flash: bytearray) -> None:
    install_slot(mp, flash, "a", "1.0", 1)
    mp.put("/lib/citisense_loader.py", LOADER_SOURCE.read_bytes())
    output = mp.run("import sys\nsys.modules.pop('citisense_loader', None)\n"
                    "import citisense_loader\ncitisense_loader.partition = lambda: None\n"
                    "citisense_loader.run()")
    assert running(output) == []
    assert "no ROMFS partition" in output
