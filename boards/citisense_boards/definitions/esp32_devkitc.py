# Espressif ESP32-DevKitC V4 with an ESP32-WROOM-32E module (4 MB flash, no PSRAM).
# Network over WiFi, so analog inputs sit on ADC1 (ADC2 stops working while WiFi runs).
# Wired like the virtual board (citisense_boards.wiring), so what is tested there holds here.
# Shipped to the board as citisense_board.mpy; CPython reads it through
# citisense_boards.definitions. Keys are documented there.
BOARD = {
    "name": "esp32-devkitc",
    "title": "Espressif ESP32-DevKitC V4 (ESP32-WROOM-32E, 4 MB flash)",
    "chip": "ESP32",
    "micropython": "1.29",
    "image": {"port_board": "ESP32_GENERIC", "esptool_chip": "esp32", "offset": 0x1000},
    "network": {"kind": "wlan"},
    "roles": ("lighting", "parking", "air"),
    # Pins the board itself uses: the USB console (mpremote talks through it).
    "reserved": {"console_tx": 1, "console_rx": 3},
    "pins": {
        "lamp_pwm": 25,  # dimming input of the lamp driver (PWM, through an opto or 0-10 V stage)
        "status_led": 2,  # service LED (external: the DevKitC has none of its own)
        "light_adc": 36,  # ambient light photodiode amplifier, ADC1_CH0 (SENSOR_VP)
        "no2_adc": 39,  # electrochemical NO2 cell amplifier, ADC1_CH3 (SENSOR_VN)
        "indicator": 26,  # bay light (WS2812 chain)
        "button": 0,  # BOOT button: service input once booted
        "i2c_sda": 21,
        "i2c_scl": 22,
        "pm_tx": 33,  # UART1 to the particulate matter sensor
        "pm_rx": 32,
        "rs485_tx": 17,  # UART2 (its default pins) to an RS-485 transceiver: serial uplink
        "rs485_rx": 16,
        "rs485_de": 4,  # transceiver driver enable
    },
    "buses": {
        "i2c": {"id": 0, "freq": 100000},
        "pm_uart": {"id": 1, "baud": 9600},
        "rs485_uart": {"id": 2, "baud": 115200},
    },
    "drivers": {
        "lamp": "pwm",
        "light": "adc",
        "power": "ina219",
        "magnetometer": "qmc5883l",
        "indicator": "ws2812",
        "pm": "sds011",
        "climate": "bme280",
        "no2": "adc",
        "rtc": "pcf8563",  # RTC breakout with a backup cell: time survives power cuts
    },
    "addresses": {"rtc": 0x51},  # I2C
    "romfs": 0x50000,  # two application slots of 160 KiB (see the docs of this key)
    "psram": False,
}
