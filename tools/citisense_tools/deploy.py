"""Install a bundle on a board through any BoardLink, so that a power cut at any moment
leaves the old or the new application bootable (see app_loader.py for the rules).

The application goes, as the bundle's ROMFS image, into a slot of the board's "romfs"
flash partition (slot a: first half, b: second half); manifests, the pointer, the loader
and the config live on the board's filesystem. Order of writes, each step safe to
interrupt:
  1. the slot the loader does not boot now loses its manifest (now incomplete); the image
     is written into its half of the partition, 4 KiB sector by sector, and its SHA-256
     checked on the board;
  2. the slot's manifest (with the next sequence number and the image's place) is
     written aside, checked and renamed into place: the slot is complete;
  3. the loader (/lib/citisense_loader.mpy, then the /main.py that starts it) and
     /config.json, if they change, are written aside, checked and renamed;
  4. /app/active is written aside and renamed: the new slot is the active one.
Until step 4 the loader keeps booting the old slot; if /app/active goes missing
(a rename on FAT is not atomic) it boots the newest complete slot, the new one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from citisense_tools import bundle as bundles
from citisense_tools.board_link import BoardCodeError, BoardLink, exec_json
from citisense_tools.board_state import BoardState, probe
from citisense_tools.errors import CommandError

APP = "/app"
POINTER = "/app/active"
CONFIG_PATH = "/config.json"
# Bytes per REPL round trip (base64 on the wire): small enough that the board can compile
# the line in a fragmented heap of an ESP32 without PSRAM.
CHUNK = 1024
RESERVE = 64 * 1024  # flash left free for the application's own data (store-and-forward)
SECTOR = 4096  # a flash erase sector

# Board-side `_rm(path)`: remove a file or a whole directory tree, if it exists.
BOARD_REMOVE = """
import os
def _rm(p):
    try:
        mode = os.stat(p)[0]
    except OSError:
        return
    if mode & 0x4000:
        for e in os.ilistdir(p):
            _rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
"""

_HELPERS = BOARD_REMOVE + """
import gc, hashlib, binascii, esp32
_part = esp32.Partition.find(esp32.Partition.TYPE_DATA, label='romfs')[0]
_sector = bytearray(4096)
def _b(at, s):
    d = binascii.a2b_base64(s)
    _sector[at:at + len(d)] = d
def _pw(n, used):
    for i in range(used, 4096):
        _sector[i] = 0xff
    _part.writeblocks(n, _sector)
