"""Lighting schedules: structure shared with the wire contract, and the level they give."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from astral import Observer
from astral import sun as astral_sun
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from citisense_boards.mpvm import run_on_cpython
from citisense_firmware import schedule
from citisense_firmware.schedule import AT_DAWN, AT_DUSK, AT_TIME, ScheduleError
from citisense_protocols import catalogue, messages

UTC = dt.UTC
AMSTERDAM = (52.37, 4.90)
TROMSO = (69.65, 18.96)
# CET/CEST transitions of 2026, as the gateway sends them from the tz database.
CET_2026 = [[0, 60], [1774746000, 120], [1792890000, 60]]
# On at sunset, 50 % from 23:00, 100 % from 05:00, off at sunrise.
EVENING = [[AT_DUSK, 0, 100], [AT_TIME, 1380, 50], [AT_TIME, 300, 100], [AT_DAWN, 0, 0]]


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp())


def sun_elevation(latitude: float, longitude: float, unix: int) -> float:
    moment = dt.datetime.fromtimestamp(unix, UTC)
    return 90.0 - float(astral_sun.zenith(Observer(latitude, longitude), moment,
                                          with_refraction=False))


def accepted_by_contract(obj: object) -> bool:
    body = messages.command(1, 1, 2**31, 1, messages.OP_SCHEDULE, obj)
    try:
        catalogue.decode_body(body)
    except messages.MessageError:
        return False
    return True


# ---- structure

step_strategy = st.one_of(
    st.tuples(st.just(AT_TIME), st.integers(0, 1439), st.integers(0, 100)),
    st.tuples(st.sampled_from([AT_DUSK, AT_DAWN]), st.integers(-720, 720), st.integers(0, 100)),
).map(list)
steps_strategy = st.lists(step_strategy, min_size=1, max_size=8)
date_strategy = st.builds(lambda y, m, d: y * 10000 + m * 100 + d,
                          st.integers(2024, 2030), st.integers(1, 12), st.integers(1, 31))


@st.composite
def schedules(draw: st.DrawFn) -> dict[int, Any]:
    obj: dict[int, Any] = {0: draw(st.integers(1, 2**32 - 1)), 1: draw(steps_strategy)}
    if draw(st.booleans()):
        exceptions = []
        for _ in range(draw(st.integers(1, 4))):
            first = draw(date_strategy)
            last = max(first, draw(date_strategy))
            exceptions.append([first, last, draw(st.integers(1, 127)),
                               draw(st.integers(0, 255)), draw(steps_strategy)])
        obj[2] = exceptions
    if draw(st.booleans()):
        starts = sorted(draw(st.sets(st.integers(0, 2**32 - 1), min_size=1, max_size=4)))
        obj[3] = [[start, draw(st.integers(-720, 840))] for start in starts]
    if draw(st.booleans()):
        obj[4] = draw(st.integers(0, 100))
    return obj


def mutations(obj: dict[int, Any], draw: st.DrawFn) -> dict[int, Any]:
    """A copy of a valid schedule with one field broken (or left intact)."""
    broken = {key: value for key, value in obj.items()}
    choice = draw(st.integers(0, 7))
    if choice == 0:
        broken[draw(st.integers(5, 9))] = 1
    elif choice == 1:
        broken[1] = [[AT_TIME, 1440, 50]]
    elif choice == 2:
        broken[1] = [[AT_DUSK, -721, 50]]
    elif choice == 3:
        broken[1] = [*broken[1], *broken[1], *broken[1], *broken[1], *broken[1], [0, 0, 0]][:9]
    elif choice == 4:
        broken[0] = draw(st.sampled_from([0, True, -1, 2**32, "1"]))
    elif choice == 5:
        broken[4] = draw(st.sampled_from([101, -1, False]))
    elif choice == 6:
        broken[2] = [[20261301, 20261302, 127, 0, [[0, 0, 0]]]]
    elif choice == 7:
        broken[3] = [[100, 60], [100, 120]]
    return broken


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_node_accepts_exactly_the_schedules_the_contract_accepts(data: st.DataObject) -> None:
    obj = mutations(data.draw(schedules()), data.draw)
    contract = accepted_by_contract(obj)
    try:
        schedule.parse(obj)
        node = True
    except ScheduleError:
        node = False
    assert node == contract


def test_parse_reports_the_broken_field() -> None:
    with pytest.raises(ScheduleError, match=r"steps\[1\].offset"):
        schedule.parse({0: 1, 1: [[AT_TIME, 0, 0], [AT_TIME, 1440, 10]]})
    with pytest.raises(ScheduleError, match=r"exceptions\[0\].last"):
        schedule.parse({0: 1, 1: EVENING, 2: [[20261231, 20261230, 127, 0, EVENING]]})
    with pytest.raises(ScheduleError, match="unknown key 9"):
        schedule.parse({0: 1, 1: EVENING, 9: 0})


# ---- levels

times = st.integers(at(2024, 1, 1), at(2030, 12, 31))
latitudes = st.floats(35.0, 70.0)
longitudes = st.floats(-10.0, 30.0)


@settings(max_examples=300, deadline=None)
@given(obj=schedules(), unix=times, latitude=latitudes, longitude=longitudes)
def test_level_is_a_percentage_and_the_same_after_a_reboot(
    obj: dict[int, Any], unix: int, latitude: float, longitude: float
) -> None:
    running = schedule.parse(obj)
    level = running.level(unix, latitude, longitude)
    assert 0 <= level <= 100
    # A reboot re-parses the stored object and starts with empty memos.
    assert schedule.parse(obj).level(unix, latitude, longitude) == level
    # The memo of sun events never changes an answer.
    assert running.level(unix, latitude, longitude) == level


@settings(max_examples=200, deadline=None)
@given(obj=schedules(), start=times, steps=st.lists(st.integers(0, 3 * 86400), max_size=6),
       latitude=latitudes, longitude=longitudes)
def test_warming_leaves_nothing_for_level_to_compute(
    obj: dict[int, Any], start: int, steps: list[int], latitude: float, longitude: float,
) -> None:
    """warm() computes every sun time level() needs, one per step (the node waits between
    them), so a tick never computes a burst of them; the memo stays bounded as time goes on
    and never changes an answer."""
    running = schedule.parse(obj)
    computed: list[int] = []
    real_event, real_noon = schedule.sun_event, schedule.solar_noon

    def event(*args: Any) -> int:
        computed.append(1)
        return real_event(*args)

    def noon(*args: Any) -> int:
        computed.append(1)
        return real_noon(*args)

    unix = start
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schedule, "sun_event", event)
        patch.setattr(schedule, "solar_noon", noon)
        for step in [0, *steps]:
            unix += step
            yielded = sum(1 for _ in running.warm(unix, latitude, longitude))
            assert yielded <= len(computed)  # at least one new sun time per step taken
            computed.clear()
            level = running.level(unix, latitude, longitude)
            assert computed == []  # nothing left to compute in the tick
            assert len(running._sun) <= schedule._CACHE_SIZE
    assert level == schedule.parse(obj).level(unix, latitude, longitude)


@settings(max_examples=100, deadline=None)
@given(unix=times, here=st.tuples(latitudes, longitudes), there=st.tuples(latitudes, longitudes),
       days=st.integers(-3, 3))
def test_one_schedule_answers_anywhere_as_a_fresh_one(
    unix: int, here: tuple[float, float], there: tuple[float, float], days: int
) -> None:
    """The sun memo holds one place: asked about another, it starts again, never answers
    with the first place's sun times."""
    running = schedule.parse({0: 1, 1: EVENING, 3: CET_2026})
    for (latitude, longitude), when in ((here, unix), (there, unix + days * 86400),
                                        (here, unix - days * 3600)):
        fresh = schedule.parse({0: 1, 1: EVENING, 3: CET_2026}).level(when, latitude, longitude)
        assert running.level(when, latitude, longitude) == fresh


