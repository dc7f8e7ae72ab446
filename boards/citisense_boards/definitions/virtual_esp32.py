# The virtual ESP32 (citisense_boards.virtual_board): the real MicroPython VM with
# simulated peripherals, wired as citisense_boards.wiring says (a test keeps the two equal).
# It simulates no power meter and no bay light: those telemetry fields stay null. Shipped to the
# board as citisense_board.mpy; keys are documented in citisense_boards.definitions.
BOARD = {
    "name": "virtual-esp32",
    "title": "Virtual ESP32 (citisense simulated street)",
    "chip": "ESP32",
    "micropython": "1.29",
    "image": None,  # the simulator brings its own MicroPython: nothing to write with esptool
    "network": {"kind": "wlan"},
    "roles": ("lighting", "parking", "air"),
    "reserved": {"console_tx": 1, "console_rx": 3},
    "pins": {
        "lamp_pwm": 25,
        "status_led": 2,
        "light_adc": 36,
        "no2_adc": 39,
        "i2c_sda": 21,
        "i2c_scl": 22,
        "pm_tx": 33,
        "pm_rx": 32,
        "rs485_tx": 17,
        "rs485_rx": 16,
        "rs485_de": 4,
    },
    "buses": {
        "i2c": {"id": 0, "freq": 100000},
        "pm_uart": {"id": 1, "baud": 9600},
        "rs485_uart": {"id": 2, "baud": 115200},
    },
    "drivers": {
        "lamp": "pwm",
        "light": "adc",
        "magnetometer": "qmc5883l",
        "pm": "sds011",
        "climate": "bme280",
        "no2": "adc",
        "rtc": "pcf8563",
    },
    "addresses": {"rtc": 0x51},  # I2C
    "romfs": 0x50000,  # two application slots of 160 KiB (see the docs of this key)
    "psram": False,
}
