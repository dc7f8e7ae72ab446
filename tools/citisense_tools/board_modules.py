"""Which packages run on the board: the single list shared by the build and the checks."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Packages deployed to an ESP32 (and to the virtual board), as import name -> source folder.
BOARD_PACKAGES: dict[str, Path] = {
    "citisense_protocols": REPO / "protocols" / "citisense_protocols",
    "citisense_firmware": REPO / "firmware" / "citisense_firmware",
}


def board_sources() -> list[Path]:
    """Every Python module that must compile with mpy-cross, in a stable order."""
    return sorted(p for folder in BOARD_PACKAGES.values() for p in folder.rglob("*.py"))
