"""Street lighting on the board: a schedule over a night, an override and its expiry, link
loss, the fail-safe without time, and a power cut at night. The lamp is watched at the
driver's input (lamp capture) and through what the node reports."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hilkit import street_time
from hilkit.rig import Rig
from hilkit.station import Station

from citisense_gateway import firmware_logic, schedules
from citisense_gateway.store.base import UplinkRow
from citisense_protocols import messages

pytestmark = [pytest.mark.hil, pytest.mark.virtual_board]

NIGHT = {"timezone": street_time.ZONE, "failsafe": 100,
         "steps": [{"at": "dusk", "level": 100}, {"at": "23:00", "level": 50},
                   {"at": "dawn", "level": 0}]}
FADE_S = 3  # the firmware's default fade, 0 -> 100 %
LEVEL, SOURCE = 0, 1  # lighting telemetry fields
TELEMETRY_S = 20  # the site setting of the link-loss scenario: a reading every 20 s
OUTAGE_S = 120
OVERRIDE_S = 60


def duty(level: int) -> int:
    """The PWM duty the firmware drives for a level (percent)."""
    return level * 65535 // 100


def lit_with_schedule(board: Rig, station: Station, start: float,
                      settings: dict[str, Any] | None = None) -> int:
    """A lighting node commissioned at street time `start`, running the NIGHT schedule."""
    board.advance_to(start)
    node = board.commission("lighting", settings=settings)
    station.run_schedule(node.id, NIGHT)
    return node.id


def step_instant(wire: dict[int, Any], lat: float, lon: float, after: float,
                 before: float) -> int:
    """The second the schedule's level changes in (after, before], by the firmware's own
    schedule function (the gateway's preview has minute resolution)."""
    parsed = firmware_logic.parse_schedule(wire)
    low, high = int(after), int(before)
    start = firmware_logic.schedule_level(parsed, low, lat, lon)
    while high - low > 1:
        mid = (low + high) // 2
        if firmware_logic.schedule_level(parsed, mid, lat, lon) == start:
            low = mid
        else:
            high = mid
    return high


@pytest.mark.requires("street-clock", "lamp-capture")
def test_the_lamp_follows_its_schedule_over_a_night(board: Rig, station: Station) -> None:
    day = street_time.local_day(board.now() + 86400)
    lit_with_schedule(board, station, street_time.at(day, 12))
    wire = station.schedule_wire()
    changes = schedules.preview(wire, board.lat, board.lon, day, street_time.ZONE)
    assert [c.level for c in changes] == [0, 100, 50, 0]  # noon, dusk, 23:00, dawn
    board.set_speed(20)
    for before, change in itertools.pairwise(changes):
        instant = step_instant(wire, board.lat, board.lon, change.at - 60, change.at)
        board.advance_to(instant - 60)
        board.wait_lamp(before.level, 60)
        board.wait(80)  # through the step, in street time
        board.wait_lamp(change.level, 60)
        # The step came on time: the fade began within a control tick of its instant.
        began = [s.t for s in board.lamp_samples() if s.t >= instant - 60
                 and s.duty_u16 is not None and s.duty_u16 != duty(before.level)]
        assert began and instant - 1 <= began[0] <= instant + 2, (instant, began[:3])
    # Dusk to dawn the lamp was never dark, whatever the jumps through the night.
    dusk, dawn = changes[1].at, changes[3].at - 60
    night = [s for s in board.lamp_samples() if dusk + FADE_S < s.t < dawn]
    assert night and all(s.duty_u16 for s in night)


@pytest.mark.requires("lamp-capture")
def test_an_override_holds_its_level_then_expires(board: Rig, station: Station) -> None:
    node = board.commission("lighting")
    before = board.lamp_level()
    assert before is not None
    board.wait(10)
    assert board.lamp_level() == before  # steady on its own policy (ambient light)
    station.run_command(station.dim(node.id, 37, OVERRIDE_S))
    board.wait_lamp(37, 30)
    record = station.wait_telemetry(node.id, lambda t: t[SOURCE] == messages.SOURCE_OVERRIDE,
                                    60, "telemetry from the override")
    assert record[LEVEL] == 37
    board.wait_lamp(before, 180)
    # It lasted its time, in street seconds: from the first step toward 37 % to the first away.
    samples = [(s.t, round(s.duty_u16 * 100 / 65535)) for s in board.lamp_samples()
               if s.duty_u16 is not None]
    levels = [level for _, level in samples]
    start = next(i for i, level in enumerate(levels) if level != round(before))
    end = next(i for i in range(levels.index(37, start), len(levels)) if levels[i] != 37)
    held = samples[end][0] - samples[start][0]
    assert OVERRIDE_S - 2 <= held <= OVERRIDE_S + FADE_S + 5, held  # uptime: whole seconds


@pytest.mark.requires("street-clock", "lamp-capture")
def test_link_loss_keeps_the_street_lit_and_loses_no_reading(board: Rig,
                                                              station: Station) -> None:
    day = street_time.local_day(board.now() + 86400)
    node = lit_with_schedule(board, station, street_time.at(day, 23, 30),
                             {"telemetry_s": TELEMETRY_S})
    board.set_speed(20)
    board.wait_lamp(50, 60)
    cut_at = board.now()
    station.link_down()
    board.wait(OUTAGE_S)  # no broker: the node keeps its readings in its queue
    station.link_up()
    back_at = board.now()
    outage = [s for s in board.lamp_samples() if s.t >= cut_at]
    assert all(s.duty_u16 == duty(50) for s in outage), outage[:5]
    # What the node measured meanwhile reaches the gateway: a reading every interval.
    station.wait_until(lambda: any(t.ts > back_at for t in lamp_readings(station, node)),
                       300, "readings made after the outage")
    stamps = [t.ts for t in lamp_readings(station, node) if t.tq != messages.TQ_UPTIME]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert stamps[0] < cut_at + TELEMETRY_S and stamps[-1] > back_at
    assert max(gaps) <= TELEMETRY_S + 2, gaps
    assert all(json.loads(t.data)[LEVEL] == 50 for t in lamp_readings(station, node)
               if t.ts >= cut_at)


def lamp_readings(station: Station, node: int) -> list[UplinkRow]:
    return station.uplinks(node, messages.TELEMETRY)


@pytest.mark.requires("street-clock", "lamp-capture")
def test_without_time_or_link_the_ambient_light_decides(board: Rig, station: Station) -> None:
    # A node that never got the time, at night, whose link then goes: no schedule can be
    # trusted, so the light sensor decides. The street is never left dark.
    day = street_time.local_day(board.now() + 86400)
    board.advance_to(street_time.at(day, 2))
    node = board.commission("lighting", time_sync=False)
    board.wait_lamp(100, 30)  # the fail-safe level
    station.link_down()
    board.wait(60)
    assert board.lamp_level() == 100
    record = station.telemetry(node.id)[-1]
    assert record[SOURCE] == messages.SOURCE_AMBIENT
    board.advance_to(street_time.at(day, 11))  # broad daylight, still no time, no link
    board.wait_lamp(0, 60)
    station.link_up()


@pytest.mark.requires("street-clock", "lamp-capture", "power-cycle")
def test_a_power_cut_at_night_does_not_leave_the_street_dark(board: Rig,
                                                              station: Station) -> None:
    day = street_time.local_day(board.now() + 86400)
    node = lit_with_schedule(board, station, street_time.at(day, 23, 30))
    board.wait_lamp(50, 60)
    cut = board.now()
    board.power_cycle()
    station.wait_until(lambda: any(s.t > cut and s.duty_u16 is not None
                                   for s in board.lamp_samples()), 60, "lamp driven again")
    # From boot the output went straight to the schedule's level: no fade up from zero,
    # no flash at full power.
    driven = [s.duty_u16 for s in board.lamp_samples() if s.t > cut and s.duty_u16 is not None]
    assert driven[0] == duty(50), driven[:5]
    board.wait(30)
    assert board.lamp_level() == pytest.approx(50, abs=1)
    station.wait_until(lambda: len(station.births(node)) >= 2, 60, "birth after the cut")
    assert station.births(node)[-1]["4"] == messages.RESET_POWER_ON