@settings(max_examples=400, deadline=None)
@given(unix=times, latitude=latitudes, longitude=longitudes)
def test_sun_following_profile_lights_the_night_and_only_the_night(
    unix: int, latitude: float, longitude: float
) -> None:
    level = schedule.parse({0: 1, 1: EVENING, 3: CET_2026}).level(unix, latitude, longitude)
    elevation = sun_elevation(latitude, longitude, unix)
    # Sunrise and sunset are at -0.789 degrees; the margins absorb the formulas' spread.
    if elevation < -0.9:
        assert level in (50, 100)
    elif elevation > -0.7:
        assert level == 0


def test_polar_days_follow_the_sun() -> None:
    evening = schedule.parse({0: 1, 1: EVENING, 3: CET_2026})
    midsummer = [evening.level(at(2026, 6, 21) + m * 600, *TROMSO) for m in range(144)]
    assert set(midsummer) == {0}  # midnight sun: never lit, not even by the 05:00 step
    midwinter = [evening.level(at(2026, 12, 21) + m * 600, *TROMSO) for m in range(144)]
    assert 0 not in midwinter  # polar night: lit all day, dimmed 23:00..05:00
    assert midwinter[3 * 6] == 50 and midwinter[12 * 6] == 100
    # Offsets open a short dark window around solar midnight under the midnight sun.
    early = schedule.parse({0: 1, 1: [[AT_DUSK, -30, 80], [AT_DAWN, 30, 0]]})
    night = [early.level(at(2026, 6, 21, 20) + m * 60, *TROMSO) for m in range(8 * 60)]
    assert 55 <= night.count(80) <= 65


