"""Particulate matter sensors on a UART: Plantower PMS5003 and Nova Fitness SDS011.

Both report about once a second on their own (active mode). poll() parses what arrived
and returns the newest (pm2.5, pm10) in ug/m3 since the previous poll, or None: a sensor
that stops talking reads as missing, never as its last value.
"""

_MAX_BUFFER = 64


class _UartSensor:
    FRAME = 0
    HEAD = b""

    def __init__(self, uart) -> None:
        self._uart = uart
        self._buffer = b""

    def poll(self) -> tuple | None:
        waiting = self._uart.any()
        if waiting:
            self._buffer = (self._buffer + (self._uart.read(waiting) or b""))[-_MAX_BUFFER:]
        newest = None
        while True:
            start = self._buffer.find(self.HEAD)
            if start < 0:
                self._buffer = self._buffer[-1:]
                return newest
            if len(self._buffer) - start < self.FRAME:
                self._buffer = self._buffer[start:]
                return newest
            frame = self._buffer[start:start + self.FRAME]
            reading = self._parse(frame)
            if reading is None:
                self._buffer = self._buffer[start + 1:]  # noise: resynchronise
            else:
                newest = reading
                self._buffer = self._buffer[start + self.FRAME:]

    def _parse(self, frame: bytes) -> tuple | None:
        raise NotImplementedError


class PMS5003(_UartSensor):
    """32-byte frames 42 4D, length, 13 big-endian words, checksum (sum of the rest)."""

    FRAME = 32
    HEAD = b"\x42\x4d"

    def __init__(self, uart, set_pin=None) -> None:
        super().__init__(uart)
        self._set = set_pin

    def power(self, on: bool) -> None:
        if self._set is not None:
            self._set.value(1 if on else 0)  # SET high: working, low: sleeping

    def _parse(self, frame: bytes) -> tuple | None:
        if frame[2] != 0 or frame[3] != 28 or sum(frame[:30]) != frame[30] << 8 | frame[31]:
            return None
        # Words 4 and 5: PM2.5 and PM10 under atmospheric conditions.
        return frame[12] << 8 | frame[13], frame[14] << 8 | frame[15]


class SDS011(_UartSensor):
    """10-byte frames AA C0 pm25 pm10 (0.1 ug/m3, little-endian) id checksum AB."""

    FRAME = 10
    HEAD = b"\xaa\xc0"

    def power(self, on: bool) -> None:
        # Command 6 (sleep/work), "set", to every sensor on the line (id FFFF).
        body = bytes([6, 1, 1 if on else 0]) + bytes(10) + b"\xff\xff"
        self._uart.write(b"\xaa\xb4" + body + bytes([sum(body) & 0xFF]) + b"\xab")

    def _parse(self, frame: bytes) -> tuple | None:
        if frame[9] != 0xAB or sum(frame[2:8]) & 0xFF != frame[8]:
            return None
        return (frame[2] | frame[3] << 8) / 10, (frame[4] | frame[5] << 8) / 10
