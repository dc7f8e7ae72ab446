# mypy: ignore-errors
# select for the virtual board. poll() waits on the board's sockets and UARTs
# (and any object with ioctl, like asyncio.ThreadSafeFlag) while the board
# serves timers, IRQs and Ctrl-C, instead of spinning.
import sys
from time import ticks_add, ticks_diff, ticks_ms

import _vboard
from micropython import const

POLLIN = const(1)
POLLOUT = const(4)
POLLERR = const(8)
POLLHUP = const(16)
_STREAM_POLL = const(3)
_ONE_SHOT = const(1)


def _events(obj, mask):
    if obj is sys.stdin or obj is sys.stdin.buffer:
        return POLLIN if mask & POLLIN and _vboard.stdin_any() else 0
    return obj.ioctl(_STREAM_POLL, mask) & (mask | POLLERR | POLLHUP)


class _Poll:
    def __init__(self):
        self._entries = {}  # id(obj) -> [obj, mask]

    def register(self, obj, mask=POLLIN | POLLOUT):
        self._entries[id(obj)] = [obj, mask]

    def unregister(self, obj):
        self._entries.pop(id(obj), None)

    def modify(self, obj, mask):
        entry = self._entries.get(id(obj))
        if entry is None:
            raise OSError(2)
        entry[1] = mask

    def poll(self, timeout=-1):
        return self._wait(timeout)

    def ipoll(self, timeout=-1, flags=0):
        ready = self._wait(timeout)
        if flags & _ONE_SHOT:
            for obj, _ in ready:
                self._entries[id(obj)][1] = 0
        return iter(ready)

    def _scan(self):
        ready = []
        for obj, mask in self._entries.values():
            if mask:
                ev = _events(obj, mask)
                if ev:
                    ready.append((obj, ev))
        return ready

    def _wait(self, timeout):
        forever = timeout is None or timeout < 0
        if not forever:
            deadline = ticks_add(ticks_ms(), timeout)
        while True:
            ready = self._scan()
            if ready or timeout == 0:
                return ready
            if forever:
                _vboard.wait(-1)
            else:
                left = ticks_diff(deadline, ticks_ms())
                if left <= 0:
                    return ready
                _vboard.wait(left)


def poll():
    return _Poll()


def select(rlist, wlist, xlist, timeout=None):
    p = _Poll()
    for obj in rlist:
        p.register(obj, POLLIN)
    for obj in wlist:
        entry = p._entries.get(id(obj))
        if entry:
            entry[1] |= POLLOUT
        else:
            p.register(obj, POLLOUT)
    ready = p.poll(-1 if timeout is None else int(timeout * 1000))
    r = [obj for obj, ev in ready if ev & (POLLIN | POLLERR | POLLHUP)]
    w = [obj for obj, ev in ready if ev & POLLOUT]
    x = [obj for obj, ev in ready if ev & POLLERR and obj in xlist]
    return r, w, x
