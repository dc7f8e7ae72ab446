"""The HAL on MicroPython's `machine` API: a real ESP32 and the virtual board alike.

Built from a board definition (citisense_board.BOARD: pins, buses, drivers, network;
see citisense_boards.definitions). A peripheral is fitted when the definition names
its driver and wires its pins; its driver is imported and opened on first use, so a node
carries only its role's drivers in RAM. A chip that does not answer reads as None and
is tried again at the next read.

Analog front ends, scaled by BOARD["scales"] where given (defaults in brackets):
light_uv_per_lux [1000] for the ambient light sensor; the NO2 cell's working electrode
is read in volts (its calibration is a node setting, roles/air.py).
"""

import asyncio
import gc
import time

import machine

from citisense_firmware.hal import (
    CLIMATE,
    INDICATOR,
    LAMP,
    LIGHT,
    MAGNETOMETER,
    NO2,
    PM,
    POWER,
    RTC,
    SHOW_DARK,
    STATUS_LED,
)
from citisense_firmware.uplink import reset_code

# Pins each peripheral needs, by board-definition pin function.
_WIRING = (
    (LAMP, ("lamp_pwm",)),
    (LIGHT, ("light_adc",)),
    (POWER, ("i2c_sda", "i2c_scl")),
    (MAGNETOMETER, ("i2c_sda", "i2c_scl")),
    (INDICATOR, ("indicator",)),
    (PM, ("pm_tx", "pm_rx")),
    (CLIMATE, ("i2c_sda", "i2c_scl")),
    (NO2, ("no2_adc",)),
    (RTC, ("i2c_sda", "i2c_scl")),
)
_PWM_HZ = 1000
_UNIX_2020 = 1577836800  # an RTC before this was never set since power-on
# Bay light colours (G, R, B order is the NeoPixel driver's business): free, taken, reserved.
_COLOURS = ((0, 64, 0), (64, 0, 0), (0, 0, 64))


