"""`citisense demo` runs the real product end to end and stops cleanly: the simulated
fleet, and a virtual ESP32 board with the real firmware flashed as a technician does."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def log_in(dashboard: str, password: str) -> list[dict[str, object]]:
    """Log in as the demo's admin and list the nodes through the HTTP API."""
    request = urllib.request.Request(
        f"{dashboard}api/v1/auth/login", method="POST",
        data=json.dumps({"username": "admin", "password": password}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        token = json.load(reply)["token"]
    nodes = urllib.request.Request(
        f"{dashboard}api/v1/nodes", headers={"authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(nodes, timeout=10) as reply:
        listed: list[dict[str, object]] = json.load(reply)
    return listed


def test_demo_runs_a_fleet_and_a_board_through_the_gateway_and_stops_on_ctrl_c(
        tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "citisense_tools.cli", "demo", "--nodes", "4", "--boards", "1",
         "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    dashboard = password = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            break
        lines.append(line)
        shown = re.search(r"dashboard: (http://\S+/) +\(user admin, password (\S+)\)", line)
        if shown:
            dashboard, password = shown.groups()
        stored = re.search(
            r"nodes online (\d+)/4 \| boards online (\d+)/1[^|]*\| uplinks stored (\d+)", line)
        if stored and stored.group(1, 2) == ("4", "1") and int(stored.group(3)) > 0:
            nodes = {int(str(node["node_id"])): node for node in log_in(dashboard, password)}
            assert sorted(nodes) == [1, 2, 3, 4, 5]  # the fleet, then the board's node
            assert {str(node["status"]) for node in nodes.values()} == {"online"}
            assert nodes[5]["role"] == "parking"
            assert nodes[5]["firmware"]  # what its birth announced
            with urllib.request.urlopen(dashboard, timeout=10) as page:
                assert b"<html" in page.read().lower()
            demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
            break
    else:
        demo.kill()
    rest, _ = demo.communicate(timeout=60)
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    assert "nodes online 4/4" in output, output
    assert "boards online 1/1" in output, output
    assert re.search(r"board demo-parking-5: node 5 \(parking\), firmware \S+ flashed", output)
    console = tmp_path / "demo" / "boards" / "demo-parking-5" / "console.log"
    assert "citisense: " in console.read_text(), console.read_text()  # the loader's boot line
    assert "stopped cleanly" in output, output
    assert "Traceback" not in output, output
