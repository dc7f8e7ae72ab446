"""The street's sensors speak their datasheets: registers, frames and voltages."""

from __future__ import annotations

import random
import struct

from hypothesis import given
from hypothesis import strategies as st

from citisense_boards.sensors import (
    BME280,
    LIGHT_SENSOR,
    NO2_SENSOR,
    PCF8563,
    QMC5883L,
    SDS011,
    BME280Calibration,
    decode_pcf8563,
    encode_pcf8563,
)


def measuring_bme280() -> BME280:
    bme = BME280()
    bme.on_write(BME280.REG_CTRL_MEAS, bytes([0b001_001_01]))  # forced mode, x1 oversampling
    return bme


def test_bme280_register_image_has_chip_id_and_the_calibration_a_driver_reads() -> None:
    cal = BME280Calibration()
    regs = BME280().registers()
    assert regs[0xD0] == 0x60
    t1, t2, t3, p1, *p = struct.unpack("<HhhHhhhhhhhh", regs[0x88:0xA0])
    assert (t1, t2, t3, p1, *p) == (cal.t1, cal.t2, cal.t3, cal.p1, cal.p2, cal.p3, cal.p4,
                                    cal.p5, cal.p6, cal.p7, cal.p8, cal.p9)
    assert regs[0xA1] == cal.h1
    h2, h3, e4, e5, e6, h6 = struct.unpack("<hBBBBb", regs[0xE1:0xE8])
    assert (h2, h3, h6) == (cal.h2, cal.h3, cal.h6)
    assert (e4 << 4) | (e5 & 0x0F) == cal.h4  # the datasheet's split 12-bit fields
    assert (e6 << 4) | (e5 >> 4) == cal.h5


def test_bme280_data_reads_reset_values_until_a_measurement_is_started() -> None:
    bme = BME280()
    assert bme.data_registers(20.0, 101325.0, 50.0) == bytes.fromhex("8000008000008000")
    bme.on_write(BME280.REG_CTRL_MEAS, bytes([0x25]))
    assert bme.data_registers(20.0, 101325.0, 50.0) != bytes.fromhex("8000008000008000")
    bme.on_write(BME280.REG_RESET, bytes([BME280.SOFT_RESET]))
    assert not bme.measuring


@given(
    celsius=st.floats(-30, 60),
    pascal=st.floats(80_000, 110_000),
    humidity=st.floats(0, 100),
)
def test_bme280_compensation_of_the_raw_registers_gives_back_the_conditions(
    celsius: float, pascal: float, humidity: float
) -> None:
    bme = measuring_bme280()
    data = bme.data_registers(celsius, pascal, humidity)
    adc_p = (data[0] << 12) | (data[1] << 4) | (data[2] >> 4)
    adc_t = (data[3] << 12) | (data[4] << 4) | (data[5] >> 4)
    adc_h = (data[6] << 8) | data[7]
    t, t_fine = bme.temperature(adc_t)
    assert abs(t - celsius) <= 0.01
    assert abs(bme.pressure(adc_p, t_fine) - pascal) <= 2.0
    assert abs(bme.humidity(adc_h, t_fine) - humidity) <= 0.05


def test_qmc5883l_reports_only_in_continuous_mode_scaled_by_its_range() -> None:
    mag = QMC5883L()
    assert mag.registers()[0x0D] == 0xFF
    assert mag.data_registers((10.0, -20.0, 40.0), 21.0) is None  # standby after power-on
    mag.on_write(QMC5883L.REG_CONTROL1, bytes([0b00_00_01_01]))  # 2 G range, continuous
    x, y, z, status, temp = struct.unpack("<hhhBh", mag.data_registers((10.0, -20.0, 40.0), 21.0))
    assert (x, y, z) == (1200, -2400, 4800)  # 12000 LSB/G, 1 G = 100 uT
    assert status & 0x01 and not status & 0x02
    assert temp == 2100
    mag.on_write(QMC5883L.REG_CONTROL1, bytes([0b00_01_01_01]))  # 8 G range
    assert struct.unpack("<hhh", mag.data_registers((10.0, -20.0, 40.0), 21.0)[:6]) == (
        300, -600, 1200
    )


def test_qmc5883l_flags_overflow_and_soft_reset_returns_to_standby() -> None:
    mag = QMC5883L()
    mag.on_write(QMC5883L.REG_CONTROL1, bytes([0x01]))
    regs = mag.data_registers((500.0, 0.0, 0.0), 20.0)
    assert regs is not None and struct.unpack("<h", regs[:2])[0] == 32767 and regs[6] & 0x02
    mag.on_write(QMC5883L.REG_CONTROL2, bytes([0x80]))
    assert mag.data_registers((1.0, 1.0, 1.0), 20.0) is None


def command(cmd: int, data: bytes = b"", device: int = 0xFFFF) -> bytes:
    body = bytes([cmd]) + data.ljust(12, b"\0") + device.to_bytes(2, "big")
    return b"\xaa\xb4" + body + bytes([sum(body) & 0xFF, 0xAB])


def parse_frame(frame: bytes) -> tuple[int, bytes]:
    assert len(frame) == 10 and frame[0] == 0xAA and frame[9] == 0xAB
    assert sum(frame[2:8]) & 0xFF == frame[8]
    return frame[1], frame[2:8]


def test_sds011_data_frame_layout_and_checksum() -> None:
    kind, payload = parse_frame(SDS011(device_id=0x1234).data_frame(12.3, 45.6))
    assert kind == 0xC0
    assert struct.unpack("<HH", payload[:4]) == (123, 456)
    assert payload[4:] == b"\x12\x34"


