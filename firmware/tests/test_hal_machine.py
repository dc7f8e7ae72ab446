"""The `machine` HAL and its drivers against the sensor models of the virtual board.

citisense_boards.sensors models each chip from its datasheet (register images, UART
frames, analog front ends); a small stand-in for MicroPython's `machine` module wires
them to the HAL as a board definition says, so the drivers' decoding is checked against
an independent encoding of the same datasheet.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import importlib
import struct
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citisense_boards import sensors
from citisense_boards.definitions import load
from citisense_protocols import messages

# A board with every peripheral fitted (pin functions and driver names as in
# citisense_boards.definitions).
BOARD: dict[str, Any] = {
    "name": "test-board",
    "network": {"kind": "wlan"},
    "pins": {"lamp_pwm": 25, "light_adc": 34, "no2_adc": 35, "indicator": 26, "status_led": 2,
             "i2c_sda": 21, "i2c_scl": 22, "pm_tx": 17, "pm_rx": 16},
    "buses": {"i2c": {"id": 0, "freq": 100000}, "pm_uart": {"id": 2, "baud": 9600}},
    "drivers": {"lamp": "pwm", "light": "adc", "power": "ina219", "magnetometer": "qmc5883l",
                "indicator": "ws2812", "pm": "pms5003", "climate": "bme280", "no2": "adc",
                "rtc": "pcf8563"},
}
CONDITIONS = {"celsius": 21.5, "pascal": 101_325.0, "humidity": 55.0}


class Bus:
    """I2C devices by address, each a sensor model with its register image."""

    def __init__(self) -> None:
        self.street = 1_800_000_000.0  # the street's time, which the RTC chip counts
        self.bme = sensors.BME280()
        self.qmc = sensors.QMC5883L()
        self.rtc = sensors.PCF8563(lambda: self.street)
        self.models: dict[int, Any] = {m.ADDRESS: m for m in (self.bme, self.qmc, self.rtc)}
        self.images = {address: bytearray(m.registers()) for address, m in self.models.items()}
        self.field_ut = (16.0, 2.0, -44.0)
        self.writes: list[tuple[int, int, bytes]] = []

    def refresh(self) -> None:
        bme = self.images[self.bme.ADDRESS]
        bme[0xF7:0xFF] = self.bme.data_registers(**CONDITIONS)
        data = self.qmc.data_registers(self.field_ut, CONDITIONS["celsius"])
        if data is not None:
            self.images[self.qmc.ADDRESS][0:9] = data
        if self.rtc.ADDRESS in self.images:
            self.images[self.rtc.ADDRESS][:] = self.rtc.registers()


class Machine(types.ModuleType):
    """Just enough of MicroPython's machine module, over the models."""

    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5

    def __init__(self) -> None:
        super().__init__("machine")
        self.bus = Bus()
        self.sds = sensors.SDS011()
        self.pm = (12.0, 20.0)
        self.uv = {34: 45_000, 35: 640_000}  # light: 45 lux at 1 mV/lux; NO2 front end
        self.pwm: list[tuple[int, int]] = []  # (pin, duty_u16) as set
        self.cause = self.WDT_RESET
        machine = self

        class Pin:
            OUT, IN = 3, 1

            def __init__(self, pin: int, mode: int = -1, value: int | None = None) -> None:
                self.id = pin
                self.level = value

            def value(self, level: int | None = None) -> int | None:
                if level is not None:
                    self.level = level
                return self.level

        class PWM:
            def __init__(self, pin: Pin, freq: int, duty_u16: int) -> None:
                self.pin = pin
                machine.pwm.append((pin.id, duty_u16))

            def duty_u16(self, duty: int) -> None:
                machine.pwm.append((self.pin.id, duty))

        class ADC:
            ATTN_11DB = 3

            def __init__(self, pin: Pin) -> None:
                self.pin = pin.id

            def atten(self, value: int) -> None:
                assert value == self.ATTN_11DB

            def read_uv(self) -> int:
                return machine.uv[self.pin]

        class I2C:
            def __init__(self, bus: int, scl: Pin, sda: Pin, freq: int) -> None:
                assert (scl.id, sda.id) == (BOARD["pins"]["i2c_scl"], BOARD["pins"]["i2c_sda"])

            def readfrom_mem(self, address: int, register: int, size: int) -> bytes:
                if address not in machine.bus.images:
                    raise OSError(19)  # ENODEV: nothing answers
                machine.bus.refresh()
                return bytes(machine.bus.images[address][register:register + size])

            def writeto_mem(self, address: int, register: int, data: bytes) -> None:
                if address not in machine.bus.images:
                    raise OSError(19)
                machine.bus.writes.append((address, register, bytes(data)))
                machine.bus.models[address].on_write(register, bytes(data))

        class UART:
            def __init__(self, bus: int, baud: int, tx: int, rx: int) -> None:
                assert baud == sensors.SDS011.BAUD
                self.rx = b""

            def write(self, data: bytes) -> None:
                self.rx += machine.sds.receive(data, 100.0, *machine.pm)

            def any(self) -> int:
                self.rx += machine.sds.report(100.0, *machine.pm)
                return len(self.rx)

            def read(self, size: int) -> bytes:
                out, self.rx = self.rx[:size], self.rx[size:]
                return out

        class RTC:
            """The ESP32's clock: Unix seconds in machine.clock (time.time() reads it)."""

            def datetime(self, fields: tuple[int, ...]) -> None:
                y, mo, d, _weekday, h, mi, sec, _ = fields
                machine.clock = calendar.timegm((y, mo, d, h, mi, sec))

        self.clock = 946_684_800  # 2000-01-01: an ESP32 after power-on
        self.Pin, self.PWM, self.ADC, self.I2C, self.UART = Pin, PWM, ADC, I2C, UART
        self.RTC = RTC

    def reset_cause(self) -> int:
        return self.cause


