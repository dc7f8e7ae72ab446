"""Installing a bundle through a board link, on the real MicroPython VM: files checked by
hash on the board, A/B switch, and a power cut at every single step of a flash leaving
the old or the new application bootable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from citisense_boards.mpvm import MicroPythonVM
from citisense_tools.board_link import BoardCodeError
from citisense_tools.board_state import probe
from citisense_tools.bundle import Bundle
from citisense_tools.deploy import install
from citisense_tools.errors import CommandError

pytestmark = pytest.mark.micropython


class Steps:
    """Progress that only remembers the steps."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    def step(self, text: str) -> None:
        self.steps.append(text)

    def transfer(self, done: int, total: int) -> None:
        assert 0 < done <= total


class PowerCut(BaseException):
    """The board lost power: nothing after this reaches it (not an Exception on purpose)."""


class CutLink:
    """Passes `budget` round trips to the board, then the power goes."""

    def __init__(self, link: Any, budget: int) -> None:
        self.link = link
        self.name = link.name
        self.budget = budget
        self.used = 0

    def exec(self, code: str) -> str:
        if self.used >= self.budget:
            raise PowerCut
        self.used += 1
        return str(self.link.exec(code))

    def reset(self) -> None:
        raise PowerCut

    def close(self) -> None:
        pass


def test_install_switches_slots_and_keeps_the_previous_one(
        vm_link: Any, make_bundle: Callable[..., Bundle], config_bytes: bytes) -> None:
    first = install(vm_link, make_bundle("1.0.0"), probe(vm_link), Steps(), config=config_bytes)
    assert (first.slot, first.seq) == ("a", 1)
    assert vm_link.boot() == ["1.0.0"]
    second = install(vm_link, make_bundle("1.1.0"), probe(vm_link), Steps())
    assert (second.slot, second.seq) == ("b", 2)
    assert second.state.slots["a"].version == "1.0.0" and second.state.slots["a"].complete
    assert vm_link.boot() == ["1.1.0"]
    third = install(vm_link, make_bundle("1.2.0"), probe(vm_link), Steps())
    assert (third.slot, third.seq, third.state.boots) == ("a", 3, "a")
    assert vm_link.boot() == ["1.2.0"]
    assert vm_link.births()[0]["node"] == 42  # the config written by the first install


def test_unchanged_loader_and_config_are_not_rewritten(
        vm_link: Any, make_bundle: Callable[..., Bundle], config_bytes: bytes) -> None:
    install(vm_link, make_bundle("1.0.0"), probe(vm_link), Steps(), config=config_bytes)
    steps = Steps()
    install(vm_link, make_bundle("1.1.0"), probe(vm_link), steps, config=config_bytes)
    assert not [s for s in steps.steps if "loader" in s or "config" in s]


def test_a_power_cut_at_any_step_leaves_old_or_new_bootable(
        mp: MicroPythonVM, connect: Callable[[], Any], make_bundle: Callable[..., Bundle],
        config_bytes: bytes) -> None:
    old, new = make_bundle("1.0.0"), make_bundle("2.0.0")
    outcomes = []
    budget = 0
    while True:
        mp.reset()
        link = connect()
        install(link, old, probe(link), Steps(), config=config_bytes)
        cut = CutLink(link, budget)
        try:
            install(cut, new, probe(cut), Steps(), chunk=256)
            finished = True
        except PowerCut:
            finished = False
        versions = link.boot()
        assert versions in (["1.0.0"], ["2.0.0"]), (budget, link.boot_output)
        outcomes.append(versions[0])
        if finished:
            break
        budget += 1
    # Every step was cut once; the new version starts only once its slot is complete.
    assert budget > 20
    assert outcomes[0] == "1.0.0" and outcomes[-1] == "2.0.0"
    switch = outcomes.index("2.0.0")
    assert set(outcomes[switch:]) == {"2.0.0"}
    # After a cut, the next flash completes normally.
    mp.reset()
    link = connect()
    install(link, old, probe(link), Steps(), config=config_bytes, chunk=256)
    with pytest.raises(PowerCut):
        install(CutLink(link, budget // 2), new, probe(link), Steps(), chunk=256)
    install(link, new, probe(link), Steps())
    assert link.boot() == ["2.0.0"]


class FailingLink:
    """A board whose flash fills up, or whose cable damages one chunk."""

    def __init__(self, link: Any, fault: str) -> None:
        self.link = link
        self.name = link.name
        self.fault = fault
        self.writes = 0

    def exec(self, code: str) -> str:
        if code.startswith("_w(") and self.fault == "full":  # the slot's manifest
            raise BoardCodeError("Traceback (most recent call last):\n"
                                 "OSError: [Errno 28] ENOSPC\n")
        if code.startswith("_b(") and self.fault == "noise":  # a chunk of the image
            self.writes += 1
            if self.writes == 3:
                code = code.replace("A", "B", 1)
        return str(self.link.exec(code))

    def reset(self) -> None:
        self.link.reset()

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("fault", "complaint"), [
    ("full", "filesystem filled up"),
    ("noise", "arrived damaged"),
])
def test_a_failed_write_keeps_the_old_application(
        vm_link: Any, make_bundle: Callable[..., Bundle], config_bytes: bytes, fault: str,
        complaint: str) -> None:
    install(vm_link, make_bundle("1.0.0"), probe(vm_link), Steps(), config=config_bytes)
    failing = FailingLink(vm_link, fault)
    with pytest.raises(CommandError, match=complaint):
        install(failing, make_bundle("1.1.0"), probe(vm_link), Steps(), chunk=256)
    after = probe(vm_link)
    assert after.boots == "a" and not after.slots["b"].present  # space given back
    assert vm_link.boot() == ["1.0.0"]


def test_not_enough_flash_is_refused_before_writing(
        vm_link: Any, make_bundle: Callable[..., Bundle]) -> None:
    import dataclasses

    state = dataclasses.replace(probe(vm_link), fs_free=40 * 1024)
    with pytest.raises(CommandError, match="filesystem full: the application needs"):
        install(vm_link, make_bundle("1.0.0"), state, Steps())
    assert not probe(vm_link).slots["a"].present


def test_a_board_without_an_application_partition_is_refused(
        vm_link_without_romfs: Any, make_bundle: Callable[..., Bundle]) -> None:
    link = vm_link_without_romfs
    state = probe(link)
    assert state.romfs_bytes is None
    with pytest.raises(CommandError, match=r"no \"romfs\" partition.*--micropython-image"):
        install(link, make_bundle("1.0.0"), state, Steps())


def test_an_application_bigger_than_a_slot_is_refused(
        vm_link: Any, make_bundle: Callable[..., Bundle]) -> None:
    import dataclasses

    state = dataclasses.replace(probe(vm_link), romfs_bytes=2 * 1024)  # 1 KiB slots
    with pytest.raises(CommandError, match="does not fit an application slot"):
        install(vm_link, make_bundle("1.0.0"), state, Steps())
    assert not probe(vm_link).slots["a"].present
