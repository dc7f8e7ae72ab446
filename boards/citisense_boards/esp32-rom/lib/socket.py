# mypy: ignore-errors
# socket for the virtual ESP32: TCP through the board to loopback only, with
# the blocking, timeout and non-blocking behaviour (and errno values) of
# MicroPython's lwIP sockets. Anything beyond 127.0.0.0/8 is unreachable.
import binascii

import _vboard
import uctypes
from micropython import const

AF_INET = const(2)
SOCK_STREAM = const(1)
SOCK_DGRAM = const(2)
IPPROTO_IP = const(0)
IPPROTO_TCP = const(6)
SOL_SOCKET = const(0xFFF)
SO_REUSEADDR = const(4)
TCP_NODELAY = const(1)

_EAGAIN = const(11)
_EINVAL = const(22)
_EOPNOTSUPP = const(95)
_EAI_FAIL = const(-202)
_STREAM_POLL = const(3)
_CHUNK = const(1460)


def _resolve(host):
    if host == "localhost":
        return "127.0.0.1"
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts):
        return host
    raise OSError(_EAI_FAIL)


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    return [(AF_INET, SOCK_STREAM, IPPROTO_TCP, "", (_resolve(host), port))]


def _data(result):
    # Reads return hex data, or a negative errno.
    if isinstance(result, int):
        raise OSError(-result)
    return binascii.unhexlify(result)


def _count(result):
    # Writes return a byte count, or a negative errno.
    if result < 0:
        raise OSError(-result)
    return result


class socket:
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=IPPROTO_TCP):
        if type != SOCK_STREAM:
            raise OSError(_EOPNOTSUPP)
        self._h = _vboard.sock_new()
        self._timeout = -1  # ms: -1 blocks, 0 never waits

    def settimeout(self, value):
        self._timeout = -1 if value is None else int(value * 1000)

    def setblocking(self, flag):
        self._timeout = -1 if flag else 0

    def setsockopt(self, level, optname, value):
        pass

    def connect(self, address):
        result = _vboard.sock_connect(self._h, address[0], address[1], self._timeout)
        if result < 0:
            raise OSError(-result)

    def _send(self, data, timeout):
        # By address (_vboard copies the bytes): no copy left on the heap.
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        return _vboard.sock_send(self._h, uctypes.addressof(data), len(data), timeout)

    def send(self, data):
        return _count(self._send(data, self._timeout))

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[_count(self._send(view, -1)) :]

    def write(self, data):
        result = self._send(data, self._timeout)
        return None if result == -_EAGAIN else _count(result)

    def recv(self, bufsize):
        return _data(_vboard.sock_recv(self._h, bufsize, self._timeout))

    def read(self, size=-1):
        if size >= 0:
            result = _vboard.sock_recv(self._h, size, self._timeout)
            return None if result == -_EAGAIN else _data(result)
        data = b""
        while True:
            chunk = self.read(_CHUNK)
            if not chunk:
                return data if data or chunk is not None else None
            data += chunk

    def readinto(self, buf, nbytes=-1):
        data = self.read(len(buf) if nbytes < 0 else nbytes)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        line = b""
        while not line.endswith(b"\n"):
            byte = self.read(1)
            if not byte:
                return line if line or byte is not None else None
            line += byte
        return line

    def ioctl(self, req, arg):
        if req != _STREAM_POLL:
            return -_EINVAL
        return _vboard.sock_poll(self._h)

    def makefile(self, mode="rb", buffering=0):
        return self

    def close(self):
        _vboard.sock_close(self._h)
