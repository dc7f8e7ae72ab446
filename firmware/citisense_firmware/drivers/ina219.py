"""TI INA219 power monitor on I2C, measuring what the lamp driver draws.

Calibrated for a 0.1 ohm shunt and a 100 uA current LSB (datasheet section 8.5.1): the
power register then counts 2 mW.
"""

ADDRESS = 0x40
_CALIBRATION = 4096  # trunc(0.04096 / (100 uA * 0.1 ohm))
_MW_PER_LSB = 2


class INA219:
    def __init__(self, i2c, address: int = ADDRESS) -> None:
        self._i2c = i2c
        self._address = address
        i2c.writeto_mem(address, 0x05, _CALIBRATION.to_bytes(2, "big"))

    def power_dw(self) -> int:
        raw = self._i2c.readfrom_mem(self._address, 0x03, 2)
        return (raw[0] << 8 | raw[1]) * _MW_PER_LSB // 100
