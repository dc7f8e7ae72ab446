"""What is on a board: MicroPython, flash and RAM, installed applications, config.

One query runs on the board and prints JSON. It judges the application slots (in the
"romfs" partition, see app_loader.py) with the board's own loader
(/lib/citisense_loader.mpy, imported, not run), so the tools see what the board boots.
The query lives in one function and leaves nothing behind, and the loader is compiled:
an ESP32 without PSRAM has little heap to spare for compiling. Secrets in the config (the
MAC key, passwords) are replaced on the board itself: they never cross the cable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from citisense_tools.board_link import BoardLink, exec_json

CONFIG_PATH = "/config.json"
ROOT_PATHS = ("/lib/citisense_loader.mpy", "/main.py")
HIDDEN = "(hidden)"
SECRET_NAMES = ("key", "password")

_QUERY = """
def _citisense_state():
    import sys, os, gc, json, hashlib, binascii
    gc.collect()

    def hexed(data):
        return binascii.hexlify(data).decode()

    def sha(path):
        h = hashlib.sha256()
        try:
            with open(path, 'rb') as f:
                while True:
                    chunk = f.read(512)
                    if not chunk:
                        return hexed(h.digest())
                    h.update(chunk)
        except OSError:
            return None

    def hide(doc, depth):
        if isinstance(doc, dict) and depth < 4:
            for name in doc:
                if name in %(secrets)r:
                    doc[name] = %(hidden)r
                else:
                    hide(doc[name], depth + 1)

    def config():
        try:
            with open(%(config)r, 'rb') as f:
                raw = f.read()
        except OSError:
            return None
        info = {'sha8': hexed(hashlib.sha256(raw).digest()[:8]), 'doc': None}
        try:
            doc = json.loads(raw)
        except ValueError:
            return info
        hide(doc, 0)
        info['doc'] = doc
        return info

    sys.modules.pop('citisense_loader', None)
    try:
        import citisense_loader as loader
    except Exception:
        loader = None

    order = loader.choose() if loader else []  # the complete slots, the one to boot first

    def slot(name):
        try:
            os.stat('/app/' + name)
        except OSError:
            return {'present': False, 'complete': False}
        for found in order:
            if found.name == name:
                return {'present': True, 'complete': True, 'version': found.version,
                        'seq': found.seq, 'role': found.role, 'board': found.board,
                        'bytes': found.size}
        return {'present': True, 'complete': False}

    def romfs():
        # The application partition: there, and mapped by a MicroPython built with ROMFS.
        try:
            import esp32, vfs
            found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label='romfs')
            mapped = vfs.rom_ioctl(1) > 0
        except (ImportError, AttributeError, OSError):
            return None
        return found[0].info()[3] if found and mapped else None

    def reset_cause():
        try:
            import machine
        except ImportError:
            return None
        cause = machine.reset_cause()
        for name in ('PWRON_RESET', 'HARD_RESET', 'WDT_RESET', 'DEEPSLEEP_RESET',
                     'SOFT_RESET', 'BROWNOUT_RESET'):
            if getattr(machine, name, None) == cause:
                return name
        return str(cause)

    def machine_name():
        try:
            return os.uname().machine
        except AttributeError:
            return getattr(sys.implementation, '_machine', '')

    def uid():
        try:
            import machine
            return hexed(machine.unique_id())
        except (ImportError, AttributeError):
            return None

    fs = os.statvfs('/')
    pointer = loader._read(loader.POINTER) if loader else None
    state = {
        'micropython': list(sys.implementation.version[:3]),
        'mpy': getattr(sys.implementation, '_mpy', 0),
        'machine': machine_name(),
        'platform': sys.platform,
        'uid': uid(),
        'fs_block': fs[0], 'fs_free': fs[1] * fs[4], 'fs_total': fs[1] * fs[2],
        'romfs_bytes': romfs(),
        'reset_cause': reset_cause(),
        'loader': loader is not None,
        'pointer': (pointer or '').strip() or None,
        'slots': {name: slot(name) for name in ('a', 'b')},
        'boots': order[0].name if order else None,
        'root_sha256': {path: sha(path) for path in %(root)r},
        'config': config(),
    }
    sys.modules.pop('citisense_loader', None)
    gc.collect()
    state['ram_free'] = gc.mem_free()
    state['ram_used'] = gc.mem_alloc()
    print(json.dumps(state))

_citisense_state()
del _citisense_state
"""


@dataclass(frozen=True)
class SlotState:
    name: str
    present: bool
    complete: bool
    version: str | None = None
    seq: int = 0
    role: str | None = None
    board: str | None = None
    bytes: int = 0


@dataclass(frozen=True)
class BoardState:
    micropython: tuple[int, ...]
    mpy: int  # sys.implementation._mpy: version | sub-version << 8 | arch << 10
    machine: str
    platform: str
    uid: str | None
    fs_block: int
    fs_free: int
    fs_total: int
    romfs_bytes: int | None  # size of the "romfs" application partition; None: no ROMFS
    ram_free: int
    ram_used: int
    reset_cause: str | None
    loader: bool  # the citisense loader is installed (without it, no slot counts as complete)
    pointer: str | None
    slots: dict[str, SlotState]
    boots: str | None  # the slot the loader would start now
    root_sha256: dict[str, str | None]  # the loader's files on the board's root
    config_sha8: str | None = None  # first 8 bytes of SHA-256 of /config.json, hex
    config: dict[str, Any] | None = field(default=None)  # secrets replaced by HIDDEN

    @property
    def micropython_text(self) -> str:
        return ".".join(map(str, self.micropython))

    @property
    def mpy_version(self) -> tuple[int, int]:
        return self.mpy & 0xFF, (self.mpy >> 8) & 3

    @property
    def has_config(self) -> bool:
        return self.config_sha8 is not None


def query() -> str:
    return _QUERY % {"config": CONFIG_PATH, "root": ROOT_PATHS, "secrets": SECRET_NAMES,
                     "hidden": HIDDEN}


def probe(link: BoardLink) -> BoardState:
    """Read the board's state (one round trip)."""
    raw = exec_json(link, query())
    config = raw.pop("config")
    slots = {name: SlotState(name=name, **info) for name, info in raw.pop("slots").items()}
    return BoardState(
        micropython=tuple(raw.pop("micropython")),
        slots=slots,
        config_sha8=None if config is None else config["sha8"],
        config=None if config is None else config["doc"],
        **raw,
    )
