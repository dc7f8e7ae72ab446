"""The board as the app sees it: every pin, bus, timer and radio goes through one Hal.

Implementations: hal_machine.MachineHal (MicroPython's `machine`, on an ESP32 and on the
virtual board, configured by a board definition) and the fleet simulator's CPython HAL
(citisense_tools.fleet_hal), which also runs time faster than real time. The app never
reads a clock or sleeps except through here, so a simulated street can speed it up.

This base class is a board with nothing fitted: every reading is None, every output is
ignored. Units: lux, nT, ug/m3, degrees C, % RH, hPa, volts, deciwatts, percent. None
always means "no reading" (not fitted or failed), never a guess.
"""

import asyncio

from citisense_firmware.compat import ticks_ms
from citisense_protocols import messages

# Fitted peripherals, named as the `drivers` of a board definition.
LAMP = "lamp"  # lamp driver: dimming output (PWM)
POWER = "power"  # the lamp driver's feedback: power drawn, fault report
LIGHT = "light"  # ambient light sensor
MAGNETOMETER = "magnetometer"
INDICATOR = "indicator"  # the bay light of a parking node
PM = "pm"  # particulate matter sensor with its fan
CLIMATE = "climate"  # temperature, humidity, pressure
NO2 = "no2"  # electrochemical NO2 cell front end
STATUS_LED = "status_led"

# Bay light (indicator): what it shows.
SHOW_DARK = -1  # off (identify blink)


class Reset(Exception):
    """Raised by a simulated board's reset(): its runner starts the app again."""


class Hal:
    parts = ()

    def has(self, part: str) -> bool:
        return part in self.parts

    # -- time ---------------------------------------------------------------------

    def ticks_ms(self) -> int:
        """Wrapping millisecond ticks (compare with compat.ticks_diff only)."""
        return ticks_ms()

    async def sleep_ms(self, ms: int) -> None:
        await asyncio.sleep(ms / 1000)

    def rtc_time(self) -> int | None:
        """Unix seconds from the real-time clock, None if it was never set since power-on."""
        return None

    def set_rtc(self, unix: int) -> None:
        pass

    async def network_time(self, host) -> int | None:
        """Unix seconds from a network time source (NTP at `host`), None if there is none."""
        return None

    # -- reset and watchdog -------------------------------------------------------

    def reset_cause(self) -> int:
        """Why the board last booted: messages.RESET_*."""
        return messages.RESET_UNKNOWN

    def reset(self) -> None:
        """Restart the board now; never returns."""
        raise Reset()

    def watchdog_start(self, timeout_ms: int) -> None:
        pass

    def watchdog_feed(self) -> None:
        pass

    def memory(self):
        """An object with mem_alloc() and mem_free() (the gc module on a board)."""
        return _NoMemory()

    def collect_garbage(self) -> None:
        """Free the garbage of a burst of allocations now (gc.collect() on a board)."""

    # -- lighting -----------------------------------------------------------------

    def lamp_output(self, level: int) -> None:
        """Dimming output, percent 0..100."""

    def lamp_feedback(self) -> tuple:
        """(power drawn in dW or None, fault flags the driver reports: lamp.FAULT_*)."""
        return None, 0

    def ambient_lux(self) -> float | None:
        return None

    # -- parking ------------------------------------------------------------------

    def magnetic_field(self) -> tuple | None:
        """(x, y, z) in nT."""
        return None

    def indicator(self, show: int) -> None:
        """Bay light: parking_detector.INDICATOR_* or SHOW_DARK."""

    # -- air quality --------------------------------------------------------------

    def pm_power(self, on: bool) -> None:
        """Run or stop the particulate sensor's fan and laser."""

    def pm_reading(self) -> tuple | None:
        """Latest (pm2.5, pm10) in ug/m3 from the sensor."""
        return None

    def climate(self) -> tuple | None:
        """(temperature C, relative humidity %, pressure hPa)."""
        return None

    def no2_volts(self) -> tuple | None:
        """(working electrode V, auxiliary electrode V or None if not wired)."""
        return None

    # -- status and network ---------------------------------------------------------

    def status_led(self, on: bool) -> None:
        pass

    async def network_up(self, wifi) -> bool:
        """Bring up the network (`wifi`: the config's ssid/password, or None); True when
        the node has an address."""
        return True

    def rssi(self) -> int | None:
        """Radio signal strength in dBm; None on wired links."""
        return None

    def serial_link(self, baud: int) -> tuple:
        """(reader, writer) of the serial uplink (serial_uplink.SerialLink streams)."""
        raise OSError("this board has no serial uplink")


class _NoMemory:
    def mem_alloc(self) -> int:
        return 0

    def mem_free(self) -> int:
        return 0
