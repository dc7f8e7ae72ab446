"""cocotb testbench for uart_injector.v: an SDS011 frame leaves the pin with 8N1 timing."""

from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

CLOCK_NS = 1000  # 1 MHz


def sds011_frame(pm25_x10: int, pm10_x10: int, device_id: int = 0xA1B2) -> bytes:
    """A measurement frame as an SDS011 sends it (0xAA 0xC0 ... checksum 0xAB)."""
    data = bytes(
        [pm25_x10 & 0xFF, pm25_x10 >> 8, pm10_x10 & 0xFF, pm10_x10 >> 8,
         device_id & 0xFF, device_id >> 8]
    )
    return bytes([0xAA, 0xC0]) + data + bytes([sum(data) & 0xFF, 0xAB])


async def receive_byte(dut, bit_ns: int) -> int:
    """Sample one 8N1 character in the middle of each bit, as a UART receiver does."""
    await FallingEdge(dut.tx)
    await Timer(bit_ns // 2, unit="ns")
    assert dut.tx.value == 0, "start bit not held low"
    value = 0
    for bit in range(8):
        await Timer(bit_ns, unit="ns")
        value |= int(dut.tx.value) << bit
    await Timer(bit_ns, unit="ns")
    assert dut.tx.value == 1, "stop bit not high"
    return value


@cocotb.test()
async def sds011_frame_on_the_wire(dut) -> None:
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    dut.wr_en.value = 0
    dut.wr_data.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    assert dut.tx.value == 1, "line must idle high"

    frame = sds011_frame(pm25_x10=123, pm10_x10=456)
    bit_ns = int(dut.CLKS_PER_BIT.value) * CLOCK_NS
    received: list[int] = []

    async def receiver() -> None:
        for _ in frame:
            received.append(await receive_byte(dut, bit_ns))

    listening = cocotb.start_soon(receiver())
    for byte in frame:
        while dut.full.value == 1:
            await RisingEdge(dut.clk)
        dut.wr_data.value = byte
        dut.wr_en.value = 1
        await RisingEdge(dut.clk)
    dut.wr_en.value = 0
    await listening
    assert bytes(received) == frame
    assert received[-2] == sum(received[2:8]) & 0xFF, "checksum byte corrupted"
    await ClockCycles(dut.clk, 2 * int(dut.CLKS_PER_BIT.value))
    assert dut.idle.value == 1
