"""Pure domain logic: liveness and drift, parking counts, air quality aggregates, retention."""

from __future__ import annotations

import dataclasses

from citisense_gateway import air, parking, retention, twin
from citisense_gateway.store.base import Node, Twin

BASE = Twin(node_id=1, last_seen=1000.0, via="mqtt", online=True, boot=1, birth_seq=0,
            firmware="1", board="b", config_hash="aa", reset_cause=1, reported_schedule=3,
            desired_schedule="night", desired_version=3, health="{}", bay_state=None,
            indicator=None, reserved_until=None, desired_config=None, confirmed_config=None)


def test_liveness() -> None:
    assert twin.liveness(BASE, 1100.0, 900) == twin.ONLINE
    assert twin.liveness(BASE, 2000.0, 900) == twin.STALE
    assert twin.liveness(dataclasses.replace(BASE, online=False), 1100.0, 900) == twin.OFFLINE
    assert twin.liveness(dataclasses.replace(BASE, last_seen=None), 0.0, 900) == twin.NEVER_SEEN


def test_drift() -> None:
    assert not twin.schedule_drift(BASE)
    assert twin.schedule_drift(dataclasses.replace(BASE, reported_schedule=0))
    assert not twin.schedule_drift(dataclasses.replace(BASE, desired_version=None))
    desired = dataclasses.replace(BASE, desired_config="{}", confirmed_config="aa")
    assert not twin.config_drift(desired)
    assert twin.config_drift(dataclasses.replace(desired, config_hash="bb"))


def test_free_bays_exclude_reserved_and_unknown() -> None:
    nodes = [Node(i, "parking", b"", "", zone="market") for i in range(1, 6)]
    nodes.append(Node(9, "lighting", b"", "", zone="market"))
    states = {1: 0, 2: 0, 3: 1, 4: 2}
    twins = {i: dataclasses.replace(BASE, node_id=i, bay_state=s) for i, s in states.items()}
    twins[2] = dataclasses.replace(twins[2], reserved_until=2000.0)
    counts = parking.count(nodes, twins, now=1000.0)["market"]
    assert (counts.free, counts.occupied, counts.reserved, counts.unknown, counts.total) == (
        1, 1, 1, 2, 5)
    later = parking.count(nodes, twins, now=3000.0)["market"]
    assert later.free == 2  # the reservation ended


def test_air_hours_honour_quality_flags() -> None:
    hour = 1767225600
    samples = [
        (hour + 10, [100, 200, 2000, 2000, 500, 10130, 0]),
        (hour + 20, [300, 400, 2500, 2000, 500, 10130, 0]),
        (hour + 30, [9000, 9000, 3000, 2000, 800, 10130, air.HUMID]),  # PM over-reads, NO2 ok
        (hour + 40, [9000, 9000, 9000, 2000, 500, 10130, air.WARMUP]),  # nothing counts
        (hour + 3700, [None, None, 100, 2000, 500, 10130, air.FAULT]),
    ]
    first, second = air.hourly(samples)
    assert (first.samples, first.pm25, first.pm10, first.no2) == (4, 20.0, 30.0, 250.0)
    assert first.flags == air.HUMID | air.WARMUP
    assert (second.pm25, second.no2) == (None, None)
    first_index, second_index = air.eaqi([first, second])
    assert (first_index.level, first_index.name, first_index.driver) == (5, "very poor", "no2")
    assert (second_index.level, second_index.driver) == (2, "pm25")  # PM of the last 24 h
    assert air.eaqi([second])[0].name == "no data"


def test_hourly_summaries() -> None:
    lamp = retention.summarise([[80, 0, 400, 1000, 5, 1], [40, 0, None, 1010, 5, 4]])
    assert lamp["level"] == {"n": 2, "mean": 60, "min": 40, "max": 80}
    assert lamp["power"]["n"] == 1 and lamp["faults"] == 5
    airs = retention.summarise([[100, 100, 100, 0, 0, 10000, 0], [900, 900, 900, 0, 0, 10000,
                                                                   air.HUMID]])
    assert airs["pm25"]["mean"] == 100 and airs["no2"]["mean"] == 500 and airs["flags"] == 2
