"""The board's uplinks, used unmodified by firmware: a UART on a second serial
port (the gateway's RS-485 side) and TCP to loopback through Wi-Fi."""

from __future__ import annotations

import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
import serial

from citisense_boards.virtual_board import VirtualBoard

pytestmark = [pytest.mark.virtual_board, pytest.mark.micropython]

Mpremote = Callable[..., subprocess.CompletedProcess[str]]

JOIN_WIFI = (
    "import network, time\n"
    "wlan = network.WLAN(network.STA_IF)\nwlan.active(True)\nwlan.connect('citisense', 'key')\n"
    "while not wlan.isconnected():\n    time.sleep_ms(50)\n"
)


def test_the_uplink_uart_is_a_second_serial_port(board: VirtualBoard) -> None:
    code = (
        "import asyncio\nfrom machine import UART\n"
        "uart = UART(2, 115200)\n"  # TX 17 / RX 16: the RS-485 transceiver
        "async def main():\n"
        "    reader, writer = asyncio.StreamReader(uart), asyncio.StreamWriter(uart, {})\n"
        "    writer.write(b'hello gateway\\n')\n    await writer.drain()\n"
        "    print(await asyncio.wait_for(reader.readline(), 10))\n"
        "asyncio.run(main())"
    )
    with serial.Serial(board.uart_port, 115200, timeout=10) as gateway:
        node = subprocess.Popen(
            [sys.executable, "-m", "mpremote", "connect", board.repl_port, "exec", code],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert gateway.readline() == b"hello gateway\n"
        gateway.write(b"ack 1\n")
        out, err = node.communicate(timeout=30)
    assert out.strip() == "b'ack 1\\n'", err


class _Upper(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data.upper())


@pytest.fixture
def echo_server() -> Iterator[int]:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Upper) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield server.server_address[1]
        server.shutdown()


def test_firmware_reaches_a_loopback_server_through_asyncio_streams_and_sockets(
    mpremote: Mpremote, echo_server: int
) -> None:
    code = JOIN_WIFI + (
        "import asyncio, socket\n"
        "async def main():\n"
        f"    reader, writer = await asyncio.open_connection('127.0.0.1', {echo_server})\n"
        "    writer.write(b'ping')\n    await writer.drain()\n"
        "    print(await reader.readexactly(4))\n"
        "    writer.close()\n    await writer.wait_closed()\n"
        "asyncio.run(main())\n"
        f"s = socket.socket()\ns.connect(socket.getaddrinfo('localhost', {echo_server})[0][-1])\n"
        "s.settimeout(5)\ns.send(b'blocking too')\nprint(s.recv(64))\ns.close()"
    )
    assert mpremote("exec", code).stdout.split() == ["b'PING'", "b'BLOCKING", "TOO'"]


def test_only_loopback_is_reachable_and_only_with_wifi(
    mpremote: Mpremote, board: VirtualBoard
) -> None:
    code = JOIN_WIFI + (
        "import socket\n"
        "def attempt(host, port):\n"
        "    try:\n"
        "        s = socket.socket()\n        s.connect(socket.getaddrinfo(host, port)[0][-1])\n"
        "    except OSError as e:\n        return e.errno\n"
        "print(attempt('10.0.0.1', 1883), attempt('broker.example.com', 1883))"
    )
    assert mpremote("exec", code).stdout.split() == ["113", "-202"]  # EHOSTUNREACH, DNS failure
    board.street.wifi.up = False
    try:
        out = mpremote(
            "exec",
            "import network, socket\nw = network.WLAN(network.STA_IF)\nw.active(True)\n"
            "w.connect('citisense', 'key')\nimport time\ntime.sleep_ms(1500)\n"
            "s = socket.socket()\ntry:\n    s.connect(('127.0.0.1', 1883))\n"
            "except OSError as e:\n    print(w.isconnected(), w.status(), e.errno)",
        ).stdout.split()
        assert out == ["False", "201", "113"]  # STAT_NO_AP_FOUND, EHOSTUNREACH
    finally:
        board.street.wifi.up = True
