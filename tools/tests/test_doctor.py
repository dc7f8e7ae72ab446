"""citisense doctor: a board's state read through the REPL, secrets kept on the board."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from citisense_tools.board_state import HIDDEN, probe
from citisense_tools.bundle import Bundle
from citisense_tools.deploy import install
from citisense_tools.doctor import problems, report, restart

pytestmark = pytest.mark.micropython


class Quiet:
    def step(self, text: str) -> None:
        pass

    def transfer(self, done: int, total: int) -> None:
        pass


def test_a_fresh_board_needs_an_application_and_a_config(vm_link: Any) -> None:
    state = probe(vm_link)
    assert state.micropython[:2] == (1, 29) and state.mpy_version == (6, 3)
    assert state.boots is None and not state.has_config
    found = problems(state)
    assert any("no complete application" in p for p in found)
    assert any("no config" in p for p in found)


def test_report_shows_the_installed_node_without_its_secrets(
        vm_link: Any, make_bundle: Callable[..., Bundle], node_config: Any) -> None:
    doc = node_config()
    doc["wifi"] = {"ssid": "city-iot", "password": "wifi-secret-123"}
    raw = json.dumps(doc).encode()
    install(vm_link, make_bundle("1.0.0"), probe(vm_link), Quiet(), config=raw)
    install(vm_link, make_bundle("1.1.0"), probe(vm_link), Quiet())
    state = probe(vm_link)
    text = "\n".join(report(state, "/dev/ttyUSB0"))
    as_json = json.dumps(dataclasses.asdict(state))
    for secret in (doc["key"], "test-password", "wifi-secret-123"):
        assert secret not in text and secret not in as_json
    assert state.config is not None and state.config["key"] == HIDDEN
    assert "micropython  1.29.0 (.mpy v6.3)" in text
    assert "slot a       citisense 1.0.0, lighting on esp32-devkitc, flash #1" in text
    assert "slot b       citisense 1.1.0, lighting on esp32-devkitc, flash #2" in text
    assert "[starts at boot, active]" in text.split("slot b")[1]
    assert "node 42, lighting on esp32-devkitc, at 52.0907000, 5.1214000" in text
    assert "uplink mqtt broker.example:1883 as 42; key present (not shown)" in text
    assert "problems     none" in text


def test_an_interrupted_flash_and_an_old_micropython_are_named(
        vm_link: Any, make_bundle: Callable[..., Bundle], config_bytes: bytes) -> None:
    install(vm_link, make_bundle("1.0.0"), probe(vm_link), Quiet(), config=config_bytes)
    vm_link.exec("import os\nos.mkdir('/app/b')")
    state = dataclasses.replace(probe(vm_link), micropython=(1, 27, 0))
    text = "\n".join(report(state, "PORT"))
    assert "slot b       incomplete (an interrupted flash" in text
    assert "MicroPython 1.27.0 is installed; this board's firmware needs 1.29" in text


class ResetLink:
    """A serial link whose board, once reset, prints `console` (None: the port is gone)."""

    def __init__(self, console: str | None) -> None:
        self.console = console
        self.calls: list[str] = []

    def reset_and_listen(self, done: Callable[[str], bool], timeout: float) -> str | None:
        self.calls.append("reset_and_listen")
        if self.console is not None:
            # doctor stops listening at the loader's last line, not before
            lines = self.console.splitlines(keepends=True)
            assert not any(done("".join(lines[:n])) for n in range(len(lines)))
            assert not done(self.console.rstrip()[:-1])  # the slot's name still to come
            assert done(self.console) == ("from slot" in self.console
                                          or "no complete" in self.console)
        return self.console

    def close(self) -> None:
        self.calls.append("close")


@pytest.mark.parametrize(("console", "said"), [
    ("OK\r\nets Jun  8 2016 00:22:57\r\ncitisense: slot b cannot start: "
     "ImportError('no module named x')\r\ncitisense: 1.0.0 from slot a\r\n",
     "the application was stopped for the check and restarted: 1.0.0 from slot a"),
    ("citisense: slot a cannot start: MemoryError()\r\ncitisense: no complete application on "
     "this board: install one with citisense flash\r\n",
     "the application was stopped for the check; after the reset the loader said \"no "
     "complete application on this board: install one with citisense flash\": the node is "
     "offline"),
    ("OK\r\nets Jun  8 2016 00:22:57\r\n",
     "the application was stopped for the check; after the reset it did not say it started "
     "within 3 s: the node may be offline until the board is reset (press its reset button, "
     "or power it off and on)"),
    (None, "the board was reset after the check; its console could not be read after the "
           "reset, so its restart was not seen: run citisense doctor again to check"),
])
def test_after_the_check_doctor_says_whether_the_application_runs_again(
        vm_link: Any, make_bundle: Callable[..., Bundle], config_bytes: bytes,
        console: str | None, said: str) -> None:
    install(vm_link, make_bundle("1.0.0"), probe(vm_link), Quiet(), config=config_bytes)
    link = ResetLink(console)
    assert restart(link, probe(vm_link), wait=3) == said  # type: ignore[arg-type]
    assert link.calls == ["reset_and_listen"]


def test_a_board_without_the_loader_is_reset_and_said_offline(vm_link: Any) -> None:
    link = ResetLink("never read")
    said = restart(link, probe(vm_link))  # type: ignore[arg-type]
    assert said.endswith("no application runs: the node is offline until citisense flash "
                         "installs one")
    assert link.calls == ["close"]