def test_sds011_reports_each_second_in_active_mode_after_warm_up() -> None:
    sds = SDS011(woke_at=-100.0)
    assert parse_frame(sds.report(0.0, 10.0, 20.0))[0] == 0xC0
    assert sds.report(0.5, 10.0, 20.0) == b""
    _, payload = parse_frame(sds.report(1.0, 10.0, 20.0))
    assert struct.unpack("<HH", payload[:4]) == (100, 200)


def test_sds011_query_mode_sleep_and_wake_follow_the_protocol() -> None:
    sds = SDS011(woke_at=-100.0)
    kind, payload = parse_frame(sds.receive(command(2, b"\x01\x01"), 0.0, 10.0, 20.0))
    assert (kind, payload[:3]) == (0xC5, b"\x02\x01\x01")  # set, query mode
    assert sds.report(5.0, 10.0, 20.0) == b""  # no unsolicited frames in query mode
    kind, _ = parse_frame(sds.receive(command(4), 5.0, 10.0, 20.0))
    assert kind == 0xC0
    parse_frame(sds.receive(command(6, b"\x01\x00"), 6.0, 10.0, 20.0))  # sleep
    assert sds.receive(command(4), 7.0, 10.0, 20.0) == b""  # a sleeping sensor stays silent
    kind, payload = parse_frame(sds.receive(command(6, b"\x01\x01"), 8.0, 10.0, 20.0))
    assert payload[:3] == b"\x06\x01\x01"
    _, payload = parse_frame(sds.receive(command(4), 9.0, 10.0, 20.0))
    assert struct.unpack("<H", payload[:2])[0] < 100  # still warming up: reads low


def test_sds011_ignores_commands_for_another_device_and_bad_checksums() -> None:
    sds = SDS011(device_id=0x0001)
    assert sds.receive(command(4, device=0x0002), 0.0, 1.0, 2.0) == b""
    bad = bytearray(command(4))
    bad[17] ^= 0xFF
    assert sds.receive(bytes(bad), 0.0, 1.0, 2.0) == b""
    assert parse_frame(sds.receive(command(4, device=0x0001), 0.0, 1.0, 2.0))[0] == 0xC0


@given(noise=st.binary(max_size=64), split=st.integers(0, 19))
def test_sds011_finds_a_command_after_line_noise_even_when_split(noise: bytes, split: int) -> None:
    sds = SDS011()
    frame = command(7)
    replies = sds.receive(noise + frame[:split], 0.0, 1.0, 2.0)
    replies += sds.receive(frame[split:], 0.0, 1.0, 2.0)
    assert parse_frame(replies[-10:])[1][0] == 7


def test_analog_front_ends_are_linear_and_clamped_to_their_supply() -> None:
    rng = random.Random(1)
    quiet = LIGHT_SENSOR.__class__(offset_mv=0, mv_per_unit=1, max_mv=3300, noise_mv=0)
    assert quiet.microvolts(250.0, rng) == 250_000
    assert quiet.microvolts(100_000.0, rng) == 3_300_000
    assert quiet.microvolts(-5.0, rng) == 0
    readings = [NO2_SENSOR.microvolts(40.0, rng) for _ in range(200)]
    assert abs(sum(readings) / len(readings) - 660_000) < 2_000


class Street:
    def __init__(self) -> None:
        self.t = 1_800_000_000.25

    def __call__(self) -> float:
        return self.t


def test_pcf8563_starts_with_vl_set_and_its_power_on_register_values() -> None:
    regs = PCF8563(Street()).registers()
    assert regs[0x02] & 0x80  # VL: clock integrity not guaranteed
    assert (regs[0x00], regs[0x01], regs[0x0D], regs[0x0E]) == (0x08, 0x00, 0x80, 0x03)
    assert all(regs[a] & 0x80 for a in range(0x09, 0x0D))  # alarms disabled (AE)
    assert decode_pcf8563(regs[2:9]) is None


def test_pcf8563_counts_from_the_time_written_and_clears_vl() -> None:
    street = Street()
    rtc = PCF8563(street)
    when = 4_200_000_000  # 2103: the century bit is set
    rtc.on_write(0x02, encode_pcf8563(when))
    assert not rtc.vl and rtc.time_registers()[5] & 0x80
    street.t += 3600.5
    assert decode_pcf8563(rtc.time_registers()) == when + 3600
    rtc.on_write(0x03, bytes([0x7A]))  # not a minute: the counters keep their time
    assert rtc.now() == when + 3600


def test_pcf8563_stop_bit_holds_the_time_until_released() -> None:
    street = Street()
    rtc = PCF8563(street)
    rtc.on_write(0x00, bytes([PCF8563.STOP, 0]) + encode_pcf8563(1_900_000_000))
    street.t += 60
    assert rtc.now() == 1_900_000_000
    rtc.on_write(0x00, bytes([0]))
    street.t += 5
    assert rtc.now() == 1_900_000_005


@given(st.integers(946_684_800, 7_258_118_399), st.booleans())
def test_pcf8563_registers_are_bcd_with_vl_and_century(unix: int, vl: bool) -> None:
    regs = encode_pcf8563(unix, vl)
    digits = [regs[0] & 0x7F, regs[1], regs[2], regs[3], regs[5] & 0x1F, regs[6]]
    assert all(d >> 4 <= 9 and d & 0x0F <= 9 for d in digits)
    assert bool(regs[0] & 0x80) == vl
    assert decode_pcf8563(regs, check_vl=False) == unix
