"""The ESP32 modules of the virtual board answer like MicroPython's ESP32 port."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from citisense_boards.virtual_board import VirtualBoard

pytestmark = [pytest.mark.virtual_board, pytest.mark.micropython]

Mpremote = Callable[..., subprocess.CompletedProcess[str]]

CHECKS = r"""
import json, os, time, machine, network, select, socket
from machine import ADC, I2C, PWM, Pin, Signal, UART

r = {}
def error(f):
    try:
        f()
    except Exception as e:
        return [type(e).__name__, e.args[0] if e.args else None]

r["unique_id"] = machine.unique_id().hex()
r["mac"] = network.WLAN(network.STA_IF).config("mac").hex()
r["freq"] = machine.freq()
r["bad_freq"] = error(lambda: machine.freq(123))
r["flash_pin"] = error(lambda: Pin(6))
r["input_only"] = error(lambda: Pin(34, Pin.OUT))
r["pull_up"] = Pin(13, Pin.IN, Pin.PULL_UP).value()
led = Signal(Pin(2, Pin.OUT), invert=True)
led.on()
r["signal"] = [led.value(), Pin(2).value()]
pwm = PWM(Pin(25), freq=500, duty_u16=1000)
r["pwm"] = [pwm.freq(), pwm.duty_u16(), pwm.duty()]
r["pwm_range"] = error(lambda: pwm.duty_u16(70000))
adc = ADC(Pin(36), atten=ADC.ATTN_11DB)
r["adc"] = [0 <= adc.read_u16() <= 65535, 0 <= adc.read() <= 4095]
r["adc_pin"] = error(lambda: ADC(Pin(5)))
r["scan"] = I2C(0, scl=Pin(22), sda=Pin(21)).scan()
r["scan_default_pins"] = I2C(0).scan()
r["nack"] = error(lambda: I2C(0, scl=Pin(22), sda=Pin(21)).readfrom(0x42, 1))
uart = UART(2, 115200)
p = select.poll()
p.register(uart, select.POLLIN | select.POLLOUT)
r["poll_uart"] = [ev for _, ev in p.poll(0)]
s = socket.socket()
r["unconnected_recv"] = error(lambda: s.recv(1))
rtc = machine.RTC()
rtc.datetime((2030, 6, 1, 5, 12, 30, 0, 0))
r["rtc"] = list(time.localtime()[:5])
r["uname"] = os.uname().sysname
r["urandom"] = len(os.urandom(8))
r["statvfs"] = os.statvfs("/")[0]
print(json.dumps(r))
"""


def test_machine_network_and_os_behave_like_the_esp32_port(
    mpremote: Mpremote, board: VirtualBoard
) -> None:
    r = json.loads(mpremote("exec", CHECKS).stdout.strip().splitlines()[-1])
    assert r["unique_id"] == board.unique_id.hex() == r["mac"]
    assert r["freq"] == 160_000_000
    assert r["bad_freq"][0] == "ValueError"
    assert r["flash_pin"] == ["ValueError", "invalid pin"]
    assert r["input_only"] == ["ValueError", "pin can only be input"]
    assert r["pull_up"] == 1
    assert r["signal"] == [1, 0]
    assert r["pwm"] == [500, 1000, 1000 >> 6]
    assert r["pwm_range"] == ["ValueError", "duty_u16 must be from 0 to 65535"]
    assert r["adc"] == [True, True]
    assert r["adc_pin"] == ["ValueError", "invalid Pin for ADC"]
    assert r["scan"] == [0x0D, 0x51, 0x76]  # QMC5883L, PCF8563, BME280 on SCL 22 / SDA 21
    assert r["scan_default_pins"] == []  # nothing wired to I2C(0)'s default pins
    assert r["nack"] == ["OSError", 19]  # ENODEV
    assert r["poll_uart"] == [4]  # writable, nothing to read
    assert r["unconnected_recv"] == ["OSError", 107]  # ENOTCONN
    assert r["rtc"] == [2030, 6, 1, 12, 30]
    assert r["uname"] == "esp32"
    assert r["urandom"] == 8
    assert r["statvfs"] == 4096


def test_an_unsynced_rtc_starts_in_2000_after_power_on(mpremote_on: Mpremote) -> None:
    with VirtualBoard("no-ntp", role="parking", rtc_synced=False) as board:
        out = mpremote_on(board.repl_port, "exec", "import time; print(time.localtime()[0])")
        assert out.stdout.strip() == "2000"


def test_a_pin_interrupt_sees_the_street_drive_an_input(
    mpremote: Mpremote, board: VirtualBoard
) -> None:
    mpremote("resume", "exec",
             "from machine import Pin\nseen = []\n"
             "Pin(27, Pin.IN).irq(lambda p: seen.append(p.value()), Pin.IRQ_FALLING)")
    board.set_input(27, 1)
    board.set_input(27, 0)
    out = mpremote("resume", "exec", "import time\ntime.sleep_ms(100)\nprint(seen)")
    assert out.stdout.strip() == "[0]"