class MachineHal:
    """The HAL of citisense_firmware.hal on `machine`, for the board definition `board`."""

    def __init__(self, board: dict) -> None:
        self.board = board
        self._pins = board.get("pins", {})
        drivers = board.get("drivers", {})
        parts = []
        for part, needs in _WIRING:
            if part in drivers and all(pin in self._pins for pin in needs):
                parts.append(part)
        if "status_led" in self._pins:
            parts.append(STATUS_LED)
        self.parts = tuple(parts)
        self._drivers = drivers
        self._scales = board.get("scales", {})
        self._open = {}  # part -> driver object, opened on first use
        self._i2c = None
        self._wdt = None
        self._nic = None
        self._led = None

    def has(self, part: str) -> bool:
        return part in self.parts

    # -- time, reset, watchdog ----------------------------------------------------

    def ticks_ms(self) -> int:
        return time.ticks_ms()

    async def sleep_ms(self, ms: int) -> None:
        await asyncio.sleep_ms(ms)

    def rtc_time(self) -> int | None:
        now = time.time()
        if now >= _UNIX_2020:
            return now
        # The power was cut: the ESP32's clock restarted at 2000. A battery-backed clock
        # chip kept counting, unless it says (VL) or shows that it did not.
        now = self._rtc_chip(None)
        if now is None or now < _UNIX_2020:
            return None
        self._set_clock(now)
        return now

    def set_rtc(self, unix: int) -> None:
        self._set_clock(unix)
        self._rtc_chip(unix)

    def _set_clock(self, unix: int) -> None:
        t = time.gmtime(unix)
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

    def _rtc_chip(self, unix):
        """Write `unix` to the RTC chip, or read it (None): its time, None if it has none."""
        if RTC not in self.parts or self._drivers[RTC] != "pcf8563":
            return None
        from citisense_firmware.drivers import pcf8563

        address = self.board.get("addresses", {}).get(RTC, pcf8563.ADDRESS)
        try:
            if unix is None:
                return pcf8563.decode(self._bus().readfrom_mem(address, 2, 7))
            self._bus().writeto_mem(address, 0, pcf8563.encode(unix))
        except OSError:
            pass
        return None

    async def network_time(self, host) -> int | None:
        if not host:
            return None
        try:
            import ntptime

            ntptime.host = host
            return ntptime.time()  # blocks up to ntptime.timeout (1 s)
        except (OSError, OverflowError, ImportError):
            return None

    def reset_cause(self) -> int:
        return reset_code(machine.reset_cause(), machine)

    def reset(self) -> None:
        machine.reset()

    def watchdog_start(self, timeout_ms: int) -> None:
        if self._wdt is None:
            self._wdt = machine.WDT(timeout=timeout_ms)

    def watchdog_feed(self) -> None:
        if self._wdt is not None:
            self._wdt.feed()

    def memory(self):
        return gc

    def collect_garbage(self) -> None:
        gc.collect()

    # -- peripherals ----------------------------------------------------------------

    def _bus(self):
        if self._i2c is None:
            bus = self.board.get("buses", {}).get("i2c", {})
            self._i2c = machine.I2C(bus.get("id", 0), scl=machine.Pin(self._pins["i2c_scl"]),
                                    sda=machine.Pin(self._pins["i2c_sda"]),
                                    freq=bus.get("freq", 100000))
        return self._i2c

    def _device(self, part: str):
        """The opened driver of a fitted part, or None (not fitted, or it did not answer)."""
        device = self._open.get(part)
        if device is None and part in self.parts:
            try:
                device = self._make(part, self._drivers[part])
            except OSError:
                return None
            self._open[part] = device
        return device

    def _make(self, part: str, driver: str):
        pins = self._pins
        if driver == "adc":
            adc = machine.ADC(machine.Pin(pins[part + "_adc"]))
            adc.atten(machine.ADC.ATTN_11DB)  # 0..3.3 V
            return adc
        if driver == "pwm":
            return None  # created by lamp_output with its first duty, so it never glitches
        if driver == "bme280":
            from citisense_firmware.drivers.bme280 import BME280

            return BME280(self._bus())
        if driver == "qmc5883l":
            from citisense_firmware.drivers.qmc5883l import QMC5883L

            return QMC5883L(self._bus())
        if driver == "ina219":
            from citisense_firmware.drivers.ina219 import INA219

            return INA219(self._bus())
        if driver == "ws2812":
            try:
                from neopixel import NeoPixel
            except ImportError:  # a port without it: one lamp on the same pin
                return machine.Pin(pins["indicator"], machine.Pin.OUT)
            return NeoPixel(machine.Pin(pins["indicator"]), 1)
        if driver in ("pms5003", "sds011"):
            from citisense_firmware.drivers import pm_uart

            bus = self.board.get("buses", {}).get("pm_uart", {})
            uart = machine.UART(bus.get("id", 2), bus.get("baud", 9600), tx=pins["pm_tx"],
                                rx=pins["pm_rx"])
            if driver == "sds011":
                return pm_uart.SDS011(uart)
            enable = pins.get("pm_set")
            pin = None if enable is None else machine.Pin(enable, machine.Pin.OUT, value=1)
            return pm_uart.PMS5003(uart, pin)
        raise OSError("no driver " + driver)

    def lamp_output(self, level: int) -> None:
        duty = level * 65535 // 100
        pwm = self._open.get(LAMP)
        if pwm is None:
            pwm = machine.PWM(machine.Pin(self._pins["lamp_pwm"]), freq=_PWM_HZ, duty_u16=duty)
            self._open[LAMP] = pwm
        else:
            pwm.duty_u16(duty)

    def lamp_feedback(self) -> tuple:
        meter = self._device(POWER)
        if meter is None:
            return None, 0
        try:
            return meter.power_dw(), 0
        except OSError:
            return None, 0

    def ambient_lux(self) -> float | None:
        adc = self._device(LIGHT)
        if adc is None:
            return None
        return adc.read_uv() / self._scales.get("light_uv_per_lux", 1000)

    def magnetic_field(self) -> tuple | None:
        return self._read(MAGNETOMETER)

    def climate(self) -> tuple | None:
        return self._read(CLIMATE)

    def _read(self, part: str):
        device = self._device(part)
        if device is None:
            return None
        try:
            return device.read()
        except OSError:
            self._open.pop(part, None)  # open it again: the chip may have been reset
            return None

    def no2_volts(self) -> tuple | None:
        adc = self._device(NO2)
        return None if adc is None else (adc.read_uv() / 1e6, None)

    def pm_power(self, on: bool) -> None:
        sensor = self._device(PM)
        if sensor is not None:
            sensor.power(on)

    def pm_reading(self) -> tuple | None:
        sensor = self._device(PM)
        return None if sensor is None else sensor.poll()

    def indicator(self, show: int) -> None:
        light = self._device(INDICATOR)
        if light is None:
            return
        if isinstance(light, machine.Pin):
            light.value(1 if show == 1 else 0)
            return
        light[0] = (0, 0, 0) if show == SHOW_DARK else _COLOURS[show]
        light.write()

    def status_led(self, on: bool) -> None:
        if self._led is None:
            self._led = machine.Pin(self._pins["status_led"], machine.Pin.OUT)
        self._led.value(1 if on else 0)

    # -- network --------------------------------------------------------------------

    async def network_up(self, wifi) -> bool:
        import network

        described = self.board.get("network", {})
        try:
            if self._nic is None:
                if described.get("kind") == "lan":
                    self._nic = _lan(network, described)
                else:
                    self._nic = network.WLAN(network.STA_IF)
                self._nic.active(True)
            nic = self._nic
            if described.get("kind") != "lan" and not nic.isconnected():
                if wifi is None:
                    return False
                if nic.status() != network.STAT_CONNECTING:
                    nic.connect(wifi["ssid"], wifi.get("password", ""))
            for _ in range(40):
                if nic.isconnected():
                    return True
                await asyncio.sleep_ms(500)
        except OSError as error:
            print("citisense: network:", error)
        return False

    def rssi(self) -> int | None:
        if self._nic is None or self.board.get("network", {}).get("kind") == "lan":
            return None
        try:
            return self._nic.status("rssi")
        except (OSError, ValueError):
            return None

    def serial_link(self, baud: int) -> tuple:
        from citisense_firmware.serial_uplink import Rs485Writer, UartStream

        pins = self._pins
        bus = self.board.get("buses", {}).get("rs485_uart", {})
        uart = machine.UART(bus.get("id", 1), baud, tx=pins["rs485_tx"], rx=pins["rs485_rx"])
        stream = UartStream(uart)
        if "rs485_de" not in pins:
            return stream, stream
        return stream, Rs485Writer(uart, machine.Pin(pins["rs485_de"], machine.Pin.OUT,
                                                     value=0))


def _lan(network, described: dict):
    pin = machine.Pin
    return network.LAN(
        mdc=pin(described["mdc"]), mdio=pin(described["mdio"]), power=pin(described["power"]),
        phy_type=getattr(network, "PHY_" + described["phy"]), phy_addr=described["phy_addr"],
        ref_clk=pin(described["ref_clk"]),
        ref_clk_mode=pin.OUT if described.get("ref_clk_mode") == "out" else pin.IN,
    )