def test_a_whole_year_at_seventy_north_is_lit_exactly_while_the_sun_is_down() -> None:
    """Every 10 minutes of a year at 70 N, transition days included: lit whenever the sun
    is below the horizon, dark whenever it is above (margins for the formulas' spread)."""
    evening = schedule.parse({0: 1, 1: [[AT_DUSK, 0, 100], [AT_DAWN, 0, 0]]})
    wrong = []
    for step in range(365 * 144):
        unix = at(2026, 1, 1) + step * 600
        lit = evening.level(unix, 70.0, 25.0) > 0
        elevation = sun_elevation(70.0, 25.0, unix)
        if (elevation < -0.9 and not lit) or (elevation > -0.7 and lit):
            wrong.append((unix, elevation, lit))
    assert wrong == []


def test_highest_priority_exception_wins_and_ties_go_to_the_first_listed() -> None:
    base = [[AT_TIME, 0, 10]]
    obj = {
        0: 1,
        1: base,
        2: [
            [20261201, 20261231, 127, 1, [[AT_TIME, 0, 20]]],
            [20261224, 20261226, 127, 5, [[AT_TIME, 0, 30]]],
            [20261225, 20261225, 127, 5, [[AT_TIME, 0, 40]]],
            [20261201, 20261231, 0b0100000, 9, [[AT_TIME, 0, 50]]],  # Saturdays
        ],
    }
    running = schedule.parse(obj)
    noon = [running.level(at(2026, 12, day, 12), 52.0, 5.0) for day in (1, 5, 24, 25, 26, 30)]
    # Dec 5 and Dec 26 2026 are Saturdays.
    assert noon == [20, 50, 30, 30, 50, 20]
    assert running.level(at(2026, 11, 30, 12), 52.0, 5.0) == 10


@settings(max_examples=200, deadline=None)
@given(priorities=st.lists(st.integers(0, 255), min_size=1, max_size=4), unix=times)
def test_the_winning_exception_is_the_first_of_the_highest_priority(
    priorities: list[int], unix: int
) -> None:
    exceptions = [[20240101, 20301231, 127, p, [[AT_TIME, 0, index + 1]]]
                  for index, p in enumerate(priorities)]
    running = schedule.parse({0: 1, 1: [[AT_TIME, 0, 0]], 2: exceptions})
    assume(at(2024, 1, 3) < unix < at(2030, 12, 29))
    assert running.level(unix, 52.0, 5.0) == priorities.index(max(priorities)) + 1


def test_clock_steps_follow_local_time_across_daylight_saving() -> None:
    steps = schedule.parse({0: 1, 1: [[AT_TIME, 1380, 50], [AT_TIME, 300, 100]], 3: CET_2026})
    # 23:00 local is 22:00 UTC in winter and 21:00 UTC in summer.
    assert steps.level(at(2026, 1, 10, 21, 59), 52.0, 5.0) == 100
    assert steps.level(at(2026, 1, 10, 22, 0), 52.0, 5.0) == 50
    assert steps.level(at(2026, 7, 10, 20, 59), 52.0, 5.0) == 100
    assert steps.level(at(2026, 7, 10, 21, 0), 52.0, 5.0) == 50
    # Without tz entries the schedule runs on UTC.
    utc = schedule.parse({0: 1, 1: [[AT_TIME, 1380, 50], [AT_TIME, 300, 100]]})
    assert utc.level(at(2026, 7, 10, 22, 59), 52.0, 5.0) == 100
    assert utc.level(at(2026, 7, 10, 23, 0), 52.0, 5.0) == 50


