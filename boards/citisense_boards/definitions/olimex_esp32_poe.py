# Olimex ESP32-POE (ESP32-WROOM-32, 4 MB flash): powered and networked by one PoE cable,
# which suits a lamp post. The LAN8720 PHY takes GPIO 17, 18, 19, 21, 22, 23, 25, 26, 27
# and 12 (PHY power); sensors use the UEXT connector (I2C on 13/16, UART on 4/36) and the
# EXT2 header (32, 33, 35, 39). GPIO 2, 14 and 15 stay free for the micro SD card.
# Shipped to the board as citisense_board.mpy; keys are documented in
# citisense_boards.definitions.
BOARD = {
    "name": "olimex-esp32-poe",
    "title": "Olimex ESP32-POE (ESP32-WROOM-32, LAN8720 Ethernet, 802.3af PoE)",
    "chip": "ESP32",
    "micropython": "1.29",
    "image": {"port_board": "ESP32_GENERIC", "esptool_chip": "esp32", "offset": 0x1000},
    "network": {
        "kind": "lan",
        "phy": "LAN8720",
        "phy_addr": 0,
        "mdc": 23,
        "mdio": 18,
        "power": 12,
        "ref_clk": 17,
        "ref_clk_mode": "out",
    },
    "roles": ("lighting", "parking", "air"),
    "reserved": {
        "console_tx": 1,
        "console_rx": 3,
        "emac_txd0": 19,
        "emac_tx_en": 21,
        "emac_txd1": 22,
        "emac_rxd0": 25,
        "emac_rxd1": 26,
        "emac_crs_dv": 27,
        "emac_ref_clk": 17,
        "phy_mdc": 23,
        "phy_mdio": 18,
        "phy_power": 12,
        "sd_d0": 2,
        "sd_clk": 14,
        "sd_cmd": 15,
    },
    "pins": {
        "lamp_pwm": 32,  # EXT2: dimming input of the lamp driver
        "light_adc": 35,  # EXT2: ambient light photodiode, ADC1_CH7
        "no2_adc": 39,  # EXT2: NO2 sensor front end, ADC1_CH3
        "indicator": 33,  # EXT2: bay light (WS2812 chain)
        "button": 34,  # BUT1 on the board
        "i2c_sda": 13,  # UEXT
        "i2c_scl": 16,  # UEXT
        "pm_tx": 4,  # UEXT UART to the particulate matter sensor
        "pm_rx": 36,
    },
    "buses": {
        "i2c": {"id": 0, "freq": 100000},
        "pm_uart": {"id": 1, "baud": 9600},
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
        "rtc": "pcf8563",  # UEXT: Olimex MOD-RTC, time survives power cuts
    },
    "addresses": {"rtc": 0x51},  # I2C
    "romfs": 0x50000,  # two application slots of 160 KiB (see the docs of this key)
    "psram": False,
}
