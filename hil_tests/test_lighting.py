"""Street lighting on the board: a schedule over a night, an override and its expiry, link
loss, the fail-safe without time, and a power cut at night. The lamp is watched at the
driver's input (lamp capture) and through what the node reports."""

from __future__ import annotations

import itertools
import json
import time
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
STEP_WINDOW_S = 5  # street seconds either side of a schedule step watched slowly
STEP_SPEED = 4  # street speed through a step; 20 elsewhere


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


def slowly(board: Rig, street_s: float) -> None:
    """Let `street_s` pass at STEP_SPEED, then go on at 20x. Used through schedule steps:
    at 20x a 50 ms host stall (CI's two cores) is a street second, which a test would
    count as the firmware's lateness."""
    board.set_speed(STEP_SPEED)
    board.wait(street_s)
    board.set_speed(20)


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
        board.advance_to(instant - STEP_WINDOW_S)
        slowly(board, 2 * STEP_WINDOW_S)
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


# A night with steps on both sides of midnight whatever the season: in winter dusk and
# dawn fall outside 18:00..06:00, in summer inside.
WATCHED_NIGHT = {"timezone": street_time.ZONE, "failsafe": 100,
                 "steps": [{"at": "dusk", "level": 100}, {"at": "21:00", "level": 80},
                           {"at": "23:00", "level": 50}, {"at": "04:30", "level": 70},
                           {"at": "dawn", "level": 0}]}
NIGHT_TELEMETRY_S = 600  # 72 readings in 12 h, plus 48 health messages: the 256-message
# queue holds the whole night
NIGHT_S = 12 * 3600
HOUR_S = 3600
LEAD_S = 30  # street seconds watched before each step
FLUSH_S = 90  # and before the power cut: the node's queue goes to flash within a minute
STEP_S = FADE_S + 3  # a step's fade, and a control tick


