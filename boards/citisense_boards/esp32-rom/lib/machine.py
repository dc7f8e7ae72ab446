# mypy: ignore-errors
# machine for the virtual ESP32: the API of MicroPython's ESP32 port, over the
# simulated board (_vboard). Pins, buses and UARTs reach the simulated street
# through the board's wiring, so code must use the right pins, as on hardware.
import binascii
import sys
import time

import _vboard
import uctypes
from micropython import const


def _buffer(data):
    # Bytes go to the board by address (_vboard copies them): no copy left on the heap.
    if isinstance(data, (bytes, bytearray)):
        return data
    return bytes(data)

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)
EXT0_WAKE = const(2)
PIN_WAKE = const(2)
EXT1_WAKE = const(3)
TIMER_WAKE = const(4)
TOUCHPAD_WAKE = const(5)
ULP_WAKE = const(6)

_EINVAL = const(22)
_ENODEV = const(19)
_POLLIN = const(1)
_POLLOUT = const(4)
_STREAM_POLL = const(3)
_RTC_MEMORY_MAX = const(2048)
_FREQS = (20_000_000, 40_000_000, 80_000_000, 160_000_000, 240_000_000)


def _raise_for(result):
    if isinstance(result, int) and result < 0:
        raise OSError(-result)
    return result


def _run_callback(callback, arg):
    try:
        callback(arg)
    except Exception as e:
        print("Uncaught exception in IRQ callback handler")
        sys.print_exception(e)


def reset():
    _vboard.reset()


def soft_reset():
    _vboard.soft_reset()
    raise SystemExit


def reset_cause():
    return _vboard.reset_cause()


def wake_reason():
    return _vboard.wake_reason()


def unique_id():
    return binascii.unhexlify(_vboard.unique_id())


def freq(hz=None):
    if hz is None:
        return _vboard.freq(0)
    if hz not in _FREQS:
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _vboard.freq(hz)


def idle():
    _vboard.wait(1)


def lightsleep(ms=None):
    _vboard.wait(-1) if ms is None else _vboard.sleep_ms(ms)


def deepsleep(ms=0):
    _vboard.deepsleep(ms)


def disable_irq():
    return _vboard.irq_enable(0)


def enable_irq(state=True):
    _vboard.irq_enable(1 if state else 0)


def _pin_id(pin):
    return pin._id if isinstance(pin, Pin) else pin


class Pin:
    IN = const(1)
    OUT = const(3)
    OPEN_DRAIN = const(7)
    PULL_DOWN = const(1)
    PULL_UP = const(2)
    IRQ_RISING = const(1)
    IRQ_FALLING = const(2)
    WAKE_LOW = const(4)
    WAKE_HIGH = const(5)
    DRIVE_0 = const(0)
    DRIVE_1 = const(1)
    DRIVE_2 = const(2)
    DRIVE_3 = const(3)

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        self._id = id
        self._handler = None
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        check = _vboard.pin_valid(self._id, mode in (Pin.OUT, Pin.OPEN_DRAIN))
        if check == -_EINVAL:
            raise ValueError("invalid pin")
        if check:
            raise ValueError("pin can only be input")
        _vboard.pin_init(self._id, mode, -1 if pull is None else pull, value)

    def value(self, x=None):
        if x is None:
            return _vboard.pin_read(self._id)
        _vboard.pin_write(self._id, 1 if x else 0)

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        _vboard.pin_write(self._id, 1)

    def off(self):
        _vboard.pin_write(self._id, 0)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, *, wake=None, hard=False):
        self._handler = handler
        _vboard.pin_irq(self._id, trigger, self._dispatch if handler else None)

    def _dispatch(self):
        _run_callback(self._handler, self)

    def __repr__(self):
        return f"Pin({self._id})"


