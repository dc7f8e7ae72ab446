"""Health and birth data follow the message catalogue."""

from __future__ import annotations

from types import SimpleNamespace

from citisense_firmware.uplink import Health, birth_data, reset_code
from citisense_protocols import catalogue, messages


class FakeGC:
    def __init__(self) -> None:
        self.alloc = 30_000

    def mem_alloc(self) -> int:
        return self.alloc

    def mem_free(self) -> int:
        return 110 * 1024 - self.alloc


def uplink_body(kind: int, data: object) -> dict[int, object]:
    return catalogue.decode_body(messages.uplink(kind, 1, 0, 0, 10, 0, data))


def test_health_reports_the_heap_peak_between_samples() -> None:
    gc = FakeGC()
    health = Health("1.2.0", messages.RESET_WATCHDOG, gc)
    gc.alloc = 80_000
    health.sample()
    gc.alloc = 40_000
    data = health.data(uptime=3600, queue=12, drops=3, rssi=-71, link=None)
    assert uplink_body(messages.HEALTH, data)[messages.KEY_DATA] == data
    assert data[0] == 110 * 1024 - 40_000 and data[1] == 80_000
    assert (data[2], data[3], data[4], data[5], data[6], data[7], data[8]) == (
        3600, messages.RESET_WATCHDOG, 12, 3, -71, None, "1.2.0",
    )


def test_health_clamps_to_the_catalogue_ranges() -> None:
    data = Health("x", 0, FakeGC()).data(uptime=2**40, queue=10**6, drops=2**40, rssi=5, link=250)
    uplink_body(messages.HEALTH, data)
    assert (data[2], data[4], data[6], data[7]) == (2**32 - 1, 65535, 0, 100)


def test_birth_data_is_valid() -> None:
    data = birth_data("1.2.0", messages.LIGHTING, "esp32-devkitc", bytes(8),
                      messages.RESET_POWER_ON, [520907000, -51214000], schedule=4)
    assert uplink_body(messages.BIRTH, data)[messages.KEY_DATA][5] == [520907000, -51214000]
    uplink_body(messages.BIRTH, birth_data("1.2.0", messages.AIR, "b", bytes(8), 0))


def test_reset_causes_map_by_the_ports_constant_names() -> None:
    machine = SimpleNamespace(PWRON_RESET=1, HARD_RESET=2, WDT_RESET=3, DEEPSLEEP_RESET=4,
                              SOFT_RESET=5)
    assert [reset_code(c, machine) for c in range(7)] == [
        messages.RESET_UNKNOWN, messages.RESET_POWER_ON, messages.RESET_EXTERNAL,
        messages.RESET_WATCHDOG, messages.RESET_DEEP_SLEEP, messages.RESET_SOFT,
        messages.RESET_UNKNOWN,
    ]