def _psha(at, n):
    h = hashlib.sha256()
    b = bytearray(512)
    while n > 0:
        _part.readblocks(at // 4096, b, at % 4096)
        k = min(n, 512)
        h.update(memoryview(b)[:k])
        at += k
        n -= k
    return binascii.hexlify(h.digest()).decode()
def _mkdir(p):
    try:
        os.mkdir(p)
    except OSError:
        pass
def _sha(p):
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    with f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(m[:n])
    return binascii.hexlify(h.digest()).decode()
def _open(p):
    global _f
    gc.collect()
    _f = open(p, 'wb')
def _w(s):
    _f.write(binascii.a2b_base64(s))
def _close():
    try:
        _f.close()
    except Exception:
        pass
"""


class Progress(Protocol):
    def step(self, text: str) -> None: ...

    def transfer(self, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class Installed:
    slot: str
    seq: int
    state: BoardState  # read back after the switch


def target_slot(state: BoardState) -> str:
    """The slot to overwrite: never the one the loader boots now."""
    return "b" if state.boots == "a" else "a"


def space_needed(bundle: bundles.Bundle, block: int) -> int:
    """Filesystem space the new slot takes, in whole blocks: its folder and manifest."""
    block = max(block, 1)
    manifest = math.ceil(len(json.dumps(bundle.manifest)) / block)
    return (manifest + 1 + 4) * block  # + the slot's folder, pointer and loader


def check_space(state: BoardState, bundle: bundles.Bundle) -> None:
    if not state.romfs_bytes:
        raise CommandError(
            "this board's MicroPython has no \"romfs\" partition for the application: "
            "write the citisense MicroPython image first (citisense flash "
            "--micropython-image FILE; see the board definition)")
    slot_bytes = state.romfs_bytes // 2
    if bundle.image_entry["size"] > slot_bytes:
        raise CommandError(
            f"the application ({bundle.image_entry['size'] / 1024:.1f} KiB) does not fit an "
            f"application slot of this board ({slot_bytes / 1024:.1f} KiB): its MicroPython "
            "image has a smaller \"romfs\" partition than the board definition says; write "
            "the citisense MicroPython image for this board")
    need = space_needed(bundle, state.fs_block) + RESERVE
    if state.fs_free < need:
        raise CommandError(
            f"filesystem full: the application needs {need // 1024} KiB of the board's "
            f"filesystem (with {RESERVE // 1024} KiB kept for its data) but the board has "
            f"{state.fs_free // 1024} KiB free. Remove other files from the board "
            "(mpremote rm) or erase it when writing MicroPython (--erase)"
        )


def slot_offset(state: BoardState, slot: str) -> int:
    """Where `slot`'s image starts in the "romfs" partition."""
    return 0 if slot == "a" else (state.romfs_bytes or 0) // 2


class _Writer:
    def __init__(self, link: BoardLink, chunk: int) -> None:
        self.link = link
        self.chunk = chunk

    def run(self, code: str) -> None:
        try:
            self.link.exec(code)
        except BoardCodeError as err:
            if err.filesystem_full:
                raise CommandError(
                    f"the board's filesystem filled up while writing: {err}. The previous "
                    "application is still active; free space on the board and flash again"
                ) from None
            raise CommandError(f"the board refused a write: {err}") from None

    def write(self, path: str, data: bytes, on_chunk: Callable[[int], None]) -> None:
        self.run(f"_open({path!r})")
        for start in range(0, len(data), self.chunk):
            piece = data[start : start + self.chunk]
            self.run(f"_w({base64.b64encode(piece)!r})")
            on_chunk(len(piece))
        self.run("_close()")

    def write_image(self, offset: int, image: bytes, on_chunk: Callable[[int], None]) -> None:
        """Write `image` into the partition at `offset` (a sector boundary), sector by
        sector: each is filled on the board in chunks, then erased and written at once."""
        for start in range(0, len(image), SECTOR):
            sector = image[start : start + SECTOR]
            for at in range(0, len(sector), self.chunk):
                piece = sector[at : at + self.chunk]
                line = f"_b({at}, {base64.b64encode(piece)!r})"
                if at + self.chunk >= len(sector):
                    line += f"\n_pw({(offset + start) // SECTOR}, {len(sector)})"
                self.run(line)
                on_chunk(len(piece))

    def image_hash(self, offset: int, size: int) -> str:
        found: str = exec_json(self.link,
                               f"import json\nprint(json.dumps(_psha({offset}, {size})))")
        return found

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = exec_json(
            self.link, f"import json\nprint(json.dumps({{p: _sha(p) for p in {paths!r}}}))")
        return found

    def replace(self, path: str, data: bytes) -> None:
        """Write `path` aside, check it, rename it over the old one."""
        aside = path + ".tmp"
        self.write(aside, data, lambda n: None)
        if self.hashes([aside])[aside] != bundles.sha256(data):
            raise CommandError(f"{path} arrived damaged on the board (hash mismatch): check "
                               "the USB cable; the previous application is still active")
        self.run(f"os.rename({aside!r}, {path!r})")


def install(link: BoardLink, bundle: bundles.Bundle, state: BoardState, progress: Progress,
            *, config: bytes | None = None, chunk: int = CHUNK) -> Installed:
    """Put `bundle` in the inactive slot and make it the active one (module docstring)."""
    check_space(state, bundle)
    slot = target_slot(state)
    seq = max((s.seq for s in state.slots.values() if s.complete), default=0) + 1
    root = f"{APP}/{slot}"
    writer = _Writer(link, chunk)
    writer.run(_HELPERS)

    progress.step(f"clearing the inactive slot {slot}")
    writer.run(f"_rm({root + '/manifest.json'!r})\n_rm({root!r})\n_mkdir({APP!r})\n"
               f"_mkdir({root!r})")
    offset = slot_offset(state, slot)
    try:
        _fill_slot(writer, bundle, root, offset, seq, progress)
    except CommandError:
        with contextlib.suppress(BoardCodeError, CommandError):  # give the space back
            link.exec(f"_rm({root + '/manifest.json'!r})\n_rm({root!r})")
        raise

    changed = [item for item in bundle.root_files
               if state.root_sha256.get("/" + item["path"]) != item["sha256"]]
    if changed:
        progress.step("installing the application loader")
        writer.run("_mkdir('/lib')")
        for item in changed:
            writer.replace("/" + item["path"], bundle.root_file(item["path"]))
    if config is not None and state.config_sha8 != bundles.sha256(config)[:16]:
        progress.step("writing the node's config (/config.json)")
        writer.replace(CONFIG_PATH, config)
    progress.step(f"switching to slot {slot}")
    writer.replace(POINTER, slot.encode())

    after = probe(link)
    if after.boots != slot or after.slots[slot].version != bundle.version:
        raise CommandError(f"after the switch the board would start slot {after.boots}, not "
                           f"{slot}: the board's filesystem misbehaves; run citisense doctor")
    return Installed(slot, seq, after)


def _fill_slot(writer: _Writer, bundle: bundles.Bundle, root: str, offset: int, seq: int,
               progress: Progress) -> None:
    image = bundle.image()
    slot = root.rsplit("/", 1)[1]
    progress.step(f"writing the application ({len(image) / 1024:.1f} KiB, {len(bundle.files)} "
                  f"modules) to slot {slot}")
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress.transfer(done, len(image))

    writer.write_image(offset, image, advance)
    progress.step("checking the application on the board (SHA-256)")
    if writer.image_hash(offset, len(image)) != bundle.image_entry["sha256"]:
        raise CommandError("the application arrived damaged on the board (SHA-256 mismatch): "
                           "check the USB cable and flash again; the previous application is "
                           "still active")
    writer.replace(f"{root}/manifest.json", slot_manifest(bundle, seq, offset))


def slot_manifest(bundle: bundles.Bundle, seq: int, offset: int) -> bytes:
    """The manifest a slot keeps on the board: the bundle's, with the flash sequence number
    and the image's place in the partition, without the file lists (the image was checked;
    an ESP32 has little heap to parse them at every boot)."""
    manifest: dict[str, Any] = dict(bundle.manifest, seq=seq)
    manifest["image"] = dict(bundle.image_entry, offset=offset)
    del manifest["files"], manifest["root"]
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
