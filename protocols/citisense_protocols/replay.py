"""Replay protection: a 64-wide sliding window over monotonic message counters.

Counters may arrive out of order (store-and-forward queues, retries) but each is
accepted once. The uplink counter is (boot << 32) | seq, so a reboot jumps past every
counter of the previous boot. Counters reach 2**64 - 1: long ints on MicroPython.

Check the MAC before calling accept(): a forged counter must not move the window.
"""

from citisense_protocols.errors import AuthError

WIDTH = 64
_FULL = (1 << WIDTH) - 1
MAX_COUNTER = (1 << 64) - 1

REPLAYED = "counter replayed"
TOO_OLD = "counter older than the replay window"
OUT_OF_RANGE = "counter out of range"


def uplink_counter(boot: int, seq: int) -> int:
    """The authenticated counter of an uplink message."""
    if not 0 <= boot <= 0xFFFFFFFF or not 0 <= seq <= 0xFFFFFFFF:
        raise AuthError(OUT_OF_RANGE)
    return (boot << 32) | seq


class ReplayWindow:
    """Accepts each counter once, and none older than WIDTH below the highest seen.

    State is two ints (`highest`, `seen`) so it can be persisted and restored:
    bit i of `seen` records that counter highest - i was accepted.
    """

    def __init__(self, highest: int = -1, seen: int = 0) -> None:
        self.highest = highest  # -1: nothing accepted yet
        self.seen = seen & _FULL

    @classmethod
    def resume(cls, highest: int) -> "ReplayWindow":
        """After a restart that persisted only the highest counter: reject all at or below."""
        return cls(highest, _FULL)

    def check(self, counter: int) -> None:
        """Raise AuthError unless `counter` would be accepted; never changes the window."""
        if not 0 <= counter <= MAX_COUNTER:
            raise AuthError(OUT_OF_RANGE)
        if counter > self.highest:
            return
        age = self.highest - counter
        if age >= WIDTH:
            raise AuthError(TOO_OLD)
        if (self.seen >> age) & 1:
            raise AuthError(REPLAYED)

    def accept(self, counter: int) -> None:
        """Record `counter` as used; raise AuthError if it is stale or replayed."""
        self.check(counter)
        if counter > self.highest:
            shift = counter - self.highest
            self.seen = ((self.seen << shift) | 1) & _FULL if shift < WIDTH else 1
            self.highest = counter
        else:
            self.seen |= 1 << (self.highest - counter)
