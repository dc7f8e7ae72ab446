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
import tempfile
import warnings
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

    def __init__(self, heap_bytes: int = ESP32_HEAP_BYTES, *,
                 js_gc_ms: int | None = None) -> None:
        """js_gc_ms: run Node's garbage collector this often during a run. Every await on
        JavaScript (asyncio.sleep_ms) leaves ~30 bytes of Python heap referenced by a JS
        proxy until Node collects its own garbage, an irregular delay: a long heap
        measurement collects JS garbage often so that the Python heap holds only live data.
        """
        node = shutil.which("node")
        if node is None:
            raise MicroPythonUnavailable("node is not installed: apt-get install nodejs")
        self.heap_bytes = heap_bytes
        self._command = [node, str(HOST_SCRIPT), str(find_micropython_mjs())]
        if js_gc_ms is not None:
            self._command[1:1] = ["--expose-gc"]
            self._command.append(str(js_gc_ms))
        self._proc = self._start_host()
        self.reset()

    def _start_host(self) -> subprocess.Popen[str]:
        # The host's own errors go to a file, so a host that dies between two runs can say why.
        self._host_log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the host
        return subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._host_log,
            text=True,
            bufsize=1,
        )

    def _host_errors(self) -> str:
        self._host_log.seek(0)
        return self._host_log.read()[-2000:].decode(errors="replace").strip()

    def _request(self, **req: object) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps(req) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise MicroPythonUnavailable(
                f"MicroPython host exited ({self._proc.wait()}): {self._host_errors()}"
            ) from None
        line = self._proc.stdout.readline()
        if not line:
            raise MicroPythonUnavailable(
                f"MicroPython host exited ({self._proc.wait()}): {self._host_errors()}"
            )
        reply = json.loads(line)
        if not reply["ok"]:
            raise MicroPythonError(reply["error"], reply["out"])
        return str(reply["out"])

    def reset(self) -> None:
        """Start a fresh VM: empty heap and filesystem, as after a hard reset.

        A host process that died after the previous run (work the last code left behind
        on Node's event loop can kill it) is replaced, with a warning that says why: every
        run starts from a fresh VM anyway, and a death during a run still fails that run.
        """
        if self._proc.poll() is not None:
            warnings.warn(
                f"MicroPython host had exited ({self._proc.returncode}): "
                f"{self._host_errors() or 'no message'}; starting a new one",
                RuntimeWarning,
                stacklevel=2,
            )
            for stream in (self._proc.stdin, self._proc.stdout, self._host_log):
                if stream is not None:
                    with contextlib.suppress(BrokenPipeError):  # unsent bytes of a dead host
                        stream.close()
            self._proc = self._start_host()
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
        self._host_log.close()

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
