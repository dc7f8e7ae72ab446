"""The lamp output the firmware drives, recorded for the rig's PWM meter testbench.

The file (read by rig/tb_pwm_meter.py through $CITISENSE_LAMP_WAVEFORM) is a JSON list of
segments in time order, one per change of the lamp driver's input:
    {"t": street seconds, "duty_u16": 0..65535, "freq": Hz, "commanded": percent}
"commanded" is present on the segment where the lamp had settled at a level an operator
commanded; the other segments are the fades between levels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hilkit.rig import Rig
from hilkit.station import Station

SETTLE_S = 2  # street seconds the lamp is left at each level before the next command


def record(board: Rig, station: Station, node: int, levels: list[int]) -> list[dict[str, Any]]:
    """Command each level in turn (a dim override) and record the lamp output."""
    settled: list[tuple[float, int]] = []  # (street time the level was held, level)
    for level in levels:
        station.run_command(station.dim(node, level, 3600))
        board.wait_lamp(level, 60)
        board.wait(SETTLE_S)
        settled.append((board.now(), level))
    segments: list[dict[str, Any]] = []
    for sample in board.lamp_samples():
        if sample.duty_u16 is None or sample.freq <= 0:
            continue  # not driven (a reset): nothing for the meter to measure
        segments.append({"t": sample.t, "duty_u16": sample.duty_u16, "freq": sample.freq})
    for held_at, level in settled:
        current = [s for s in segments if s["t"] <= held_at]
        assert current, f"no lamp output recorded before level {level} was held"
        current[-1]["commanded"] = level
    return segments


def write(path: Path, segments: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(segments, indent=1) + "\n")
    return path
