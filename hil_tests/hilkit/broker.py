"""The station's Mosquitto: private files, one fixed port, and it can go down and come back.

Unlike citisense_gateway.mosquitto.PrivateMosquitto (a new free port at each start), a
link-loss scenario needs the broker back on the same address the node was provisioned
with, and with the gateway's persistent session intact: persistence is on, so a clean
stop keeps queued messages, as a production broker does.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import subprocess
import time
from pathlib import Path

from citisense_gateway import acl
from citisense_gateway.mosquitto import MOSQUITTO, free_port


class RigBroker:
    def __init__(self, directory: Path, accounts: list[acl.Account], *,
                 bind: str = "127.0.0.1", port: int | None = None) -> None:
        self.directory = directory
        self.accounts = list(accounts)
        self.bind = bind
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def local_host(self) -> str:
        """Where clients on this host reach it."""
        return "127.0.0.1" if self.bind in ("", "0.0.0.0") else self.bind

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RigBroker:
        d = self.directory
        (d / "db").mkdir(parents=True, exist_ok=True)
        self._write_accounts()
        conf = acl.mosquitto_conf(port=self.port, bind=self.bind,
                                  password_path=str(d / "passwd"), acl_path=str(d / "acl"),
                                  persistence_path=str(d / "db") + "/")
        # As root, mosquitto would switch to a user that cannot read this directory.
        (d / "mosquitto.conf").write_text(conf + f"user {getpass.getuser()}\n")
        with (d / "mosquitto.log").open("ab") as log:
            self._process = subprocess.Popen([MOSQUITTO, "-c", str(d / "mosquitto.conf")],
                                             stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.local_host, self.port), 0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.bind}:{self.port}")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): the broker saves its sessions and queues first."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def add_account(self, account: acl.Account) -> None:
        """Let one more client in; a running broker rereads its files (SIGHUP)."""
        self.accounts.append(account)
        self._write_accounts()
        if self.running:
            assert self._process is not None
            self._process.send_signal(1)
            time.sleep(0.2)  # the reload is asynchronous; a connect right away could race it

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_accounts(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "passwd").write_text(acl.password_file(self.accounts))
        (self.directory / "acl").write_text(acl.acl_file(self.accounts))
