"""cocotb testbench for pwm_meter.v: measured duty equals the driven duty within 1 %.

The PWM waveform is either a set of synthetic cases or, when CITISENSE_LAMP_WAVEFORM
names a JSON file, the lamp output recorded from the firmware on the HIL rig's board
(hil_tests/hilkit/waveform.py: segments {"duty_u16": int, "freq": int} in time order,
with "commanded": percent where the lamp had settled at a level an operator commanded).
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer

CLOCK_NS = 1000  # 1 MHz rig clock
FULL_SCALE = 65535
TOLERANCE = FULL_SCALE // 100  # 1 % of full scale


async def start(dut) -> None:
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.pwm_in.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0


async def play(dut, duty_u16: int, freq: int, periods: int) -> None:
    """Drive `periods` PWM periods; 0 and full duty hold the pin steady."""
    period_ns = 1_000_000_000 // freq
    high_ns = period_ns * duty_u16 // FULL_SCALE
    for _ in range(periods):
        if high_ns > 0:
            dut.pwm_in.value = 1
            await Timer(high_ns, unit="ns")
        if period_ns - high_ns > 0:
            dut.pwm_in.value = 0
            await Timer(period_ns - high_ns, unit="ns")


async def measure(dut, duty_u16: int, freq: int) -> tuple[int, int]:
    """Play a segment and return the meter's last (duty_u16, period) report."""
    reports: list[tuple[int, int]] = []

    async def monitor() -> None:
        # Wake once per report, not once per clock: keeps the simulation fast.
        while True:
            await RisingEdge(dut.valid)
            await ReadOnly()
            reports.append((int(dut.duty_u16.value), int(dut.period.value)))

    watcher = cocotb.start_soon(monitor())
    steady = duty_u16 in (0, FULL_SCALE)
    if steady:
        dut.pwm_in.value = 1 if duty_u16 else 0
        await Timer((int(dut.TIMEOUT.value) * 2 + 10) * CLOCK_NS, unit="ns")
    else:
        await play(dut, duty_u16, freq, periods=4)
    watcher.cancel()
    assert reports, f"meter reported nothing for duty {duty_u16} at {freq} Hz"
    return reports[-1]


def check(duty_u16: int, freq: int, measured: tuple[int, int]) -> None:
    got_duty, got_period = measured
    assert abs(got_duty - duty_u16) <= TOLERANCE, (
        f"duty {duty_u16} at {freq} Hz measured as {got_duty}"
    )
    if duty_u16 not in (0, FULL_SCALE):
        expected_period = 1_000_000_000 // freq // CLOCK_NS
        assert abs(got_period - expected_period) <= 1, (
            f"period at {freq} Hz: expected {expected_period} cycles, got {got_period}"
        )


@cocotb.test()
async def synthetic_duties_and_frequencies(dut) -> None:
    await start(dut)
    for freq in (200, 1000, 5000):
        for percent in (1, 10, 33, 50, 75, 99):
            duty = FULL_SCALE * percent // 100
            check(duty, freq, await measure(dut, duty, freq))


@cocotb.test()
async def steady_pin_reports_off_and_full(dut) -> None:
    await start(dut)
    check(FULL_SCALE, 1000, await measure(dut, FULL_SCALE, 1000))
    check(0, 1000, await measure(dut, 0, 1000))


@cocotb.test(skip=not os.environ.get("CITISENSE_LAMP_WAVEFORM"))
async def firmware_lamp_waveform(dut) -> None:
    """The lamp output the firmware produced, segment by segment: each is measured as
    driven, and each commanded level is read back within 1 % of full scale."""
    with open(os.environ["CITISENSE_LAMP_WAVEFORM"]) as handle:
        segments = json.load(handle)
    assert segments, "recorded lamp waveform is empty"
    commanded = [s for s in segments if "commanded" in s]
    assert commanded, "the recording marks no commanded level"
    await start(dut)
    for segment in segments:
        duty, freq = int(segment["duty_u16"]), int(segment["freq"])
        measured = await measure(dut, duty, freq)
        check(duty, freq, measured)
        if "commanded" in segment:
            level = int(segment["commanded"])
            got = measured[0] * 100 / FULL_SCALE
            assert abs(got - level) <= 1, f"commanded {level} %, the lamp received {got:.2f} %"
