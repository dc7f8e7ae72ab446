"""The board as the app sees it: every pin, bus, timer and radio goes through one HAL.

Implementations: hal_machine.MachineHal (MicroPython's `machine`, on an ESP32 and on the
virtual board, configured by a board definition) and the fleet simulator's CPython HAL
(citisense_tools.fleet_hal.StreetHal), which also runs time faster than real time. The
app never reads a clock or sleeps except through a HAL, so a simulated street can speed
it up. This module holds only the names they share: the interface is written out here
rather than as a base class, whose methods a board would carry in RAM unused.

Units: lux, nT, ug/m3, degrees C, % RH, hPa, volts, deciwatts, percent. None always
means "no reading" (not fitted or failed), never a guess. A HAL has:

    parts                    the fitted peripherals (names below); has(part)
    ticks_ms()               wrapping millisecond ticks (compare with compat.ticks_diff)
    async sleep_ms(ms)
    rtc_time()               Unix seconds from the real-time clock, None if not set
                             since power-on (nor kept by a battery-backed clock chip)
    set_rtc(unix)
    async network_time(host) Unix seconds from NTP at `host`, None if there is none
    reset_cause()            why the board last booted: messages.RESET_*
    reset()                  restart the board now; never returns
    watchdog_start(timeout_ms), watchdog_feed()
    memory()                 an object with mem_alloc() and mem_free() (gc on a board)
    collect_garbage()        free a burst's garbage now (gc.collect() on a board)
    lamp_output(level)       dimming output, percent 0..100
    lamp_feedback()          (power drawn in dW or None, the driver's lamp.FAULT_* flags)
    ambient_lux()
    magnetic_field()         (x, y, z) in nT, or None
    indicator(show)          bay light: parking_detector.INDICATOR_* or SHOW_DARK
    pm_power(on)             run or stop the particulate sensor's fan and laser
    pm_reading()             latest (pm2.5, pm10) in ug/m3, or None
    climate()                (temperature C, relative humidity %, pressure hPa), or None
    no2_volts()              (working electrode V, auxiliary electrode V or None), or None
    status_led(on)
    async network_up(wifi)   bring the network up (`wifi`: the config's ssid/password or
                             None); True once the node has an address
    rssi()                   radio signal strength in dBm; None on wired links
    serial_link(baud)        (reader, writer) of the serial uplink; OSError if none
"""

# Fitted peripherals, named as the `drivers` of a board definition.
LAMP = "lamp"  # lamp driver: dimming output (PWM)
POWER = "power"  # the lamp driver's feedback: power drawn, fault report
LIGHT = "light"  # ambient light sensor
MAGNETOMETER = "magnetometer"
INDICATOR = "indicator"  # the bay light of a parking node
PM = "pm"  # particulate matter sensor with its fan
CLIMATE = "climate"  # temperature, humidity, pressure
NO2 = "no2"  # electrochemical NO2 cell front end
RTC = "rtc"  # battery-backed real-time clock chip: keeps the time through power cuts
STATUS_LED = "status_led"

# Bay light (indicator): what it shows.
SHOW_DARK = -1  # off (identify blink)

