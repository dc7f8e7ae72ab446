"""`citisense gateway broker-config` output run by a Mosquitto started as a Debian system
service starts it: as root, switching to user mosquitto; and a gateway that follows a
rotation of its own password through the broker reload, without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
from gwkit import Broker, GatewayCli, eventually, gateway_overrides, opened, provision

from citisense_gateway import config
from citisense_gateway.ingest_workers import IngestWorkers
from citisense_gateway.mosquitto import MOSQUITTO, free_port
from citisense_gateway.mqtt_client import MqttConnection, MqttError, MqttSettings
from citisense_gateway.service import Gateway
from citisense_gateway.simnode import SimNode
from citisense_gateway.store.base import Store
from citisense_protocols import messages, topics

pytestmark = pytest.mark.broker

# What Mosquitto says about a configuration it does not like: errors, warnings (running as
# root, world-readable files), deprecation notes ("It is recommended to replace ...").
COMPLAINT = re.compile(r"error|warning|note:|deprecat|recommend|unable", re.IGNORECASE)



def system_user() -> pwd.struct_passwd:
    """The Debian broker account; these tests start Mosquitto as root, as its service does."""
    if os.geteuid() != 0:
        pytest.skip("needs root: Mosquitto is started as root and switches user")
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no system user mosquitto (the Debian package creates it)")




@pytest.fixture
def etc() -> Iterator[Path]:
    """A directory the broker's user may enter, as /etc/mosquitto (pytest's tmp_path lies
    under a directory only root may enter)."""
    base = Path(tempfile.mkdtemp(prefix="citisense-etc-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


class ServiceMosquitto:
    """`mosquitto -c <conf>` started as root, as the system service does; stopped by pid."""

    def __init__(self, conf: Path, port: int, log: Path) -> None:
        self.conf, self.port, self.log_path = conf, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServiceMosquitto:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), 0.2):
                return self
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise AssertionError(f"mosquitto did not listen: {self.log()}")

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def reload(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def uid(self) -> int:
        """The real user id the broker runs as now."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)[1])  # type: ignore[index]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def complaints(self) -> list[str]:
        return [line for line in self.log().splitlines() if COMPLAINT.search(line)]


async def connect(port: int, user: str, password: str, client_id: str) -> MqttConnection:
    return await MqttConnection.connect(MqttSettings(
        "127.0.0.1", port, client_id, username=user, password=password, clean_start=True),
        lambda c, p: None)


async def refused(port: int, user: str, password: str) -> bool:
    """Whether the broker refuses these credentials as such."""
    try:
        conn = await connect(port, user, password, f"probe-{user}")
    except MqttError as err:
        return err.credentials_refused
    await conn.disconnect()
    return False


def test_files_serve_a_mosquitto_started_as_root(cli: GatewayCli, etc: Path,
                                                 tmp_path: Path) -> None:
    mosquitto = system_user()
    code, _, _ = cli("node", "add", "7", "--role", "lighting", "--secrets-out",
                     str(tmp_path / "7.json"))
    assert code == 0
    node_password = json.loads((tmp_path / "7.json").read_text())["broker_password"]
    out = etc / "citisense"
    port = free_port()
    argv = ("broker-config", "--out", str(out), "--port", str(port), "--bind", "127.0.0.1")
    code, report, _ = cli(*argv)
    assert code == 0
    # Said and done: passwd and acl are the broker's, readable by nobody else.
    assert report[0]["broker_user"] == "mosquitto" and "warnings" not in report[0]
    group = grp.getgrgid(mosquitto.pw_gid).gr_name
    assert report[0]["broker_files"] == f"passwd, acl: mosquitto:{group} 0640"
    st = out.stat()  # made by broker-config: the broker may enter it, nobody else
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, mosquitto.pw_gid, 0o750)
    for name in ("passwd", "acl"):
        st = (out / name).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (
            mosquitto.pw_uid, mosquitto.pw_gid, 0o640)
    st = (out / "gateway.password").stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    conf = (out / "mosquitto.conf").read_text()
    assert "\nuser mosquitto\n" in conf and "message_size_limit" not in conf

    async def clients(broker: ServiceMosquitto) -> None:
        node = await connect(port, "7", node_password, "node-7")
        up = topics.topic(7, messages.TELEMETRY)
        assert await node.publish(up, b"x" * 600) in (0, 0x10)  # over the contract: passed on
        assert await refused(port, "7", "not-the-password")
        gateway_password = (out / "gateway.password").read_text().strip()
        await (await connect(port, "gateway", gateway_password, "gw")).disconnect()
        with pytest.raises(MqttError):  # above max_packet_size the node is disconnected
            await node.publish(up, b"x" * 70_000)
        assert node.closed.done()
        # A node provisioned later: files rewritten by root, reread by the broker (as
        # mosquitto) on SIGHUP.
        code, _, _ = await asyncio.to_thread(cli, "node", "add", "8", "--role", "air",
                                             "--secrets-out", str(tmp_path / "8.json"))
        assert code == 0
        code, report, _ = await asyncio.to_thread(cli, *argv)
        assert code == 0 and report[0]["gateway_password"] == "kept"
        assert await refused(port, "8", json.loads((tmp_path / "8.json").read_text())[
            "broker_password"])
        broker.reload()

        async def eight_admitted() -> bool:
            return not await refused(port, "8", json.loads(
                (tmp_path / "8.json").read_text())["broker_password"])

        await eventually(eight_admitted)

    with ServiceMosquitto(out / "mosquitto.conf", port, tmp_path / "mosquitto.log") as broker:
        assert broker.uid() == mosquitto.pw_uid  # it gave up root, and still reads passwd
        asyncio.run(clients(broker))
        assert broker.complaints() == [], broker.log()  # no deprecation note, no warning


