"""citisense application loader (MicroPython): on the board as /lib/citisense_loader.mpy,
started by a two-line /main.py (compiled, it costs the board no compiler RAM at boot).

The application is a ROMFS image in the flash partition labelled "romfs", which the
board's MicroPython maps as ROMFS segment 0 (vfs.rom_ioctl(2, 0)): its bytecode runs in
place, only its data takes RAM. Two application slots: a in the first half of the
partition, b in the second. `citisense flash` first deletes the manifest of the slot that
is not running (/app/<slot>/manifest.json, on the board's filesystem), writes the image
into that slot, checks its SHA-256 on the board, writes the manifest (aside, then renamed),
then points /app/active at the slot (written aside and renamed). A slot is complete when
its manifest exists and the partition holds, where the manifest says, a ROMFS image of
the size and SHA-256 the manifest gives, so a power cut at any moment leaves at least one complete
slot, and this loader boots:
  1. the slot /app/active names, if complete;
  2. otherwise the complete slot with the highest flash sequence number;
and if that slot's application cannot even be imported, the other complete slot.
The slot it boots is mounted at /slot. It never writes to flash.
"""

import binascii
import gc
import hashlib
import json
import os
import sys

import vfs  # type: ignore[import-not-found]  # MicroPython's

APP = "/app"
SLOTS = ("a", "b")
POINTER = "/app/active"
MOUNT = "/slot"
ROMFS_MAGIC = b"\xd2\xcd\x31"  # a ROMFS image starts with it, then its length (varuint)


class Slot:
    """A complete application slot, as its manifest describes it."""

    def __init__(self, name: str, entry: str, about: tuple[str, str, str], seq: int,
                 offset: int, size: int) -> None:
        self.name = name
        self.entry = entry  # module to import; its main(), if any, is called
        self.version, self.role, self.board = about
        self.seq = seq  # flash sequence number: higher is newer
        self.offset = offset  # where the image starts in the partition
        self.size = size  # bytes of the image


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeError):  # missing, or garbage left by a power cut
        return None


def partition() -> memoryview | None:
    """The "romfs" partition, memory-mapped; None without ROMFS."""
    try:
        return memoryview(vfs.rom_ioctl(2, 0))
    except (AttributeError, OSError, TypeError):
        return None


def image_size(flash: memoryview, offset: int) -> int:
    """Bytes of the ROMFS image at `offset` by its own header, or -1 if there is none."""
    if offset < 0 or offset + 8 > len(flash) or bytes(flash[offset:offset + 3]) != ROMFS_MAGIC:
        return -1
    length = 0
    for i in range(offset + 3, offset + 8):  # varuint, most significant 7 bits first
        length = (length << 7) | (flash[i] & 0x7F)
        if not flash[i] & 0x80:
            return i + 1 - offset + length
    return -1


def complete(name: str, flash: memoryview | None) -> Slot | None:
    """The slot if its manifest is there and the image it names is whole, else None."""
    raw = _read(APP + "/" + name + "/manifest.json")
    if raw is None or flash is None:
        return None
    try:
        manifest = json.loads(raw)
        image = manifest["image"]
        offset = image["offset"]
        size = image["size"]
        entry = manifest["entry"]
        if not isinstance(entry, str) or image_size(flash, offset) != size:
            return None
        # Hashed in place (no copy): what a power cut or a worn sector spoiled does not run.
        digest = hashlib.sha256(flash[offset:offset + size]).digest()
        if binascii.hexlify(digest).decode() != image["sha256"]:
            return None
        about = (str(manifest.get("version")), str(manifest.get("role")),
                 str(manifest.get("board")))
        return Slot(name, entry, about, int(manifest.get("seq", 0)), offset, size)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def choose(flash: memoryview | None = None) -> list[Slot]:
    """The complete slots, best first: the one /app/active names, then the newest."""
    if flash is None:
        flash = partition()
    pointer = (_read(POINTER) or "").strip()
    ready = []
    for name in SLOTS:
        slot = complete(name, flash)
        if slot is not None:
            ready.append(slot)
    ready.sort(key=lambda slot: (slot.name != pointer, -slot.seq))
    return ready


def _unmount() -> None:
    """Drop a failed slot: its modules in sys.modules, its path, its mount."""
    tops = [name.split(".")[0] for name in os.listdir(MOUNT)]
    for name in list(sys.modules):
        if name.split(".")[0] in tops:
            del sys.modules[name]
    sys.path.remove(MOUNT)
    vfs.umount(MOUNT)


def run() -> None:
    flash = partition()
    if flash is None:
        print("citisense: this MicroPython has no ROMFS partition: write the citisense "
              "MicroPython image (citisense flash --micropython-image)")
        return
    for slot in choose(flash):
        gc.collect()  # the manifests just parsed: give their RAM back to the application
        vfs.mount(vfs.VfsRom(flash[slot.offset:slot.offset + slot.size]), MOUNT)
        sys.path.insert(0, MOUNT)
        try:
            __import__(slot.entry)
        except Exception as error:  # any import failure means a broken slot
            print("citisense: slot", slot.name, "cannot start:", repr(error))
            _unmount()
            continue
        print("citisense:", slot.version, "from slot", slot.name)
        start = getattr(sys.modules[slot.entry], "main", None)
        if start is not None:
            start()
        return
    print("citisense: no complete application on this board: install one with citisense flash")


if __name__ == "__main__":
    run()
