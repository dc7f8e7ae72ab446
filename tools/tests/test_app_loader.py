"""The A/B loader (/main.py) on the real MicroPython VM: whatever a power cut left in the
slots and the pointer, the board starts a complete application, never a half-written one.
"""

from __future__ import annotations

import json

import pytest

from citisense_boards.mpvm import MicroPythonVM
from citisense_tools.build import LOADER_SOURCE, MAIN_SOURCE

pytestmark = pytest.mark.micropython

APP_MAIN = "from citisense_demo import VERSION\n\ndef main():\n    print('RUNNING', VERSION)\n"


def _files(version: str) -> dict[str, bytes]:
    return {
        "citisense_demo/__init__.py": f"VERSION = {version!r}\n".encode(),
        "citisense_demo/main.py": APP_MAIN.encode(),
    }


def install_slot(mp: MicroPythonVM, slot: str, version: str, seq: int, *,
                 manifest: bool = True, truncate: str | None = None,
                 files: dict[str, bytes] | None = None) -> None:
    """Put an application in /app/<slot>, as a flash would, or as a power cut left it."""
    files = files or _files(version)
    listed = []
    for path, data in files.items():
        listed.append({"path": path, "size": len(data)})
        mp.put(f"/app/{slot}/{path}", data[: len(data) // 2] if path == truncate else data)
    if manifest:
        doc = {"version": version, "seq": seq, "entry": "citisense_demo.main", "files": listed}
        mp.put(f"/app/{slot}/manifest.json", json.dumps(doc).encode())


def boot(mp: MicroPythonVM) -> str:
    """Run /main.py as the board does at power-up (fresh modules and path)."""
    mp.put("/lib/citisense_loader.py", LOADER_SOURCE.read_bytes())
    mp.put("/main.py", MAIN_SOURCE)
    return mp.run(
        "import sys\nfor _n in list(sys.modules):\n"
        "    if _n.startswith('citisense'):\n        del sys.modules[_n]\n"
        "sys.path[:] = ['', '.frozen', '/lib']\n"
        "exec(open('/main.py').read(), {'__name__': '__main__'})"
    )


def running(output: str) -> list[str]:
    return [line.split()[1] for line in output.splitlines() if line.startswith("RUNNING")]


def test_boots_the_active_slot(mp: MicroPythonVM) -> None:
    install_slot(mp, "a", "1.0", 1)
    install_slot(mp, "b", "2.0", 2)
    mp.put("/app/active", b"a")  # e.g. rolled back on purpose: the pointer wins
    assert running(boot(mp)) == ["1.0"]
    mp.put("/app/active", b"b\n")
    assert running(boot(mp)) == ["2.0"]


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        ("files half-written, no manifest yet", "1.0"),
        ("a file truncated under a manifest", "1.0"),
        ("new slot complete, pointer not switched", "1.0"),
        ("pointer written aside, not renamed", "1.0"),
        ("pointer missing (FAT rename window)", "2.0"),
        ("pointer garbage", "2.0"),
        ("pointer switched", "2.0"),
    ],
)
def test_a_power_cut_leaves_a_complete_application(mp: MicroPythonVM, cut: str,
                                                    expected: str) -> None:
    install_slot(mp, "a", "1.0", 1)
    mp.put("/app/active", b"a")
    if cut == "files half-written, no manifest yet":
        install_slot(mp, "b", "2.0", 2, manifest=False, truncate="citisense_demo/main.py")
        mp.put("/app/active", b"b")  # even a pointer to it does not make it bootable
    elif cut == "a file truncated under a manifest":
        install_slot(mp, "b", "2.0", 2, truncate="citisense_demo/__init__.py")
        mp.put("/app/active", b"b")
    else:
        install_slot(mp, "b", "2.0", 2)
    if cut == "pointer written aside, not renamed":
        mp.put("/app/active.tmp", b"b")
    elif cut == "pointer missing (FAT rename window)":
        mp.run("import os\nos.remove('/app/active')")
    elif cut == "pointer garbage":
        mp.put("/app/active", b"\xff\x00")
    elif cut == "pointer switched":
        mp.put("/app/active", b"b")
    assert running(boot(mp)) == [expected]


def test_falls_back_when_the_active_slot_cannot_even_import(mp: MicroPythonVM) -> None:
    install_slot(mp, "a", "1.0", 1)
    broken = _files("2.0")
    broken["citisense_demo/main.py"] = b"def main(:\n"  # right size on disk, bad content
    install_slot(mp, "b", "2.0", 2, files=broken)
    mp.put("/app/active", b"b")
    output = boot(mp)
    assert "slot b cannot start" in output
    assert running(output) == ["1.0"]  # with slot a's own modules, not b's leftovers


def test_a_board_without_a_complete_application_says_so(mp: MicroPythonVM) -> None:
    install_slot(mp, "a", "1.0", 1, manifest=False)
    output = boot(mp)
    assert running(output) == []
    assert "no complete application" in output


def test_a_damaged_manifest_makes_a_slot_incomplete(mp: MicroPythonVM) -> None:
    install_slot(mp, "a", "1.0", 1)
    install_slot(mp, "b", "2.0", 2)
    mp.put("/app/active", b"b")
    for damage in (b'{"version": "2.0", "seq": 2, "entry": "citisense_demo.main", "fi',
                   b'{"version": "2.0", "seq": 2, "files": []}', b"[1, 2]", b"\xff\xfe"):
        mp.put("/app/b/manifest.json", damage)
        assert running(boot(mp)) == ["1.0"]
