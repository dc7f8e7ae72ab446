"""Run code on the real MicroPython VM: the official WebAssembly port under Node.

This is the lowest layer of the virtual board and the engine of the `micropython`
test tier: protocol and firmware modules are copied into the VM's filesystem and
executed there, so conformance is proven on MicroPython itself, not on CPython.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

HOST_SCRIPT = Path(__file__).with_name("mpvm_host.mjs")
NPM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
ESP32_HEAP_BYTES = 110 * 1024  # usable MicroPython heap on an ESP32 without PSRAM


class MicroPythonUnavailable(RuntimeError):
    """Node or the MicroPython WebAssembly package is missing."""


class MicroPythonError(RuntimeError):
    """Code raised an exception inside the MicroPython VM."""

    def __init__(self, traceback: str, output: str) -> None:
        super().__init__(traceback)
        self.traceback = traceback
        self.output = output


def find_micropython_mjs(start: Path | None = None) -> Path:
    """Locate micropython.mjs in the nearest node_modules above `start`."""
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / "node_modules" / NPM_PACKAGE / "micropython.mjs"
        if candidate.is_file():
            return candidate
    raise MicroPythonUnavailable(
        f"{NPM_PACKAGE} is not installed: run `npm ci` at the repository root (or `make test`)"
    )


class MicroPythonVM:
    """A MicroPython VM in a Node child process; `run` returns what the code printed."""

    def __init__(self, heap_bytes: int = ESP32_HEAP_BYTES) -> None:
        node = shutil.which("node")
        if node is None:
            raise MicroPythonUnavailable("node is not installed: apt-get install nodejs")
        self.heap_bytes = heap_bytes
        self._proc = subprocess.Popen(
            [node, str(HOST_SCRIPT), str(find_micropython_mjs())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.reset()

    def _request(self, **req: object) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise MicroPythonUnavailable(f"MicroPython host exited ({self._proc.poll()})")
        reply = json.loads(line)
        if not reply["ok"]:
            raise MicroPythonError(reply["error"], reply["out"])
        return str(reply["out"])

    def reset(self) -> None:
        """Start a fresh VM: empty heap and filesystem, as after a hard reset."""
        self._request(op="boot", heap=self.heap_bytes)

    def put(self, path: str, data: bytes) -> None:
        self._request(op="put", path=path, b64=base64.b64encode(data).decode())

    def install_package(self, package_dir: Path, target: str = "/lib") -> None:
        """Copy a Python package's modules (not its tests) into the VM."""
        for source in sorted(package_dir.rglob("*.py")):
            relative = source.relative_to(package_dir.parent)
            self.put(f"{target}/{relative.as_posix()}", source.read_bytes())

    def run(self, code: str) -> str:
        return self._request(op="run", code=code)

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> MicroPythonVM:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def run_on_cpython(code: str) -> str:
    """Run `code` under this CPython and return what it printed.

    The reference for conformance tests: the same script run by `MicroPythonVM.run`
    must print the same thing.
    """
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(code, {})
    return output.getvalue()