@pytest.fixture
def machine() -> Iterator[Machine]:
    fake = Machine()
    saved = {name: sys.modules.get(name) for name in ("machine", "citisense_firmware.hal_machine")}
    sys.modules["machine"] = fake
    sys.modules.pop("citisense_firmware.hal_machine", None)
    yield fake
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def make_hal(board: dict[str, Any] = BOARD) -> Any:
    hal_machine = importlib.import_module("citisense_firmware.hal_machine")
    return hal_machine.MachineHal(board)


def test_a_board_definition_says_what_is_fitted(machine: Machine) -> None:
    assert set(make_hal().parts) == {"lamp", "light", "power", "magnetometer", "indicator",
                                     "pm", "climate", "no2", "rtc", "status_led"}
    bare = dict(BOARD, pins={"lamp_pwm": 25}, drivers={"lamp": "pwm", "pm": "sds011"})
    assert make_hal(bare).parts == ("lamp",)  # the PM sensor has no UART pins
    virtual = make_hal(load("virtual-esp32"))
    for needs in (("lamp", "light"), ("magnetometer",), ("pm", "climate", "no2")):
        assert set(needs) <= set(virtual.parts)  # the virtual board carries every role


def test_lamp_output_is_pwm_set_once_with_its_first_duty(machine: Machine) -> None:
    hal = make_hal()
    hal.lamp_output(100)
    hal.lamp_output(30)
    pin = BOARD["pins"]["lamp_pwm"]
    assert machine.pwm == [(pin, 65535), (pin, 65535 * 30 // 100)]


def test_bme280_readings_match_the_datasheet_model(machine: Machine) -> None:
    celsius, humidity, hpa = make_hal().climate()
    assert celsius == pytest.approx(CONDITIONS["celsius"], abs=0.02)
    assert humidity == pytest.approx(CONDITIONS["humidity"], abs=0.1)
    assert hpa == pytest.approx(CONDITIONS["pascal"] / 100, abs=0.02)


def test_magnetometer_reads_the_field_in_nanotesla(machine: Machine) -> None:
    hal = make_hal()
    x, y, z = hal.magnetic_field()
    assert (x, y, z) == pytest.approx((16_000, 2_000, -44_000), abs=40)  # 8 G range LSB
    machine.bus.field_ut = (16.0, 2.0, -1200.0)  # beyond what the 8 G range counts
    assert hal.magnetic_field() is None


def test_a_missing_chip_reads_as_none_and_is_tried_again(machine: Machine) -> None:
    hal = make_hal()
    images = machine.bus.images
    bme = images.pop(sensors.BME280.ADDRESS)
    assert hal.climate() is None
    images[sensors.BME280.ADDRESS] = bme
    assert hal.climate() is not None
    assert hal.lamp_feedback() == (None, 0)  # no INA219 on the bus: no power reading


def test_sds011_frames_and_sleep_command(machine: Machine) -> None:
    hal = make_hal(dict(BOARD, drivers=dict(BOARD["drivers"], pm="sds011")))
    pm25, pm10 = hal.pm_reading()
    assert (pm25, pm10) == (12.0, 20.0)
    assert hal.pm_reading() is None  # nothing new since: never the last value again
    hal.pm_power(False)
    assert not machine.sds.working  # the sensor understood the sleep command


def test_pms5003_frames_are_parsed_and_checked() -> None:
    pm_uart = importlib.import_module("citisense_firmware.drivers.pm_uart")
    words = [1, 2, 3, 4, 15, 27, 0, 0, 0, 0, 0, 0, 0]
    body = b"\x42\x4d" + struct.pack(">H", 28) + struct.pack(">13H", *words)
    frame = body + struct.pack(">H", sum(body))

    class Uart:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def any(self) -> int:
            return len(self.data)

        def read(self, size: int) -> bytes:
            out, self.data = self.data[:size], self.data[size:]
            return out

    assert pm_uart.PMS5003(Uart(b"\x00noise" + frame)).poll() == (15, 27)
    broken = frame[:-1] + bytes([frame[-1] ^ 1])
    assert pm_uart.PMS5003(Uart(broken)).poll() is None


def test_analog_front_ends_and_reset_cause(machine: Machine) -> None:
    hal = make_hal()
    assert hal.ambient_lux() == pytest.approx(45.0)
    assert hal.no2_volts() == (0.64, None)
    assert hal.reset_cause() == messages.RESET_WATCHDOG
    assert asyncio.iscoroutinefunction(hal.network_up)


# ---- the RTC chip (PCF8563): firmware codec against the board's model -----------------

pcf8563 = importlib.import_module("citisense_firmware.drivers.pcf8563")
UNIX_2000, UNIX_2200 = 946_684_800, 7_258_118_400
times = st.integers(UNIX_2000, UNIX_2200 - 1)


@given(times)
def test_the_rtc_codec_reads_and_writes_what_the_chip_model_holds(unix: int) -> None:
    assert pcf8563.decode(sensors.encode_pcf8563(unix)) == unix
    written = pcf8563.encode(unix)
    assert written[:2] == b"\x00\x00"  # clock running, no test mode, no interrupts
    assert sensors.decode_pcf8563(written[2:]) == unix
    sunday_first = (dt.datetime.fromtimestamp(unix, dt.UTC).weekday() + 1) % 7
    assert written[6] == sunday_first == sensors.encode_pcf8563(unix)[4]


@given(times)
def test_a_chip_that_lost_power_has_no_time(unix: int) -> None:
    assert pcf8563.decode(sensors.encode_pcf8563(unix, vl=True)) is None


@given(st.binary(min_size=7, max_size=7))
def test_any_register_bytes_decode_to_a_real_time_or_none(regs: bytes) -> None:
    unix = pcf8563.decode(regs)
    assert unix is None or sensors.decode_pcf8563(regs) == unix
    if unix is not None:
        assert UNIX_2000 <= unix < UNIX_2200


def test_rtc_codec_examples_from_the_datasheet() -> None:
    # 59 s (x101 1001), 23:59, 29 February 2024, VL clear; the century bit is 21xx.
    assert pcf8563.decode(bytes([0x59, 0x59, 0x23, 0x29, 4, 0x02, 0x24])) == \
        calendar.timegm((2024, 2, 29, 23, 59, 59))
    assert pcf8563.decode(bytes([0, 0, 0, 0x01, 5, 0x81, 0x00])) == \
        calendar.timegm((2100, 1, 1, 0, 0, 0))
    for bad in ([0x60, 0, 0, 1, 0, 1, 0],  # 60 s
                [0, 0, 0x24, 1, 0, 1, 0],  # 24 h
                [0, 0, 0, 0x00, 0, 1, 0],  # day 0
                [0, 0, 0, 1, 0, 0x13, 0],  # month 13
                [0, 0, 0, 1, 0, 1, 0x1A],  # not BCD
                [0, 0, 0, 1, 0, 1, 0xA0],
                [0, 0, 0, 0x30, 0, 2, 0x24]):  # 30 February
        assert pcf8563.decode(bytes(bad)) is None, bad


@pytest.fixture
def powered_up(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> Machine:
    """A board just after a power cut: its ESP32 clock at 2000, time.time() reading it."""
    monkeypatch.setattr(importlib.import_module("citisense_firmware.hal_machine"), "time",
                        types.SimpleNamespace(time=lambda: machine.clock, gmtime=time.gmtime))
    return machine


def test_after_a_power_cut_the_time_comes_from_the_rtc_chip(powered_up: Machine) -> None:
    machine = powered_up
    hal = make_hal()
    assert hal.rtc_time() is None  # a new chip: VL set, its time means nothing
    hal.set_rtc(1_800_000_123)  # a time sync writes both clocks
    assert not machine.bus.rtc.vl
    assert machine.clock == 1_800_000_123
    machine.clock = UNIX_2000  # the power is cut; the chip's battery keeps it counting
    machine.bus.street += 3600
    assert hal.rtc_time() == 1_800_003_723
    assert machine.clock == 1_800_003_723  # and the ESP32's clock is set from it


def test_an_rtc_chip_that_fails_or_lost_its_battery_gives_no_time(powered_up: Machine) -> None:
    machine = powered_up
    hal = make_hal()
    hal.set_rtc(1_800_000_000)
    machine.clock = UNIX_2000
    machine.bus.rtc.vl = True  # the backup cell ran flat while the power was off
    assert hal.rtc_time() is None
    machine.bus.rtc.vl = False
    machine.bus.images.pop(sensors.PCF8563.ADDRESS)  # the chip does not answer
    assert hal.rtc_time() is None
    hal.set_rtc(1_800_000_000)  # nor does writing it fail the time sync
    assert machine.clock == 1_800_000_000
    bare = make_hal(dict(BOARD, drivers={"lamp": "pwm"}))
    machine.clock = UNIX_2000
    assert bare.rtc_time() is None  # no chip fitted
