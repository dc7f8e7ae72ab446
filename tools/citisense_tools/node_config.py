"""The node's config file, in the firmware's own format (citisense_firmware.config,
config_load).

The firmware module that reads the file on the board also validates it here, so the
tools never write a config the node would refuse. It is loaded by name because it is
MicroPython code, typed for the board rather than for mypy.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from citisense_tools.errors import CommandError

_firmware_config: Any = importlib.import_module("citisense_firmware.config")
_firmware_config_load: Any = importlib.import_module("citisense_firmware.config_load")
ROLES: tuple[str, ...] = tuple(_firmware_config.ROLES)


def problem(doc: dict[str, Any]) -> str | None:
    """The first thing the firmware would refuse in `doc`, or None."""
    found: str | None = _firmware_config_load.validate(doc)
    return found


def birth_digest(doc: dict[str, Any]) -> str:
    """The birth `cfg` the node will report for `doc`, hex (the firmware's own digest;
    it leaves the secrets out, so a document with hidden secrets gives the same value)."""
    digest: bytes = _firmware_config.digest(doc)
    return digest.hex()


def degrees_e7(degrees: float) -> int:
    """A WGS 84 coordinate as the config and the birth carry it: 10^-7 degrees."""
    return round(degrees * 10_000_000)


def encode(doc: dict[str, Any]) -> bytes:
    """The file's bytes: readable JSON (a technician may look with mpremote cat)."""
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def parse_config(raw: bytes, name: str = "the config") -> dict[str, Any]:
    """The config document in `raw`; CommandError naming the problem (never a value)."""
    try:
        doc = json.loads(raw.decode())
    except (ValueError, UnicodeError):
        raise CommandError(f"{name} is not a JSON config file") from None
    if not isinstance(doc, dict):
        raise CommandError(f"{name} is not a config object")
    found = problem(doc)
    if found:
        raise CommandError(f"{name} is not a valid node config: {found}")
    return doc
