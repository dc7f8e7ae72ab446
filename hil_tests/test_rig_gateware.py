"""Rig gateware: cocotb testbenches on Icarus Verilog (marker `rtl`), one of them fed with
the lamp output of the firmware itself, recorded on the HIL rig's board."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hilkit import waveform
from hilkit.rig import Rig
from hilkit.station import Station

RIG = Path(__file__).resolve().parent / "rig"

pytestmark = pytest.mark.rtl


def run_testbench(
    toplevel: str,
    testbench: str,
    build_dir: Path,
    parameters: dict[str, int] | None = None,
    extra_env: dict[str, str] | None = None,
    testcase: str | None = None,
) -> None:
    """Build the design with Icarus and run its cocotb testbench; fail on any failed test."""
    if shutil.which("iverilog") is None:
        pytest.fail("Icarus Verilog is missing: apt-get install iverilog (make test installs it)")
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    runner = get_runner("icarus")
    runner.build(
        sources=[RIG / f"{toplevel}.v"],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        always=True,
        parameters=parameters or {},
        timescale=("1ns", "1ps"),
    )
    results = runner.test(
        hdl_toplevel=toplevel,
        test_module=testbench,
        test_dir=RIG,
        build_dir=build_dir,
        results_xml=str(build_dir / "results.xml"),
        extra_env=extra_env or {},
        testcase=testcase,
    )
    total, failed = get_results(Path(results))
    assert total > 0, f"{testbench} ran no test"
    assert failed == 0, f"{failed} of {total} cocotb tests failed in {testbench} (see log above)"


def test_pwm_meter_measures_duty_and_frequency(tmp_path: Path) -> None:
    # 10 ms without an edge means a steady pin: lamp drivers run at 100 Hz or faster.
    run_testbench("pwm_meter", "tb_pwm_meter", tmp_path, parameters={"TIMEOUT": 10_000})


def test_uart_injector_sends_sds011_frames(tmp_path: Path) -> None:
    run_testbench("uart_injector", "tb_uart_injector", tmp_path)


# Levels an operator commands: both ends (a steady pin), 1 % and the range between, in
# order, so the fades between them stay short (the simulation plays every step).
COMMANDED = [0, 1, 10, 33, 50, 90, 100]


@pytest.mark.virtual_board
@pytest.mark.hil
@pytest.mark.requires("lamp-capture")
def test_pwm_meter_measures_the_firmware_lamp_output(board: Rig, station: Station,
                                                     tmp_path: Path) -> None:
    # The firmware on the rig's board drives its lamp at each commanded level; the meter,
    # fed that very waveform, must read every level back within 1 %.
    node = board.commission("lighting")
    segments = waveform.record(board, station, node.id, COMMANDED)
    recorded = waveform.write(tmp_path / "lamp-waveform.json", segments)
    assert [s["commanded"] for s in segments if "commanded" in s] == COMMANDED
    run_testbench("pwm_meter", "tb_pwm_meter", tmp_path / "sim", parameters={"TIMEOUT": 10_000},
                  extra_env={"CITISENSE_LAMP_WAVEFORM": str(recorded)},
                  testcase="firmware_lamp_waveform")
