"""citisense application loader (MicroPython): on the board as /lib/citisense_loader.mpy,
started by a two-line /main.py (compiled, it costs the board no compiler RAM at boot).

Two application slots, /app/a and /app/b. `citisense flash` fills the slot that is not
running, checks every file's hash on the board, writes the slot's manifest.json last,
then points /app/active at it (written aside and renamed). A slot is complete when its
manifest exists and every file it lists has the listed size, so a power cut at any
moment leaves at least one complete slot, and this loader boots:
  1. the slot /app/active names, if complete;
  2. otherwise the complete slot with the highest flash sequence number;
and if that slot's application cannot even be imported, the other complete slot.
It never writes to flash.
"""

import gc
import json
import os
import sys

APP = "/app"
SLOTS = ("a", "b")
POINTER = "/app/active"


class Slot:
    """A complete application slot, as its manifest describes it."""

    def __init__(self, name: str, entry: str, about: tuple[str, str, str], seq: int,
                 tops: list[str], size: int) -> None:
        self.name = name
        self.path = APP + "/" + name
        self.entry = entry  # module to import; its main(), if any, is called
        self.version, self.role, self.board = about
        self.seq = seq  # flash sequence number: higher is newer
        self.tops = tops  # top-level modules and packages the slot provides
        self.size = size  # bytes of its files


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeError):  # missing, or garbage left by a power cut
        return None


def _size(path: str) -> int:
    try:
        return int(os.stat(path)[6])
    except OSError:
        return -1


def complete(name: str) -> Slot | None:
    """The slot if its manifest is there and every file it lists has its size, else None."""
    raw = _read(APP + "/" + name + "/manifest.json")
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
        tops = []
        size = 0
        for item in manifest["files"]:
            path = item["path"]
            if _size(APP + "/" + name + "/" + path) != item["size"]:
                return None
            size += item["size"]
            top = path.split("/")[0].split(".")[0]
            if top not in tops:
                tops.append(top)
        entry = manifest["entry"]
        if not isinstance(entry, str):
            return None
        about = (str(manifest.get("version")), str(manifest.get("role")),
                 str(manifest.get("board")))
        return Slot(name, entry, about, int(manifest.get("seq", 0)), tops, size)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def choose() -> list[Slot]:
    """The complete slots, best first: the one /app/active names, then the newest."""
    pointer = (_read(POINTER) or "").strip()
    ready = []
    for name in SLOTS:
        slot = complete(name)
        if slot is not None:
            ready.append(slot)
    ready.sort(key=lambda slot: (slot.name != pointer, -slot.seq))
    return ready


def _forget(slot: Slot) -> None:
    """Drop the modules a failed slot left in sys.modules, so the next slot loads its own."""
    for name in list(sys.modules):
        if name.split(".")[0] in slot.tops:
            del sys.modules[name]


def run() -> None:
    for slot in choose():
        gc.collect()  # the manifests just parsed: give their RAM back to the application
        sys.path.insert(0, slot.path)
        try:
            __import__(slot.entry)
        except Exception as error:  # any import failure means a broken slot
            print("citisense: slot", slot.name, "cannot start:", repr(error))
            sys.path.remove(slot.path)
            _forget(slot)
            continue
        print("citisense:", slot.version, "from slot", slot.name)
        start = getattr(sys.modules[slot.entry], "main", None)
        if start is not None:
            start()
        return
    print("citisense: no complete application on this board: install one with citisense flash")


if __name__ == "__main__":
    run()
