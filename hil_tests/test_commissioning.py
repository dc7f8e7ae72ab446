"""Flash and commission: a blank board becomes a working node with the technician's
commands, and the gateway sees it as the node it registered."""

from __future__ import annotations

import pytest
from hilkit.rig import Rig
from hilkit.station import Station

from citisense_protocols import messages

pytestmark = [pytest.mark.hil, pytest.mark.virtual_board]


@pytest.mark.parametrize("role", ["lighting", "parking", "air"])
def test_a_blank_board_is_flashed_and_commissioned(board: Rig, station: Station,
                                                   role: str) -> None:
    node = board.commission(role, version="1.0.0")
    # citisense flash checked the birth against the config it wrote; the gateway agrees.
    assert (node.birth.fw, node.birth.role, node.birth.board) == ("1.0.0", role,
                                                                 board.board_definition)
    assert node.birth.loc == (node.config["location"]["lat"], node.config["location"]["lon"])
    twin = station.twin(node.id)
    assert twin.online and twin.firmware == "1.0.0" and twin.board == board.board_definition
    # It reports, in its role's format, stamped with the time the gateway gave it.
    record = station.wait_telemetry(node.id, lambda t: True, 120, "telemetry")
    assert len(record) == {"lighting": 6, "parking": 5, "air": 7}[role]
    station.wait_until(lambda: any(r.tq == messages.TQ_GATEWAY
                                   for r in station.uplinks(node.id, messages.TELEMETRY)),
                       120, "telemetry stamped with the gateway's time")
    # Nothing it sent was refused: right key, right topics, within the contract.
    assert station.quarantined() == []
