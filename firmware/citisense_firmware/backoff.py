"""Reconnect delays: exponential backoff with full jitter, pure given a random source.

The ceiling doubles per failed attempt from `base_ms` up to `cap_ms`, and each delay is
drawn uniformly from [0, ceiling] ("full jitter"): nodes that lost the broker together
spread their first retries over `base_ms` and later ones over ever wider windows, so a
district does not reconnect in the same second.
"""


class Backoff:
    """`rand_below(n)` returns an integer in [0, n): pass random.randrange, or a stub."""

    def __init__(self, rand_below, base_ms: int = 2000, cap_ms: int = 300_000) -> None:
        if not 0 < base_ms <= cap_ms:
            raise ValueError("need 0 < base_ms <= cap_ms")
        self.rand_below = rand_below
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.attempt = 0

    def ceiling_ms(self) -> int:
        ceiling = self.base_ms
        for _ in range(self.attempt):  # stops at the cap: no huge shifts
            if ceiling >= self.cap_ms:
                break
            ceiling *= 2
        return min(ceiling, self.cap_ms)

    def next_ms(self) -> int:
        """Delay before the next attempt; each call counts one more failure."""
        ceiling = self.ceiling_ms()
        self.attempt += 1
        return self.rand_below(ceiling + 1)

    def reset(self) -> None:
        """After a successful connection: start again from `base_ms`."""
        self.attempt = 0