def test_broker_config_says_when_the_broker_cannot_read_its_files(
        cli: GatewayCli, etc: Path) -> None:
    system_user()
    private = etc / "private"
    private.mkdir(mode=0o700)
    out = private / "broker"
    code, report, _ = cli("broker-config", "--out", str(out))
    assert code == 0
    assert report[0]["warnings"] == [
        f"user mosquitto may not enter {private}: Mosquitto cannot read passwd and acl there "
        f"(allow it, e.g. chmod o+x {private}, or choose another --out)"]
    code, report, _ = cli("broker-config", "--out", str(out), "--broker-user", "no-such-user")
    assert code == 0 and report[0]["broker_files"] == "passwd, acl: root:root 0600"
    (warning,) = report[0]["warnings"]  # type: ignore[misc]
    assert warning.startswith("no system user 'no-such-user' here")
    for name in ("passwd", "acl", "gateway.password"):
        assert (out / name).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("workers", [1, 2])
def test_gateway_rereads_its_rotated_password(cli: GatewayCli, etc: Path, tmp_path: Path,
                                              workers: int) -> None:
    """ingest.workers = 2: the worker processes reread the file as the gateway does."""
    system_user()
    store_url = f"sqlite:///{tmp_path / 'gw.db'}"
    out = etc / "citisense"
    port = free_port()
    argv = ("broker-config", "--out", str(out), "--port", str(port), "--bind", "127.0.0.1")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("citisense")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def rereads() -> set[str]:
        return {r.getMessage().split(":")[0] for r in records
                if "reread its password file, which holds a new one" in r.getMessage()}

    async def scenario() -> None:
        async with opened(store_url) as store:
            fleet = await provision(store, [(301, "lighting")])
        lamp, lamp_password = fleet.nodes[301], fleet.passwords[301]
        code, _, _ = await asyncio.to_thread(cli, *argv)
        assert code == 0
        old = (out / "gateway.password").read_text().strip()
        with ServiceMosquitto(out / "mosquitto.conf", port, tmp_path / "mosquitto.log") as broker:
            gateway = Gateway(config.load(environ={}, overrides=gateway_overrides(
                tmp_path, store_url, Broker("mosquitto", "127.0.0.1", port, ""),
                **{"mqtt.password_file": str(out / "gateway.password"),
                   "ingest.workers": workers})))
            await gateway.start()
            ups: list[tuple[int, bool]] = []  # what the workers report of their connection
            if isinstance(gateway.mqtt, IngestWorkers):
                set_up = gateway.mqtt._set_up

                def spy(index: int, up: bool) -> None:
                    ups.append((index, up))
                    set_up(index, up)

                gateway.mqtt._set_up = spy  # type: ignore[method-assign]
            try:
                await lamp.connect("127.0.0.1", port, lamp_password)
                async with opened(store_url) as store:
                    await round_trip(gateway, store, lamp, births=1)
                    assert rereads() == set()
                    code, report, _ = await asyncio.to_thread(
                        cli, *argv, "--new-gateway-password")
                    assert code == 0
                    assert str(report[0]["gateway_password"]).startswith("new: reload")
                    assert (out / "gateway.password").read_text().strip() != old
                    broker.reload()  # Mosquitto 2 drops clients whose password went away

                    async def old_one_refused() -> bool:
                        return await refused(port, "gateway", old)

                    await eventually(old_one_refused)

                    # Mosquitto 2.0.11 acknowledges, then drops, what is published for a
                    # session it disconnected on reload before that session reconnects:
                    # the lamp speaks once the gateway is back.
                    async def ingest_back() -> bool:
                        if workers == 1:
                            return "ingest" in rereads() and gateway.mqtt.connected.is_set()
                        # Each worker (logging to its own stderr) was dropped and is back.
                        return all([up for i, up in ups if i == w][-2:] == [False, True]
                                   for w in range(workers))

                    await eventually(ingest_back)
                    # The same gateway, not restarted: uplinks stored, commands delivered.
                    await round_trip(gateway, store, lamp, births=2)
                    # The links were refused, reread the file and went on with the new one.
                    assert rereads() == ({"ingest", "downlink"} if workers == 1
                                         else {"downlink"})
            finally:
                await lamp.close()
                await gateway.stop()

    try:
        asyncio.run(scenario())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def round_trip(gateway: Gateway, store: Store, lamp: SimNode, births: int) -> None:
    """An uplink stored and a command acked: ingest and downlink both work."""
    assert await lamp.send_birth() == 0  # queued for the gateway's session at least

    async def stored() -> bool:
        return len(await store.uplinks(lamp.node_id, kind=messages.BIRTH)) == births

    await eventually(stored)
    issued = await gateway.commands.issue([lamp.node_id], messages.OP_IDENTIFY, 5, user="carol")

    async def acked() -> bool:
        return (await store.get_command(issued[0].command_id)).state == "acked"

    await eventually(acked)