class Signal:
    def __init__(self, pin, *args, invert=False, **kwargs):
        self._pin = pin if isinstance(pin, Pin) else Pin(pin, *args, **kwargs)
        self._invert = 1 if invert else 0

    def value(self, x=None):
        if x is None:
            return self._pin.value() ^ self._invert
        self._pin.value((1 if x else 0) ^ self._invert)

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class PWM:
    def __init__(self, dest, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        self._pin = dest if isinstance(dest, Pin) else Pin(dest, Pin.OUT)
        self._freq = 5000
        self._duty = 32768
        self._invert = invert
        self.init(freq=freq, duty=duty, duty_u16=duty_u16, duty_ns=duty_ns)

    def init(self, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=None):
        if invert is not None:
            self._invert = invert
        if freq is not None:
            if not 1 <= freq <= 40_000_000:
                raise ValueError("freq must be from 1Hz to 40MHz")
            self._freq = freq
        if duty is not None:
            if not 0 <= duty <= 1024:
                raise ValueError("duty must be from 0 to 1024")
            self._duty = min(65535, duty << 6)
        if duty_ns is not None:
            duty_u16 = min(65535, duty_ns * self._freq * 65535 // 1_000_000_000)
        if duty_u16 is not None:
            if not 0 <= duty_u16 <= 65535:
                raise ValueError("duty_u16 must be from 0 to 65535")
            self._duty = duty_u16
        out = 65535 - self._duty if self._invert else self._duty
        _vboard.pwm_set(self._pin._id, self._freq, out)

    def deinit(self):
        _vboard.pwm_deinit(self._pin._id)

    def freq(self, value=None):
        if value is None:
            return self._freq
        self.init(freq=value)

    def duty(self, value=None):
        if value is None:
            return self._duty >> 6
        self.init(duty=value)

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self.init(duty_u16=value)

    def duty_ns(self, value=None):
        if value is None:
            return self._duty * 1_000_000_000 // (self._freq * 65535)
        self.init(duty_ns=value)

    def __repr__(self):
        return f"PWM(Pin({self._pin._id}), freq={self._freq}, duty_u16={self._duty})"


class ADC:
    ATTN_0DB = const(0)
    ATTN_2_5DB = const(1)
    ATTN_6DB = const(2)
    ATTN_11DB = const(3)
    WIDTH_9BIT = const(9)
    WIDTH_10BIT = const(10)
    WIDTH_11BIT = const(11)
    WIDTH_12BIT = const(12)

    def __init__(self, pin, *, atten=ATTN_0DB):
        self._id = _pin_id(pin)
        if _vboard.adc_valid(self._id):
            raise ValueError("invalid Pin for ADC")
        self._atten = atten
        self._width = 12

    def init(self, *, atten=None):
        if atten is not None:
            self.atten(atten)

    def atten(self, atten):
        if not 0 <= atten <= 3:
            raise ValueError("invalid attenuation")
        self._atten = atten

    def width(self, bits):
        if not 9 <= bits <= 12:
            raise ValueError("invalid width")
        self._width = bits

    def read(self):
        return _vboard.adc_read(self._id, self._atten) >> (12 - self._width)

    def read_u16(self):
        raw = _vboard.adc_read(self._id, self._atten)
        return (raw << 4) | (raw >> 8)

    def read_uv(self):
        raw = _vboard.adc_read(self._id, self._atten)
        return raw * _vboard.adc_full_scale_mv(self._atten) * 1000 // 4095


class I2C:
    _DEFAULT_PINS = ((18, 19), (25, 26))  # (scl, sda) of I2C(0) and I2C(1)

    def __init__(self, id=0, *, scl=None, sda=None, freq=400_000, timeout=50_000):
        if not 0 <= id <= 1:
            raise ValueError(f"I2C({id}) doesn't exist")
        self._scl, self._sda = self._DEFAULT_PINS[id]
        self.init(scl=scl, sda=sda, freq=freq)

    def init(self, *, scl=None, sda=None, freq=400_000, timeout=50_000):
        if scl is not None:
            self._scl = _pin_id(scl)
        if sda is not None:
            self._sda = _pin_id(sda)
        self._freq = freq

    def deinit(self):
        pass

    def scan(self):
        found = _vboard.i2c_scan(self._scl, self._sda)
        return [int(a) for a in found.split(",")] if found else []

    def writeto(self, addr, buf, stop=True):
        buf = _buffer(buf)
        return _raise_for(_vboard.i2c_write(self._scl, self._sda, addr,
                                            uctypes.addressof(buf), len(buf)))

    def writevto(self, addr, vector, stop=True):
        return self.writeto(addr, b"".join(bytes(b) for b in vector), stop)

    def readfrom(self, addr, nbytes, stop=True):
        data = _raise_for(_vboard.i2c_read(self._scl, self._sda, addr, nbytes))
        return binascii.unhexlify(data)

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        buf[: len(data)] = data

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, self._address(memaddr, addrsize) + bytes(buf))

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        self.writeto(addr, self._address(memaddr, addrsize), False)
        return self.readfrom(addr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, self._address(memaddr, addrsize), False)
        self.readfrom_into(addr, buf)

    @staticmethod
    def _address(memaddr, addrsize):
        return memaddr.to_bytes(addrsize // 8, "big")

    def __repr__(self):
        return f"I2C(scl={self._scl}, sda={self._sda}, freq={self._freq})"


class SoftI2C(I2C):
    def __init__(self, scl, sda, *, freq=400_000, timeout=50_000):
        self.init(scl=scl, sda=sda, freq=freq)


class UART:
    INV_TX = const(1)
    INV_RX = const(4)
    RTS = const(2)
    CTS = const(1)

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, **kwargs):
        if not 0 <= id <= 2:
            raise ValueError(f"UART({id}) doesn't exist")
        self._id = id
        self._h = None
        self._baud = 115200
        self._tx = self._rx = -1
        self._rxbuf = 256
        self._timeout = self._timeout_char = 0
        self.init(baudrate, bits, parity, stop, **kwargs)

    def init(self, baudrate=None, bits=8, parity=None, stop=1, **kwargs):
        if baudrate is not None:
            self._baud = baudrate
        self._tx = _pin_id(kwargs.get("tx", self._tx))
        self._rx = _pin_id(kwargs.get("rx", self._rx))
        self._rxbuf = kwargs.get("rxbuf", self._rxbuf)
        self._timeout = kwargs.get("timeout", self._timeout)
        self._timeout_char = kwargs.get("timeout_char", self._timeout_char)
        self._h = _vboard.uart_open(self._id, self._tx, self._rx, self._baud, self._rxbuf)

    def deinit(self):
        _vboard.uart_close(self._h)

    def any(self):
        return _vboard.uart_any(self._h)

    def read(self, nbytes=-1):
        data = _vboard.uart_read(self._h, nbytes, self._timeout, self._timeout_char, 0)
        return binascii.unhexlify(data) if data else None

    def readinto(self, buf, nbytes=-1):
        data = self.read(len(buf) if nbytes < 0 else nbytes)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        data = _vboard.uart_read(self._h, -1, self._timeout, self._timeout_char, 1)
        return binascii.unhexlify(data) if data else None

    def write(self, buf):
        buf = _buffer(buf)
        return _vboard.uart_write(self._h, uctypes.addressof(buf), len(buf))

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass

    def ioctl(self, req, arg):
        if req != _STREAM_POLL:
            return -_EINVAL
        ready = arg & _POLLOUT
        if arg & _POLLIN and _vboard.uart_any(self._h):
            ready |= _POLLIN
        return ready

    def __repr__(self):
        return f"UART({self._id}, baudrate={self._baud}, tx={self._tx}, rx={self._rx})"


class Timer:
    ONE_SHOT = const(0)
    PERIODIC = const(1)

    def __init__(self, id, *args, **kwargs):
        self._id = id
        self._callback = None
        if args or kwargs:
            self.init(*args, **kwargs)

    def init(self, *, mode=PERIODIC, period=-1, callback=None, freq=-1):
        if freq > 0:
            period = 1000 / freq
        if period < 0:
            raise ValueError("period must be set")
        self._callback = callback
        _vboard.timer_init(self._id, period, mode == Timer.PERIODIC, self._dispatch)

    def deinit(self):
        _vboard.timer_deinit(self._id)

    def _dispatch(self):
        if self._callback:
            _run_callback(self._callback, self)


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        _vboard.wdt_start(timeout)

    def feed(self):
        _vboard.wdt_feed()


class RTC:
    def __init__(self, id=0):
        pass

    def init(self, datetime):
        self.datetime(datetime)

    def datetime(self, datetime=None):
        if datetime is None:
            t = time.localtime()
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        year, month, day, _, hour, minute, second = datetime[:7]
        micros = datetime[7] if len(datetime) > 7 else 0
        seconds = time.mktime((year, month, day, hour, minute, second, 0, 0))
        _vboard.rtc_set(str(seconds), micros)

    def memory(self, data=None):
        if data is None:
            return binascii.unhexlify(_vboard.rtc_memory())
        if len(data) > _RTC_MEMORY_MAX:
            raise ValueError("buffer too long")
        data = _buffer(data)
        _vboard.rtc_memory_set(uctypes.addressof(data), len(data))
