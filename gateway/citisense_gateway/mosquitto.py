"""A private Mosquitto for benchmarks and tests: own port, config, passwords and ACL.

Never the system broker: each instance lives in its own directory with files generated
by acl.py from the accounts it is given, on a free port, and is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from citisense_gateway import acl

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateMosquitto:
    def __init__(self, directory: Path, accounts: list[acl.Account]) -> None:
        self.directory = directory
        self.accounts = accounts
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateMosquitto:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        (d / "passwd").write_text(acl.password_file(self.accounts))
        (d / "acl").write_text(acl.acl_file(self.accounts))
        self.port = free_port()
        conf = acl.mosquitto_conf(port=self.port, bind="127.0.0.1",
                                  password_path=str(d / "passwd"), acl_path=str(d / "acl"))
        # Run as whoever runs us: as root, mosquitto would switch to a user that cannot read
        # this private directory.
        (d / "mosquitto.conf").write_text(conf + f"persistence false\nuser {getpass.getuser()}\n")
        log = (d / "mosquitto.log").open("wb")
        self._process = subprocess.Popen([MOSQUITTO, "-c", str(d / "mosquitto.conf")],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(d / 'mosquitto.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                         0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def reload_accounts(self, accounts: list[acl.Account]) -> None:
        """Rewrite passwd and ACL and make the broker reread them (SIGHUP)."""
        self.accounts = accounts
        (self.directory / "passwd").write_text(acl.password_file(accounts))
        (self.directory / "acl").write_text(acl.acl_file(accounts))
        if self._process is not None:
            self._process.send_signal(1)
            time.sleep(0.3)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
