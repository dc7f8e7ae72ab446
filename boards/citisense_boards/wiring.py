"""How the virtual ESP32 is wired to the street: pins, buses and addresses.

Firmware must use these, as it must use a real board's schematic: a bus set up
on other pins finds no devices. Plain constants, so the module also imports
under MicroPython.
"""

LAMP_PWM_PIN = 25  # PWM input of the lamp driver
STATUS_LED_PIN = 2
LIGHT_ADC_PIN = 36  # ambient light sensor, 1 mV per lux (SENSOR_VP, ADC1)
NO2_ADC_PIN = 39  # NO2 cell amplifier, 500 mV + 4 mV per ug/m3 (SENSOR_VN, ADC1)
I2C_SCL_PIN = 22
I2C_SDA_PIN = 21
BME280_ADDR = 0x76
QMC5883L_ADDR = 0x0D  # the parking bay's magnetometer
PCF8563_ADDR = 0x51  # battery-backed real-time clock: keeps time through power cuts
PM_UART_TX_PIN = 33  # to the SDS011 (9600 baud)
PM_UART_RX_PIN = 32
UPLINK_UART_TX_PIN = 17  # to the RS-485 transceiver: UART2's default pins
UPLINK_UART_RX_PIN = 16
UPLINK_DE_PIN = 4  # RS-485 driver enable

# What each kind of node carries; "all" is a development board with everything.
ROLES = {
    "lighting": ("lamp", "light", "rtc"),
    "parking": ("magnetometer",),
    "air": ("bme280", "pm", "no2"),
    "all": ("lamp", "light", "rtc", "magnetometer", "bme280", "pm", "no2"),
}
