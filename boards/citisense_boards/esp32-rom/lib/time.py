# mypy: ignore-errors
# time for the virtual board. Ticks follow the street's clock (which may run
# faster than real time) and sleeps let the board serve timers, IRQs and Ctrl-C;
# everything else is the port's own time module, except time(): an ESP32 counts whole
# seconds (an int), the WebAssembly port a float, which firmware must never see.
import _vboard
import utime
from utime import *  # noqa: F403

ticks_ms = _vboard.ticks_ms
ticks_us = _vboard.ticks_us
ticks_cpu = _vboard.ticks_us


def sleep_ms(ms):
    _vboard.sleep_ms(max(0, ms))  # a negative time does not sleep, as on a board


def sleep_us(us):
    _vboard.sleep_ms(max(0, us) / 1000)


def sleep(seconds):
    _vboard.sleep_ms(max(0, seconds) * 1000)


def time():
    return int(utime.time())