@pytest.mark.requires("street-clock", "lamp-capture", "power-cycle")
def test_a_night_without_link_and_a_power_cut_follows_the_schedule(
        board: Rig, station: Station) -> None:
    # The link goes at 18:00 for twelve hours; at 23:00, after the step to 50 %, the power
    # is cut too. The ESP32's clock restarts at 2000 then: the node must take the time
    # from its battery-backed RTC chip, or fall back to its light sensor (100 %).
    day = street_time.local_day(board.now() + 86400)
    board.advance_to(street_time.at(day, 17, 40))
    node = board.commission("lighting", settings={"telemetry_s": NIGHT_TELEMETRY_S}).id
    station.run_schedule(node, WATCHED_NIGHT)
    wire = station.schedule_wire()
    parsed = firmware_logic.parse_schedule(wire)

    def scheduled(t: float) -> int:
        return firmware_logic.schedule_level(parsed, int(t), board.lat, board.lon)

    board.set_speed(20)
    board.advance_to(street_time.at(day, 18))
    board.wait(60)  # the lamp settles at its evening level
    cut_at = board.now()
    station.link_down()
    night_started = time.monotonic()
    end = cut_at + NIGHT_S
    changes = schedules.preview(wire, board.lat, board.lon, day, street_time.ZONE)
    steps = [step_instant(wire, board.lat, board.lon, c.at - 60, c.at) for c in changes[1:]
             if cut_at < c.at - 60 and c.at < end]
    eleven = street_time.at(day, 23)
    assert eleven in steps and any(s > eleven for s in steps), steps  # 23:00 and a later one
    power_cut = eleven + 300  # planned; the power goes at powered_off, after FLUSH_S
    powered_off = power_cut

    def pass_hours(until: float) -> None:
        """Street time goes on to `until`, an hour at a time, the board running half a
        minute after each jump (never backwards: the board's ticks would go back too)."""
        while board.now() < until - 30:
            board.advance(min(HOUR_S, until - 30 - board.now()))
            board.wait(30)
        if board.now() < until:
            board.wait(until - board.now())

    for event in sorted([*steps, power_cut]):
        if event == power_cut:
            pass_hours(event)
            board.wait(FLUSH_S)  # what the node queued is on flash by now
            powered_off = board.now()
            board.power_cycle()
            station.wait_until(lambda off=powered_off: any(
                s.t > off and s.duty_u16 is not None for s in board.lamp_samples()),
                120, "lamp driven after the power cut")
            board.wait(60)
        else:
            pass_hours(event - LEAD_S)
            board.wait(LEAD_S - STEP_WINDOW_S)
            slowly(board, 2 * STEP_WINDOW_S + STEP_S)
            board.wait(30)
    pass_hours(end)
    back_at = board.now()
    print(f"12 street hours watched in {time.monotonic() - night_started:.0f} s")
    station.link_up()

    # The lamp, as its driver saw it: every driven sample away from the steps is at the
    # schedule's level, and so is the lamp each minute of the night.
    samples = board.lamp_samples()
    driven = [s for s in samples if s.duty_u16 is not None and s.t >= cut_at]

    def near_step(t: float) -> bool:
        return any(step - 2 <= t <= step + STEP_S for step in steps)

    wrong = [(s.t, s.duty_u16, duty(scheduled(s.t))) for s in driven
             if s.t < back_at and not near_step(s.t)
             and s.duty_u16 != duty(scheduled(s.t))]
    assert not wrong, wrong[:5]
    back = next(s for s in driven if s.t > powered_off)
    for minute in range(int(cut_at) + 60, int(back_at), 60):
        if near_step(minute) or powered_off <= minute <= back.t:
            continue
        last = [s for s in samples if s.t <= minute][-1]
        assert last.duty_u16 == duty(scheduled(minute)), (minute, last)
    # Never dark at night: from dusk (or the cut) to dawn (or the end) every driven sample
    # is lit, fades included.
    dusk = next(c.at for c in changes if c.level > 0)
    dawn = [c.at for c in changes if c.level == 0][-1]
    night = [s for s in driven if max(cut_at, dusk + STEP_S) <= s.t < min(back_at, dawn)]
    assert night and all(s.duty_u16 for s in night)
    # The power cut changed nothing: the lamp came back at 50 % and stayed there, from
    # boot to the next step, with no other level on the way.
    assert scheduled(powered_off) == 50
    next_step = min(s for s in steps if s > powered_off)
    held = [s.duty_u16 for s in driven if eleven + STEP_S < s.t < next_step]
    assert held and set(held) == {duty(50)}, held[:5]
    assert back.t - powered_off < 60  # undriven only while the board booted

    # Back online: the node reconnects and what it queued through the night arrives.
    station.wait_until(lambda: any(t.ts > back_at for t in lamp_readings(station, node)),
                       600, "readings made after the link came back")
    readings = [r for r in lamp_readings(station, node) if r.ts > cut_at - NIGHT_TELEMETRY_S]
    assert len({r.boot for r in readings}) == 2  # before and after the power cut
    # Nothing was dropped: the night fits the queue (its health messages say so).
    health = [json.loads(r.data) for r in station.uplinks(node, messages.HEALTH)]
    assert health and all(h["5"] == 0 for h in health), health
    assert readings[0].ts < cut_at and readings[-1].ts > back_at
    # After the power cut, with no link, the time came from the RTC chip: real time.
    assert all(r.tq != messages.TQ_UPTIME for r in readings), \
        [(r.boot, r.ts, r.tq) for r in readings if r.tq == messages.TQ_UPTIME][:3]
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(readings)]
    assert max(gaps) <= HOUR_S + NIGHT_TELEMETRY_S, gaps
    levels = {r.ts: json.loads(r.data)[LEVEL] for r in readings}
    assert all(level == scheduled(ts) for ts, level in levels.items() if not near_step(ts)), \
        levels
    assert station.births(node)[-1]["4"] == messages.RESET_POWER_ON
