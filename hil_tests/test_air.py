"""Air quality on the board: the particulate sensor's fan cycle with its warm-up, and what
the node reports of the air it sampled."""

from __future__ import annotations

import pytest
from hilkit.rig import Rig
from hilkit.station import Station

from citisense_protocols import messages

pytestmark = [pytest.mark.hil, pytest.mark.virtual_board]

PM25, PM10, NO2, TEMP, RH, PRESSURE, FLAGS = range(7)  # air telemetry fields (0.1 ug/m3, ...)
PERIOD_S = 60  # the shortest fan cycle a node accepts: 30 s warm-up, 20 s measuring
SETTINGS = {"telemetry_s": 10, "pm_period_s": PERIOD_S}


@pytest.mark.requires("pm-stimulus")
def test_pm_is_sampled_after_the_fan_warms_up(board: Rig, station: Station) -> None:
    board.set_pm(40.0, 60.0)
    node = board.commission("air", settings=SETTINGS)
    first = station.wait_telemetry(node.id, lambda t: True, 60, "telemetry")
    # Before its first measuring window closes the node has no PM reading, and says so.
    assert first[PM25] is None and first[PM10] is None
    assert first[FLAGS] & messages.AIR_WARMUP
    # The optical counter under-reads while its fan spins up (about 60 % here): those
    # readings are discarded, so the first result is the air's, not a blend.
    sampled = station.wait_telemetry(node.id, lambda t: t[PM25] is not None, 2 * PERIOD_S,
                                     "a PM reading")
    assert sampled[PM25] == pytest.approx(400, rel=0.05)
    assert sampled[PM10] == pytest.approx(600, rel=0.05)
    assert sampled[TEMP] is not None and sampled[RH] is not None and sampled[NO2] is not None
    # The air gets worse: the next cycle, fan woken and warmed up again, reports it.
    board.set_pm(80.0, 120.0)
    worse = station.wait_telemetry(node.id, lambda t: t[PM25] is not None and t[PM25] > 600,
                                   2 * PERIOD_S + 30, "the next cycle's reading")
    assert worse[PM25] == pytest.approx(800, rel=0.05)
    assert worse[PM10] == pytest.approx(1200, rel=0.05)
    # Still flagged as warming up: the NO2 cell needs an hour after power-up.
    assert worse[FLAGS] & messages.AIR_WARMUP
    assert not [e for e in station.events(node.id) if e[0] == messages.EV_SENSOR_FAULT]