def test_sun_offsets_shift_the_switching_instants() -> None:
    plain = schedule.parse({0: 1, 1: [[AT_DUSK, 0, 100], [AT_DAWN, 0, 0]]})
    shifted = schedule.parse({0: 1, 1: [[AT_DUSK, 15, 100], [AT_DAWN, -20, 0]]})
    start = at(2026, 10, 1, 12)
    minutes = range(24 * 60)
    lit = [m for m in minutes if plain.level(start + m * 60, *AMSTERDAM)]
    lit_shifted = [m for m in minutes if shifted.level(start + m * 60, *AMSTERDAM)]
    assert lit_shifted[0] == lit[0] + 15
    assert lit_shifted[-1] == lit[-1] - 20


def test_part_night_switching_with_a_level_zero_clock_step() -> None:
    part_night = schedule.parse({0: 1, 1: [[AT_DUSK, 0, 100], [AT_TIME, 60, 0],
                                           [AT_TIME, 300, 100], [AT_DAWN, 0, 0]]})
    assert part_night.level(at(2026, 1, 10, 0, 30), *AMSTERDAM) == 100
    assert part_night.level(at(2026, 1, 10, 2, 0), *AMSTERDAM) == 0
    assert part_night.level(at(2026, 1, 10, 5, 30), *AMSTERDAM) == 100
    assert part_night.level(at(2026, 1, 10, 12, 0), *AMSTERDAM) == 0


# ---- the same code on the MicroPython VM

FIRMWARE = Path(__file__).resolve().parents[1] / "citisense_firmware"

LEVELS_SCRIPT = """
import json
from citisense_firmware import schedule
objs = %s
out = []
for obj in objs:
    running = schedule.parse(obj)
    for latitude, longitude in ((35.0, -5.0), (52.37, 4.9), (66.5, 25.7), (70.0, 19.0)):
        for day in range(0, 365, 23):
            start = 1767225600 + day * 86400 + 17  # 2026-01-01 UTC, 17 s past the minute
            out.append([running.level(start + m * 2400, latitude, longitude)
                        for m in range(36)])
print(json.dumps(out))
"""
SCHEDULES = [
    {0: 1, 1: EVENING, 3: CET_2026},
    {0: 2, 1: [[AT_DUSK, -30, 80], [AT_TIME, 60, 0], [AT_TIME, 330, 60], [AT_DAWN, 20, 0]],
     2: [[20261224, 20261226, 127, 3, [[AT_DUSK, 0, 100], [AT_DAWN, 0, 0]]],
         [20260101, 20261231, 0b1100000, 1, [[AT_DUSK, 0, 70], [AT_DAWN, 0, 0]]]],
     3: [[0, 120], [1774746000, 180], [1792890000, 120]], 4: 60},
]



@pytest.mark.micropython
def test_schedule_levels_on_micropython_match_cpython(mp: Any) -> None:
    mp.install_package(FIRMWARE)
    script = LEVELS_SCRIPT % repr(SCHEDULES)
    board = mp.run(script)
    assert board == run_on_cpython(script)
    levels = json.loads(board)
    assert len(levels) == 2 * 4 * 16 and {0, 50, 100} <= {v for row in levels for v in row}


@given(anchor=st.integers(0, 2), offset=st.integers(-720, 1439), level=st.integers(0, 100),
       day=st.integers(19000, 24000))
def test_a_parsed_step_keeps_its_anchor_offset_and_level(
    anchor: int, offset: int, level: int, day: int
) -> None:
    """Steps are packed into small ints on the node: every field survives, at its limits."""
    low, high = ((0, 1439), (-720, 720), (-720, 720))[anchor]
    assume(low <= offset <= high)
    parsed = schedule.parse({0: 1, 1: [[anchor, offset, level]]})
    assert parsed.level(day * 86400 + 43200, 52.0, 5.0) == level  # one step: always its level
    if anchor == schedule.AT_TIME:
        assert parsed.resolve(day, parsed.steps[0], 52.0, 5.0) == day * 86400 + offset * 60
    else:
        sun = parsed.resolve(day, parsed.steps[0], 52.0, 5.0)
        without_offset = schedule.parse({0: 1, 1: [[anchor, 0, level]]})
        assert sun - without_offset.resolve(day, without_offset.steps[0], 52.0, 5.0) == offset * 60
