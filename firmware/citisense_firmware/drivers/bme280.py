"""Bosch BME280 temperature, humidity and pressure sensor on I2C (datasheet rev. 1.6).

Normal mode, oversampling x1 for all three: a reading is never older than about 1 s.
Compensation is the datasheet's integer code (section 4.2.3), exact on any port.
"""

import struct

ADDRESS = 0x76
_CHIP_ID = 0x60


def _signed8(value: int) -> int:
    return value - 256 if value > 127 else value


class BME280:
    def __init__(self, i2c, address: int = ADDRESS) -> None:
        self._i2c = i2c
        self._address = address
        if i2c.readfrom_mem(address, 0xD0, 1)[0] != _CHIP_ID:
            raise OSError("no BME280 at address " + hex(address))
        head = i2c.readfrom_mem(address, 0x88, 24)
        self._t = struct.unpack("<Hhh", head[:6])
        self._p = struct.unpack("<Hhhhhhhhh", head[6:24])
        h1 = i2c.readfrom_mem(address, 0xA1, 1)[0]
        e = i2c.readfrom_mem(address, 0xE1, 7)
        h2, h3 = struct.unpack("<hB", e[:3])
        h4 = (_signed8(e[3]) << 4) | (e[4] & 0x0F)
        h5 = (_signed8(e[5]) << 4) | (e[4] >> 4)
        self._h = (h1, h2, h3, h4, h5, _signed8(e[6]))
        i2c.writeto_mem(address, 0xF2, b"\x01")  # humidity x1 (takes effect with ctrl_meas)
        i2c.writeto_mem(address, 0xF4, b"\x27")  # temperature x1, pressure x1, normal mode

    def read(self) -> tuple:
        """(temperature C, relative humidity %, pressure hPa)."""
        d = self._i2c.readfrom_mem(self._address, 0xF7, 8)
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        if adc_t == 0x80000:
            raise OSError("BME280 has no measurement yet")
        t1, t2, t3 = self._t
        var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
        var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14
        t_fine = var1 + var2
        celsius = ((t_fine * 5 + 128) >> 8) / 100
        return celsius, self._humidity(adc_h, t_fine), self._pressure(adc_p, t_fine)

    def _pressure(self, adc_p: int, t_fine: int) -> float | None:
        p1, p2, p3, p4, p5, p6, p7, p8, p9 = self._p
        var1 = t_fine - 128000
        var2 = var1 * var1 * p6 + ((var1 * p5) << 17) + (p4 << 35)
        var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12)
        var1 = (((1 << 47) + var1) * p1) >> 33
        if var1 == 0:
            return None
        p = 1048576 - adc_p
        numerator = ((p << 31) - var2) * 3125
        p = numerator // var1 if numerator >= 0 else -(-numerator // var1)  # C division
        var1 = (p9 * (p >> 13) * (p >> 13)) >> 25
        var2 = (p8 * p) >> 19
        return ((((p + var1 + var2) >> 8) + (p7 << 4)) / 256) / 100

    def _humidity(self, adc_h: int, t_fine: int) -> float:
        h1, h2, h3, h4, h5, h6 = self._h
        x = t_fine - 76800
        v = (((adc_h << 14) - (h4 << 20) - (h5 * x)) + 16384) >> 15
        v = v * ((((((x * h6) >> 10) * (((x * h3) >> 11) + 32768)) >> 10) + 2097152) * h2
                 + 8192 >> 14)
        v = v - (((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4)
        v = min(max(v, 0), 419430400)
        return (v >> 12) / 1024
