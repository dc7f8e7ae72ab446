"""The real mpremote against a virtual board, as a technician uses it on a USB board."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from citisense_boards.virtual_board import VirtualBoard

Mpremote = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = [pytest.mark.virtual_board, pytest.mark.micropython]


def test_exec_and_eval(mpremote: Mpremote) -> None:
    assert mpremote("exec", "print('hello from', 6 * 7)").stdout.strip() == "hello from 42"
    assert mpremote("eval", "[n * n for n in range(4)]").stdout.strip() == "[0, 1, 4, 9]"


def test_a_python_error_comes_back_as_a_traceback(mpremote: Mpremote) -> None:
    done = mpremote("exec", "1 / 0", check=False)
    assert done.returncode == 1
    assert "ZeroDivisionError" in done.stdout + done.stderr


def test_copies_a_50k_file_byte_exact_both_ways(
    mpremote: Mpremote, board: VirtualBoard, tmp_path: Path
) -> None:
    data = os.urandom(50 * 1024)
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    mpremote("fs", "cp", str(local), ":blob.bin")
    on_board = mpremote(
        "exec",
        "import hashlib, binascii\n"
        "h = hashlib.sha256()\n"
        "with open('blob.bin', 'rb') as f:\n"
        "    while chunk := f.read(1024):\n"
        "        h.update(chunk)\n"
        "print(binascii.hexlify(h.digest()).decode())",
    ).stdout.strip()
    assert on_board == hashlib.sha256(data).hexdigest()
    assert (board.flash_dir / "blob.bin").read_bytes() == data  # the flash is a host directory
    back = tmp_path / "back.bin"
    mpremote("fs", "cp", ":blob.bin", str(back))
    assert back.read_bytes() == data
    mpremote("fs", "rm", ":blob.bin")


def test_ls_mkdir_cat_rm_and_errors_as_on_a_board(mpremote: Mpremote, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("street 12\n")
    mpremote("fs", "mkdir", ":data")
    mpremote("fs", "cp", str(note), ":data/note.txt")
    listing = mpremote("fs", "ls", ":data").stdout
    assert "10 note.txt" in listing
    assert mpremote("fs", "cat", ":data/note.txt").stdout.endswith("street 12\n")
    # ENOENT and EEXIST must be the board's numbers for mpremote to name them.
    assert "No such file" in mpremote("fs", "rm", ":data/missing.txt", check=False).stderr
    assert "File exists" in mpremote("fs", "mkdir", ":data", check=False).stderr
    mpremote("fs", "rm", ":data/note.txt")
    mpremote("fs", "rmdir", ":data")
    assert "data" not in mpremote("fs", "ls").stdout


def test_soft_reset_restarts_the_vm_and_keeps_the_files(mpremote: Mpremote) -> None:
    out = mpremote(
        "resume",
        "exec", "counter = 41\nopen('kept.txt', 'w').write('still here')",
        "soft-reset",
        "exec", "print('counter' in globals(), open('kept.txt').read())",
    ).stdout
    assert out.strip() == "False still here"
    out = mpremote(
        "resume",
        "exec", "counter = 41\nimport machine\nmachine.soft_reset()",
        "exec", "print('counter' in globals(), open('kept.txt').read())",
    ).stdout
    assert out.strip() == "False still here"
    mpremote("fs", "rm", ":kept.txt")


def test_run_executes_a_local_script(mpremote: Mpremote, tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('running on', sys.implementation.name)\n")
    assert mpremote("run", str(script)).stdout.strip() == "running on micropython"


def test_boot_and_main_run_at_boot_like_on_a_board(
    mpremote_on: Mpremote, tmp_path: Path
) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "boot.py").write_text("open('log.txt', 'a').write('boot ')\n")
    (flash / "main.py").write_text("open('log.txt', 'a').write('main ')\n")
    log = flash / "log.txt"
    with VirtualBoard("booting", role="lighting", directory=tmp_path) as board:
        assert board.wait_for(lambda: log.exists() and log.read_text() == "boot main ", timeout=10)
        # mpremote soft-resets into the raw REPL: boot.py runs, main.py does not.
        mpremote_on(board.repl_port, "exec", "pass")
        assert log.read_text() == "boot main boot "
        # A hard reset boots to the friendly REPL: both run, and the files survive.
        mpremote_on(board.repl_port, "reset")
        board.wait_for_boot(2)
        assert board.wait_for(lambda: log.read_text().endswith("boot boot main "), timeout=10)
        out = mpremote_on(board.repl_port, "exec", "import machine; print(machine.reset_cause())")
        assert out.stdout.strip() == "5"  # SOFT_RESET: what machine.reset() reports on an ESP32
