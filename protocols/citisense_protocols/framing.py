"""Serial framing: frame = COBS(message || CRC-32 little-endian) || 0x00.

COBS removes every zero byte from the frame body, so 0x00 only ever marks a frame end
and a receiver resynchronises after noise by dropping bytes up to the next 0x00.
CRC-32/ISO-HDLC (binascii.crc32, present on ESP32 MicroPython and CPython) catches
the bit errors that still decode as valid COBS.

Offsets in FrameError count bytes of the encoded frame (delimiter excluded); a CRC
mismatch concerns the whole frame and carries offset -1.
"""

import binascii

from citisense_protocols.errors import FrameError

MAX_FRAME = 512  # decoded bytes: message + CRC
CRC_LENGTH = 4
MAX_MESSAGE = MAX_FRAME - CRC_LENGTH
# COBS adds one code byte per started run of 254 non-zero bytes, so a decoded frame of
# MAX_FRAME bytes never encodes to more than this.
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1

BAD_COBS = "bad COBS"
BAD_CRC = "bad CRC"
OVERSIZE = "oversize"
ZERO = b"\x00"


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode `data`; the result contains no 0x00 byte."""
    out = bytearray()
    start = 0
    end_of_data = len(data)
    while True:
        limit = min(start + 254, end_of_data)
        zero = data.find(ZERO, start, limit)
        stop = limit if zero < 0 else zero
        out.append(stop - start + 1)
        out += data[start:stop]
        if zero >= 0:
            start = zero + 1  # the code byte stands for this zero
        elif stop == end_of_data:
            return bytes(out)
        else:
            start = stop  # a full 254-byte run: code 0xFF implies no zero


def cobs_decode(encoded: bytes | bytearray, limit: int = MAX_FRAME) -> bytes:
    """Decode a COBS body (no 0x00 inside) of at most `limit` decoded bytes."""
    zero = encoded.find(ZERO)
    if zero >= 0:
        raise FrameError(BAD_COBS + ": zero byte inside frame", zero)
    out = bytearray()
    pos = 0
    end = len(encoded)
    while pos < end:
        code = encoded[pos]
        block_end = pos + code
        if block_end > end:
            raise FrameError(BAD_COBS + ": block runs past frame end", pos)
        out += encoded[pos + 1 : block_end]
        if code != 0xFF and block_end < end:
            out.append(0)
        if len(out) > limit:
            raise FrameError(OVERSIZE, block_end)
        pos = block_end
    return bytes(out)


def _crc_bytes(message: bytes) -> bytes:
    return (binascii.crc32(message) & 0xFFFFFFFF).to_bytes(CRC_LENGTH, "little")


def encode_frame(message: bytes) -> bytes:
    """The bytes to write on the wire for `message`, delimiter included."""
    if len(message) > MAX_MESSAGE:
        raise FrameError(f"{OVERSIZE}: message longer than {MAX_MESSAGE} bytes", MAX_MESSAGE)
    return cobs_encode(bytes(message) + _crc_bytes(message)) + ZERO


def decode_frame(frame: bytes | bytearray) -> bytes:
    """The message inside one encoded frame; the trailing 0x00 may be left off."""
    if frame and frame[-1] == 0:
        frame = frame[:-1]
    if len(frame) > MAX_ENCODED:
        raise FrameError(OVERSIZE, MAX_ENCODED)
    decoded = cobs_decode(frame)
    if len(decoded) < CRC_LENGTH:
        raise FrameError(BAD_CRC + ": frame shorter than its CRC", len(frame))
    message = decoded[:-CRC_LENGTH]
    if decoded[-CRC_LENGTH:] != _crc_bytes(message):
        raise FrameError(BAD_CRC)
    return message


class FrameDecoder:
    """Turns a byte stream into messages, dropping corrupt frames and counting why.

    Memory stays within one fixed buffer of MAX_ENCODED bytes whatever arrives: a frame
    that outgrows it is counted as oversize and skipped up to the next 0x00.
    Empty frames (0x00 0x00) are ignored: senders may send a lone 0x00 to flush noise.
    """

    def __init__(self) -> None:
        self._buf = bytearray(MAX_ENCODED)
        self._len = 0
        self._skipping = False  # inside an oversize frame: drop up to the next 0x00
        self.frames = 0
        self.bad_cobs = 0
        self.bad_crc = 0
        self.oversize = 0
        self.last_error: FrameError | None = None

    @property
    def dropped(self) -> int:
        return self.bad_cobs + self.bad_crc + self.oversize

    def feed(self, data: bytes) -> list[bytes]:
        """Consume received bytes; return the messages of every frame they complete."""
        messages = []
        start = 0
        end = len(data)
        while start < end:
            zero = data.find(ZERO, start)
            stop = end if zero < 0 else zero
            self._append(data, start, stop)
            if zero < 0:
                break
            if self._skipping:
                self._skipping = False
            elif self._len:
                message = self._complete()
                if message is not None:
                    messages.append(message)
            self._len = 0
            start = zero + 1
        return messages

    def _append(self, data: bytes, start: int, stop: int) -> None:
        if self._skipping or start == stop:
            return
        length = self._len + stop - start
        if length > MAX_ENCODED:
            self._drop(FrameError(OVERSIZE, MAX_ENCODED))
            self._skipping = True
            self._len = 0
            return
        self._buf[self._len : length] = data[start:stop]
        self._len = length

    def _complete(self) -> bytes | None:
        try:
            message = decode_frame(self._buf[: self._len])
        except FrameError as error:
            self._drop(error)
            return None
        self.frames += 1
        return message

    def _drop(self, error: FrameError) -> None:
        self.last_error = error
        if error.reason.startswith(BAD_COBS):
            self.bad_cobs += 1
        elif error.reason.startswith(BAD_CRC):
            self.bad_crc += 1
        else:
            self.oversize += 1
