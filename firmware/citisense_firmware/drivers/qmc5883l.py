"""QST QMC5883L three-axis magnetometer on I2C (datasheet 1.0): field in nT.

Continuous mode, 8 G range, 200 Hz, oversampling 512: the bay's field is read whenever
the detector asks. An overflowing reading (steel too close) is a failed read.
"""

import struct

ADDRESS = 0x0D
_NT_PER_LSB_8G = 100000 / 3000  # 3000 LSB per gauss, 1 G = 100000 nT


class QMC5883L:
    def __init__(self, i2c, address: int = ADDRESS) -> None:
        self._i2c = i2c
        self._address = address
        i2c.writeto_mem(address, 0x0B, b"\x01")  # SET/RESET period, as the datasheet asks
        i2c.writeto_mem(address, 0x09, b"\x1d")  # OSR 512, 8 G, 200 Hz, continuous

    def read(self) -> tuple | None:
        """(x, y, z) in nT, or None when the reading overflowed."""
        data = self._i2c.readfrom_mem(self._address, 0x00, 7)
        if data[6] & 0x02:
            return None
        x, y, z = struct.unpack("<hhh", data[:6])
        return (round(x * _NT_PER_LSB_8G), round(y * _NT_PER_LSB_8G),
                round(z * _NT_PER_LSB_8G))
