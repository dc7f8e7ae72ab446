"""Parking bays on the board: a car arrives and leaves while the sensor's field drifts with
the weather, and a reservation shows on the bay and ends with the window."""

from __future__ import annotations

import pytest
from hilkit.rig import Rig
from hilkit.station import Station

from citisense_protocols import messages

pytestmark = [pytest.mark.hil, pytest.mark.virtual_board]

STATE, INDICATOR, _DZ, _CONFIDENCE, FLAGS = range(5)  # parking telemetry fields
SETTINGS = {"telemetry_s": 10}  # a reading every 10 street seconds, for quick checks
WINDOW_S = 90  # the reservation window
BAY_EVENTS = (messages.EV_BAY_OCCUPIED, messages.EV_BAY_FREE)


def free_bay(board: Rig, station: Station) -> int:
    """A parking node over an empty bay, calibrated (it reports the bay free)."""
    node = board.commission("parking", settings=SETTINGS)
    station.wait_telemetry(node.id, lambda t: t[STATE] == messages.BAY_FREE
                           and not t[FLAGS] & messages.PARKING_CALIBRATING, 120,
                           "the calibrated bay reported free")
    return node.id


def bay_events(station: Station, node: int) -> list[tuple[int, int]]:
    return [e for e in station.events(node) if e[0] in BAY_EVENTS]


def last_state(station: Station, node: int) -> list[object]:
    return station.telemetry(node)[-1]


@pytest.mark.requires("parking-stimulus")
def test_a_car_arrives_and_leaves_while_the_field_drifts(board: Rig,
                                                         station: Station) -> None:
    node = free_bay(board, station)
    # A cold front while the bay is empty: the baseline follows, nothing is detected.
    for _ in range(3):
        board.drift(-2)
        board.wait(15)
    assert bay_events(station, node) == []
    parked_at = board.now()
    board.park()
    station.wait_until(lambda: len(bay_events(station, node)) == 1, 60, "bay_occupied event")
    assert bay_events(station, node)[0][0] == messages.EV_BAY_OCCUPIED
    # A long stay through a colder night: 25 degrees of drift under the parked car, more
    # than the detector's hysteresis band holds once the car has gone.
    for _ in range(5):
        board.drift(-5)
        board.wait(10)
    left_at = board.now()
    board.leave()
    station.wait_until(lambda: len(bay_events(station, node)) == 2, 120, "bay_free event")
    kind, occupied_s = bay_events(station, node)[1]
    assert kind == messages.EV_BAY_FREE
    stay = left_at - parked_at
    assert stay - 5 <= occupied_s <= stay + 60, (occupied_s, stay)
    # The empty bay stays free: no ghost car left behind by the drift.
    board.wait(30)
    assert len(bay_events(station, node)) == 2
    assert last_state(station, node)[STATE] == messages.BAY_FREE


@pytest.mark.requires("parking-stimulus")
def test_a_reservation_shows_on_the_bay_until_its_window_ends(board: Rig,
                                                              station: Station) -> None:
    node = free_bay(board, station)
    start = board.now()
    station.run_command(station.reserve(node, start, start + WINDOW_S))
    station.wait_telemetry(node, lambda t: t[INDICATOR] == messages.INDICATOR_RESERVED, 60,
                           "the bay showing reserved")
    # The holder arrives: the bay shows taken, and taken during its reservation.
    board.park()
    record = station.wait_telemetry(node, lambda t: t[STATE] == messages.BAY_OCCUPIED, 60,
                                    "the bay occupied")
    assert record[INDICATOR] == messages.INDICATOR_OCCUPIED
    assert record[FLAGS] & messages.PARKING_RESERVED_TAKEN
    board.leave()
    station.wait_until(lambda: last_state(station, node)[INDICATOR]
                       == messages.INDICATOR_RESERVED, 60, "reserved again once left")
    # The window ends: the bay is offered as free again, without any command.
    station.wait_until(lambda: last_state(station, node)[INDICATOR]
                       == messages.INDICATOR_FREE, 240, "the reservation ending")
    assert board.now() >= start + WINDOW_S
    assert station.twin(node).indicator == messages.INDICATOR_FREE
