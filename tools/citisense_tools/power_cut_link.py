"""A test and rig aid, not a technician's command: a BoardLink whose board loses its
power after a number of exchanges, to show that a flash cut at any moment leaves a
working board (tools/tests, and the HIL rig's `deploy(power_cut_after=N)`)."""

from __future__ import annotations

from collections.abc import Callable

from citisense_tools.board_link import SerialLink


class PowerCut(BaseException):
    """The board's power went in the middle of an exchange (not an Exception: nothing may
    go on talking to the board after it)."""


class PowerCutLink:
    """Passes exchanges to `link`; after `budget` of them (None: never) lets go of the
    port, calls `cut` (which cuts the board's power and restores it) and raises PowerCut."""

    def __init__(self, link: SerialLink, budget: int | None, cut: Callable[[], None]) -> None:
        self.link, self.budget, self.cut = link, budget, cut
        self.name = link.name

    def exec(self, code: str) -> str:
        if self.budget is not None:
            if self.budget == 0:
                self.link._release()  # the port only: typing into the board would reset it
                self.cut()
                raise PowerCut
            self.budget -= 1
        return self.link.exec(code)

    def reset(self) -> None:
        self.link.reset()

    def close(self) -> None:
        self.link.close()
