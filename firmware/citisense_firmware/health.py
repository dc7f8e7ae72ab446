"""Health and birth data: what the node reports about itself.

Nothing here reads hardware: the caller passes in the gc module (or any object with
mem_free/mem_alloc), the uptime, queue figures and link quality, so the same code runs
on the board, on the virtual board and under CPython.

heap_peak is the highest gc.mem_alloc() seen by sample(); call it where allocation
peaks (after building a message, after a GC-heavy task) and once per main-loop tick.
"""

from citisense_protocols import messages

# machine.reset_cause() constant names -> messages.RESET_*
_RESET_NAMES = (
    ("PWRON_RESET", messages.RESET_POWER_ON),
    ("HARD_RESET", messages.RESET_EXTERNAL),
    ("WDT_RESET", messages.RESET_WATCHDOG),
    ("DEEPSLEEP_RESET", messages.RESET_DEEP_SLEEP),
    ("SOFT_RESET", messages.RESET_SOFT),
    ("BROWNOUT_RESET", messages.RESET_BROWNOUT),
)
_U32 = 0xFFFFFFFF


def reset_code(cause: int, machine) -> int:
    """The messages.RESET_* code of machine.reset_cause() on this port."""
    for name, code in _RESET_NAMES:
        if getattr(machine, name, None) == cause:
            return code
    return messages.RESET_UNKNOWN


def birth_data(
    fw: str, role: int, board: str, config_digest: bytes, reset: int, loc=None, schedule=None
) -> dict:
    """Data of the birth message (messages.BIRTH_FIELDS); loc is config.Config.location."""
    data = {0: fw, 1: role, 2: board, 3: config_digest, 4: reset, 5: loc}
    if schedule is not None:
        data[6] = schedule
    return data


class Health:
    """Collects the health message of a node."""

    def __init__(self, fw: str, reset: int, gc) -> None:
        self.fw = fw
        self.reset = reset
        self._gc = gc
        self.heap_peak = 0
        self.sample()

    def sample(self) -> int:
        """Record the current heap use; returns it."""
        used = self._gc.mem_alloc()
        if used > self.heap_peak:
            self.heap_peak = used
        return used

    def data(self, uptime: int, queue: int, drops: int, rssi=None, link=None) -> dict:
        """Data of a health message (messages.HEALTH_FIELDS); rssi in dBm, link in %."""
        self.sample()
        return {
            0: min(self._gc.mem_free(), _U32),
            1: min(self.heap_peak, _U32),
            2: min(uptime, _U32),
            3: self.reset,
            4: min(queue, 65535),
            5: min(drops, _U32),
            6: None if rssi is None else max(-127, min(0, rssi)),
            7: None if link is None else max(0, min(100, link)),
            8: self.fw,
        }
