"""The rig's street-time jumps (hilkit.rig.Rig.advance, advance_to), without a board."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from hilkit.rig import Node, Rig
from hilkit.station import Station

from citisense_boards.street import StreetClock

NOON = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC


class ClockOnlyRig(Rig):
    features = frozenset({"street-clock"})


def clock_rig(tmp_path: Path) -> Rig:
    station = cast(Station, None)  # advance() never reaches the station
    return ClockOnlyRig(station, StreetClock(start=NOON), tmp_path, lat=51.05, lon=3.72)


def commissioned(rig: Rig) -> Rig:
    rig.node = Node(42, "lighting", "1.0.0", {}, cast(Any, None))
    return rig


def test_before_commissioning_street_time_may_go_back(tmp_path: Path) -> None:
    rig = clock_rig(tmp_path)
    rig.advance_to(NOON - 86400)  # e.g. the day before, for a node commissioned then
    assert rig.now() == pytest.approx(NOON - 86400, abs=5)
    rig.advance(-3600)
    assert rig.now() == pytest.approx(NOON - 90000, abs=5)


def test_a_commissioned_node_refuses_a_jump_backwards(tmp_path: Path) -> None:
    rig = commissioned(clock_rig(tmp_path))
    with pytest.raises(ValueError) as refused:
        rig.advance_to(NOON - 3600)
    text = str(refused.value)
    assert "cannot jump backwards once a node is commissioned" in text
    assert "it is 2025-06-15 15:06:" in text  # now, to the second
    assert "the jump asked for 2025-06-15 14:06:" in text and "(1749996400)" in text
    with pytest.raises(ValueError, match=r"\(-60 s\)"):
        rig.advance(-60)
    assert rig.now() == pytest.approx(NOON, abs=5)  # the clock did not move
    rig.advance(3600)  # forward is fine
    assert rig.now() == pytest.approx(NOON + 3600, abs=5)


def test_a_target_passed_while_it_was_computed_is_no_jump(tmp_path: Path) -> None:
    rig = commissioned(clock_rig(tmp_path))
    before = rig.now()
    rig.advance_to(before - 0.5)  # as `advance_to(t)` right after reading now() == t
    assert before <= rig.now() < before + 5
