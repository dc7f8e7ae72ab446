"""A firmware bundle: what `citisense build` makes and `citisense flash` deploys.

    <bundle>/manifest.json   what the bundle is, every file with its size and SHA-256
    <bundle>/root/...        files for the board's root: the A/B application loader
                             (lib/citisense_loader.mpy, from app_loader.py) and the
                             /main.py that starts it
    <bundle>/app/...         the application's files (.mpy)
    <bundle>/app.romfs       the same files as one ROMFS image: what `citisense flash`
                             writes to an application slot of the board's "romfs"
                             partition, where the code runs in place (no RAM for bytecode)

manifest.json:
    format       1
    version      firmware version, as the birth message reports it (1..32 bytes)
    role         lighting | parking | air
    board        board definition name
    micropython  MicroPython version the bundle is built for, "major.minor"
    mpy          [version, sub-version] of the .mpy files (sys.implementation._mpy on the board)
    mpy_cross    version of the mpy-cross that compiled them
    entry        module the loader imports; its main() starts the application
    files        [{"path", "size", "sha256"}] under app/, sorted by path
    image        {"size", "sha256"} of app.romfs
    root         [{"path", "size", "sha256"}] under root/, in the order they are installed
On the board, /app/<slot>/manifest.json holds a copy of the manifest with "seq" (flash
sequence) and the image's place in the partition added, without the file list
(deploy.slot_manifest).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citisense_tools.errors import CommandError

FORMAT = 2  # 2: the application as a ROMFS image
MANIFEST = "manifest.json"
APP_DIR = "app"
ROOT_DIR = "root"
IMAGE = "app.romfs"
LOADER = "lib/citisense_loader.mpy"
MAIN = "main.py"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entry(path: str, data: bytes) -> dict[str, Any]:
    return {"path": path, "size": len(data), "sha256": sha256(data)}


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def role(self) -> str:
        return str(self.manifest["role"])

    @property
    def board(self) -> str:
        return str(self.manifest["board"])

    @property
    def files(self) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = self.manifest["files"]
        return files

    @property
    def root_files(self) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = self.manifest["root"]
        return files

    @property
    def image_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.manifest["image"]
        return entry

    def image(self) -> bytes:
        return (self.root / IMAGE).read_bytes()

    def app_file(self, path: str) -> bytes:
        return (self.root / APP_DIR / path).read_bytes()

    def root_file(self, path: str) -> bytes:
        return (self.root / ROOT_DIR / path).read_bytes()


def read_bundle(root: Path) -> Bundle:
    """The bundle at `root`, after checking every file against the manifest."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"{root} is not a firmware bundle (no {MANIFEST}): "
                           "make one with citisense build") from None
    except (OSError, ValueError) as err:
        raise CommandError(f"{root / MANIFEST} cannot be read: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CommandError(f"{root / MANIFEST}: not a bundle manifest of format {FORMAT}")
    bundle = Bundle(root, manifest)
    try:
        checks = [(f"{APP_DIR}/{item['path']}", item) for item in bundle.files]
        checks += [(f"{ROOT_DIR}/{item['path']}", item) for item in bundle.root_files]
        checks.append((IMAGE, bundle.image_entry))
        for relative, item in checks:
            data = (root / relative).read_bytes()
            if len(data) != item["size"] or sha256(data) != item["sha256"]:
                raise CommandError(f"bundle file {relative} does not match the manifest: "
                                   "the bundle is damaged; build it again")
    except (KeyError, TypeError) as err:
        raise CommandError(f"{root / MANIFEST} is incomplete ({err})") from None
    except OSError as err:
        raise CommandError(f"bundle file missing or unreadable: {err}") from None
    return bundle
