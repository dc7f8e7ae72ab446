"""Lighting schedules: precise errors, the zone's offsets, previews by the firmware's own
function, versions that never go down across schedules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citisense_gateway import firmware_logic, schedules
from citisense_gateway.commands import check_args
from citisense_protocols import messages

EVENING = {"timezone": "Europe/Amsterdam", "failsafe": 90,
           "steps": [{"at": "dusk", "offset": -10, "level": 100}, {"at": "23:30", "level": 40},
                     {"at": "dawn", "level": 0}],
           "exceptions": [{"first": "2026-12-24", "last": "2026-12-26", "days": "all",
                           "priority": 5, "steps": [{"at": "dusk", "level": 100},
                                                    {"at": "dawn", "level": 0}]}]}
NOW = 1767225600.0  # 2026-01-01T00:00Z


def test_compiles_to_the_wire_object() -> None:
    wire = schedules.compile_schedule(EVENING, 7, NOW)
    assert wire[0] == 7 and wire[4] == 90
    assert wire[1] == [[1, -10, 100], [0, 1410, 40], [2, 0, 0]]
    assert wire[2] == [[20261224, 20261226, 127, 5, [[1, 0, 100], [2, 0, 0]]]]
    # CET now, then the DST transitions of 2026 and 2027 (last Sundays of March/October).
    assert wire[3] == [[1767225600, 60], [1774746000, 120], [1792890000, 60],
                       [1806195600, 120]]
    check_args(messages.OP_SCHEDULE, wire)


@pytest.mark.parametrize(("change", "message"), [
    ({"steps": []}, "steps: expected a list of 1..8 steps"),
    ({"steps": [{"at": "25:00", "level": 1}]}, 'steps[0].at: expected "dusk", "dawn" or HH:MM'),
    ({"steps": [{"at": "dusk", "level": 101}]}, "steps[0].level: expected an integer in 0..100"),
    ({"steps": [{"at": "dusk", "offset": 721, "level": 1}]}, "steps[0].offset: expected an"),
    ({"steps": [{"at": "22:00", "offset": 5, "level": 1}]}, "only dusk and dawn steps"),
    ({"steps": [{"at": "dusk", "lvl": 1}]}, "steps[0].lvl: unknown key"),
    ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
    ({"exceptions": [{"first": "2026-12-26", "last": "2026-12-24", "steps": [
        {"at": "dusk", "level": 1}]}]}, "exceptions[0].last: is before first"),
    ({"exceptions": [{"first": "2026-02-30", "last": "2026-03-01", "steps": [
        {"at": "dusk", "level": 1}]}]}, "exceptions[0].first: expected a date YYYY-MM-DD"),
    ({"exceptions": [{"first": "2026-01-01", "last": "2026-01-02", "days": ["mon", "xyz"],
                      "steps": [{"at": "dusk", "level": 1}]}]}, "exceptions[0].days"),
    ({"colour": "red"}, "colour: unknown key"),
])
def test_errors_name_the_field_and_the_rule(change: dict[str, Any], message: str) -> None:
    with pytest.raises(schedules.ScheduleError) as caught:
        schedules.compile_schedule({**EVENING, **change}, 1, NOW)
    assert message in str(caught.value)


def test_preview_is_what_the_firmware_computes() -> None:
    wire = schedules.compile_schedule(EVENING, 3, NOW)
    changes = schedules.preview(wire, 52.37, 4.89, dt.date(2026, 1, 15), "Europe/Amsterdam")
    parsed = firmware_logic.parse_schedule(wire)
    for change in changes:
        assert firmware_logic.schedule_level(parsed, change.at, 52.37, 4.89) == change.level
    local = [(dt.datetime.fromtimestamp(c.at, schedules.ZoneInfo("Europe/Amsterdam"))
              .strftime("%H:%M"), c.level) for c in changes]
    assert [level for _, level in local] == [0, 100, 40, 0]
    assert local[2][0] == "23:30"
    assert "16:3" in local[1][0] or "16:4" in local[1][0]  # ten minutes before sunset
    christmas = schedules.preview(wire, 52.37, 4.89, dt.date(2026, 12, 24), "Europe/Amsterdam")
    assert [c.level for c in christmas] == [0, 100, 0]  # the exception: no dimming


def test_records_carry_source_and_wire() -> None:
    rec = schedules.record("old-town", EVENING, 12, "dana", NOW)
    assert schedules.wire_of(rec)[0] == 12 and rec.created_by == "dana"
    with pytest.raises(schedules.ScheduleError, match="name"):
        schedules.record("Old Town!", EVENING, 12, "dana", NOW)


step = st.one_of(
    st.builds(lambda h, m, level: {"at": f"{h:02d}:{m:02d}", "level": level},
              st.integers(0, 23), st.integers(0, 59), st.integers(0, 100)),
    st.builds(lambda at, off, level: {"at": at, "offset": off, "level": level},
              st.sampled_from(["dusk", "dawn"]), st.integers(-720, 720), st.integers(0, 100)))


@settings(max_examples=40, deadline=None)
@given(st.lists(step, min_size=1, max_size=8), st.integers(1, 2**32 - 1))
def test_every_valid_definition_passes_contract_and_firmware(steps: list[dict[str, Any]],
                                                             version: int) -> None:
    wire = schedules.compile_schedule({"steps": steps, "timezone": "UTC"}, version, NOW)
    check_args(messages.OP_SCHEDULE, wire)
    parsed = firmware_logic.parse_schedule(wire)
    assert 0 <= firmware_logic.schedule_level(parsed, int(NOW), 60.0, 10.0) <= 100
