# mypy: ignore-errors
# esp32 for the virtual ESP32: NVS (kept in a host file, like flash), wake
# sources and the chip temperature, with the ESP32 port's API and errors.
import binascii

import _vboard
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
