"""What a node lives through: a hang that only the watchdog ends, a power cut in the middle
of a firmware deployment, and its gateway restarting while it reports."""

from __future__ import annotations

import itertools

import pytest
from hilkit.rig import PowerCut, Rig
from hilkit.station import Station

from citisense_protocols import messages

pytestmark = [pytest.mark.hil, pytest.mark.virtual_board]

RESET = "4"  # birth field: reset cause
FW = "0"  # birth field: firmware version
SETTINGS = {"telemetry_s": 10}


def test_the_watchdog_resets_a_hung_node_which_recovers(board: Rig, station: Station) -> None:
    node = board.commission("parking", settings=SETTINGS)
    station.wait_until(lambda: len(station.telemetry(node.id)) >= 2, 60, "telemetry")
    board.halt_application()
    station.wait_until(lambda: len(station.births(node.id)) >= 2, 120,
                       "a birth after the watchdog reset")
    assert station.births(node.id)[-1][RESET] == messages.RESET_WATCHDOG
    # It is back at work: reporting again, from its new boot.
    boot = station.uplinks(node.id, messages.BIRTH)[-1].boot
    station.wait_until(lambda: any(r.boot == boot for r in
                                   station.uplinks(node.id, messages.TELEMETRY)), 60,
                       "telemetry after the reset")
    assert station.twin(node.id).online


@pytest.mark.requires("power-cycle")
def test_a_power_cut_during_deployment_leaves_a_working_node(board: Rig,
                                                             station: Station) -> None:
    node = board.commission("parking", version="1.0.0")
    births = len(station.births(node.id))
    with pytest.raises(PowerCut):
        board.deploy("2.0.0", power_cut_after=60)  # in the middle of writing the new slot
    # The board comes back on the version it ran: the new one was never switched to.
    station.wait_until(lambda: len(station.births(node.id)) > births, 120,
                       "a birth after the power cut")
    assert station.births(node.id)[-1][FW] == "1.0.0"
    assert station.births(node.id)[-1][RESET] == messages.RESET_POWER_ON
    # The technician flashes again, and this time the new version runs.
    birth = board.deploy("2.0.0")
    assert birth.fw == "2.0.0" and birth.node == node.id
    station.wait_until(lambda: station.twin(node.id).firmware == "2.0.0", 60,
                       "the gateway seeing firmware 2.0.0")


def test_a_gateway_restart_loses_no_reading(board: Rig, station: Station) -> None:
    node = board.commission("air", settings=SETTINGS)
    station.wait_until(lambda: len(station.telemetry(node.id)) >= 2, 60, "telemetry")
    down_at = board.now()
    station.stop_gateway()
    board.wait(60)  # the node goes on reporting; the broker keeps the gateway's queue
    up_at = board.now()
    station.start_gateway()
    station.wait_until(lambda: any(r.ts > up_at + 20 for r in
                                   station.uplinks(node.id, messages.TELEMETRY)), 120,
                       "readings after the restart")
    stamps = [r.ts for r in station.uplinks(node.id, messages.TELEMETRY)
              if r.tq != messages.TQ_UPTIME]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert stamps[0] < down_at and max(gaps) <= SETTINGS["telemetry_s"] + 2, gaps
    assert len([t for t in stamps if down_at < t < up_at]) >= 5  # made while it was down
    # And the gateway still commands the node: a command issued after the restart runs.
    station.run_command(station.command(node.id, messages.OP_IDENTIFY, 5))
