# mypy: ignore-errors
# esp32 for the virtual ESP32: NVS (kept in a host file, like flash), wake
# sources and the chip temperature, with the ESP32 port's API and errors.
import binascii

import _vboard
import uctypes
from micropython import const

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
HEAP_DATA = const(4)
HEAP_EXEC = const(1)

_ESP_ERR_NVS_NOT_FOUND = const(-4354)
_ESP_ERR_NVS_TYPE_MISMATCH = const(-4358)
_ESP_ERR_NVS_INVALID_LENGTH = const(-4364)
_ESP_ERR_NVS_KEY_TOO_LONG = const(-4366)


def raw_temperature():
    return _vboard.raw_temperature()


def wake_on_ext0(pin, level):
    pass


def wake_on_ext1(pins, level):
    pass


def wake_on_touch(wake):
    pass


def _error(code, name):
    return OSError(code, name)


class NVS:
    def __init__(self, namespace):
        self._ns = namespace

    def _key(self, key):
        if len(key) > 15:
            raise _error(_ESP_ERR_NVS_KEY_TOO_LONG, "ESP_ERR_NVS_KEY_TOO_LONG")
        return key

    def _get(self, key, kind):
        value = _vboard.nvs_get(self._ns, self._key(key))
        if value is None:
            raise _error(_ESP_ERR_NVS_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        if value[0] != kind:
            raise _error(_ESP_ERR_NVS_TYPE_MISMATCH, "ESP_ERR_NVS_TYPE_MISMATCH")
        return value[2:]

    def set_i32(self, key, value):
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise OverflowError("overflow converting long int to machine word")
        _vboard.nvs_set(self._ns, self._key(key), f"i:{value}")

    def get_i32(self, key):
        return int(self._get(key, "i"))

    def set_blob(self, key, value):
        _vboard.nvs_set(self._ns, self._key(key), "b:" + binascii.hexlify(value).decode())

    def get_blob(self, key, buffer):
        data = binascii.unhexlify(self._get(key, "b"))
        if len(buffer) < len(data):
            raise _error(_ESP_ERR_NVS_INVALID_LENGTH, "ESP_ERR_NVS_INVALID_LENGTH")
        buffer[: len(data)] = data
        return len(data)

    def erase_key(self, key):
        if not _vboard.nvs_erase(self._ns, self._key(key)):
            raise _error(_ESP_ERR_NVS_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")

    def commit(self):
        _vboard.nvs_commit()


# The flash partition table of the citisense ESP32 image (4 MiB flash): MicroPython's
# usual layout plus a "romfs" partition for the application (see the board definitions).
# Only "romfs" is backed by the simulation; the others are listed but refuse I/O.
_ROMFS_SUBTYPE = const(0x80)  # a user-defined data subtype
_TABLE = (
    # (type, subtype, address, size, label)
    (1, 0x02, 0x9000, 0x6000, "nvs"),
    (1, 0x01, 0xF000, 0x1000, "phy_init"),
    (0, 0x00, 0x10000, 0x1F0000, "factory"),
    (1, _ROMFS_SUBTYPE, 0x200000, 0x50000, "romfs"),
    (1, 0x81, 0x250000, 0x1B0000, "vfs"),
)
_EINVAL = const(22)
_ENODEV = const(19)


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        if id in (Partition.BOOT, Partition.RUNNING):
            id = "factory"
        for entry in _TABLE:
            if entry[4] == id:
                self._entry = entry
                break
        else:
            raise ValueError("partition not found")
        if block_size < 1 or block_size & (block_size - 1):
            raise ValueError("invalid block size")
        self._block = block_size

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=4096):
        found = []
        for entry in _TABLE:
            if (entry[0] == type and subtype in (0xFF, entry[1])
                    and label in (None, entry[4])):
                found.append(Partition(entry[4], block_size))
        return found

    def info(self):
        return self._entry + (False,)  # noqa: RUF005 (MicroPython has no (*a, b))

    def __repr__(self):
        t, s, a, n, label = self._entry
        return (f"<Partition type={t}, subtype={s}, address={a}, size={n}, label={label}, "
                "encrypted=0>")

    def _check(self, result):
        if isinstance(result, int) and result < 0:
            raise OSError(-result)
        return result

    def _offset(self, block_num, offset, length):
        if self._entry[4] != "romfs":
            raise OSError(_ENODEV)  # not simulated
        start = block_num * self._block + offset
        if start < 0 or start + length > self._entry[3]:
            raise OSError(_EINVAL)
        return start

    def readblocks(self, block_num, buf, offset=0):
        start = self._offset(block_num, offset, len(buf))
        self._check(_vboard.part_read(start, uctypes.addressof(buf), len(buf)))

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:  # whole blocks: erased first, as the ESP32 port does
            start = self._offset(block_num, 0, len(buf))
            sectors = (len(buf) + 4095) // 4096 * 4096
            self._check(_vboard.part_erase(start - start % 4096, sectors))
        else:
            start = self._offset(block_num, offset, len(buf))
        self._check(_vboard.part_write(start, uctypes.addressof(buf), len(buf)))

    def ioctl(self, cmd, arg):
        if cmd == 4:
            return self._entry[3] // self._block
        if cmd == 5:
            return self._block
        if cmd == 6:
            self._check(_vboard.part_erase(self._offset(arg, 0, self._block), self._block))
            return 0
        return None
