# mypy: ignore-errors
# Runs boot.py and main.py like pyexec_file_if_exists on the board: in the
# REPL's globals, with Ctrl-C enabled, printing a traceback if they fail.
import io
import sys

import micropython

import __main__


def run(path):
    """False if the script failed (an ESP32 then skips main.py)."""
    try:
        with open(path) as f:
            source = f.read()
    except OSError:
        return True
    micropython.kbd_intr(3)
    try:
        exec(compile(source, path, "exec"), __main__.__dict__)
    except SystemExit:
        pass
    except BaseException as e:
        _print_traceback(e)
        return False
    finally:
        micropython.kbd_intr(-1)
    return True


def _print_traceback(e):
    buf = io.StringIO()
    sys.print_exception(e, buf)
    for line in buf.getvalue().split("\n"):
        if line and "_board_run.py" not in line:
            print(line)
