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
    """A Mosquitto of our own. `port`: a fixed one (a broker that stops and comes back on
    the address its clients were given), else a new free port at each start. `persistence`:
    a clean stop keeps sessions and queues, as a production broker does. `extra_conf`:
    lines added to the generated config (e.g. `max_connections -1`)."""

    def __init__(self, directory: Path, accounts: list[acl.Account], *,
                 bind: str = "127.0.0.1", port: int | None = None, persistence: bool = False,
                 extra_conf: str = "", start_timeout: float = 10.0,
                 stop_timeout: float = 5.0) -> None:
        self.directory = directory
        self.accounts = list(accounts)
        self.bind = bind
        self.port = port or 0
        self._fixed_port = port is not None
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def local_host(self) -> str:
        """Where clients on this host reach it."""
        return "127.0.0.1" if self.bind in ("", "0.0.0.0") else self.bind

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        assert self._process is not None, "the broker is not running"
        return self._process.pid

    def start(self) -> PrivateMosquitto:
        d = self.directory
        self._write_accounts()
        if not self._fixed_port:
            self.port = free_port()
        persistence_path = None
        extra = self.extra_conf
        if self.persistence:
            (d / "db").mkdir(exist_ok=True)
            persistence_path = str(d / "db") + "/"
        else:
            extra += "persistence false\n"
        conf = acl.mosquitto_conf(port=self.port, bind=self.bind,
                                  password_path=str(d / "passwd"), acl_path=str(d / "acl"),
                                  persistence_path=persistence_path,
                                  # Run as whoever runs us: as root, mosquitto would switch to
                                  # a user that cannot read this private directory.
                                  user=getpass.getuser())
        (d / "mosquitto.conf").write_text(conf + extra)
        with (d / "mosquitto.log").open("ab") as log:  # kept across restarts
            self._process = subprocess.Popen([MOSQUITTO, "-c", str(d / "mosquitto.conf")],
                                             stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.local_host, self.port), 0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.bind}:{self.port}")

    def reload_accounts(self, accounts: list[acl.Account]) -> None:
        """Rewrite passwd and ACL and make a running broker reread them (SIGHUP)."""
        self.accounts = list(accounts)
        self._write_accounts()
        if self.running:
            assert self._process is not None
            self._process.send_signal(1)
            time.sleep(0.3)  # the reload is asynchronous; a connect right away could race it

    def add_account(self, account: acl.Account) -> None:
        """Let one more client in."""
        self.reload_accounts([*self.accounts, account])

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): with persistence, sessions and queues are saved."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_accounts(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "passwd").write_text(acl.password_file(self.accounts))
        (self.directory / "passwd").chmod(0o600)
        (self.directory / "acl").write_text(acl.acl_file(self.accounts))

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
