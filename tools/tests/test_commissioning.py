"""Commissioning: births compared with what was flashed, and births received from a real
Mosquitto started here (MAC checked with the node's key)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as publish
import pytest

from citisense_protocols import messages, topics
from citisense_tools.commissioning import (
    Birth,
    Broker,
    Expected,
    MqttBirthSource,
    describe,
    differences,
)
from citisense_tools.errors import CommandError

KEY = bytes(range(1, 33))  # test-only
NODE = 42


def birth_message(key: bytes = KEY, node: int = NODE, fw: str = "1.0.0") -> bytes:
    data = {0: fw, 1: messages.LIGHTING, 2: "esp32-devkitc", 3: bytes.fromhex("0011223344556677"),
            4: messages.RESET_POWER_ON, 5: [520907000, 51214000]}
    return messages.encode_signed(key, messages.uplink(messages.BIRTH, node, 7, 1, 5,
                                                       messages.TQ_UPTIME, data))


EXPECTED = Expected(node=NODE, fw="1.0.0", role="lighting", board="esp32-devkitc",
                    cfg="0011223344556677", loc=(520907000, 51214000))


def test_a_matching_birth_has_no_differences() -> None:
    birth = Birth(NODE, "1.0.0", "lighting", "esp32-devkitc", "0011223344556677", 1,
                  (520907000, 51214000), True)
    assert differences(birth, EXPECTED) == []
    assert describe(birth) == ("node 42: firmware 1.0.0, lighting on esp32-devkitc, at "
                               "52.0907000, 5.1214000, config 0011223344556677, reset cause "
                               "power-on")


def test_broker_urls_and_their_passwords() -> None:
    broker = Broker.from_url("mqtt://gateway:s%40cret@broker.city")
    assert broker == Broker("broker.city", 1883, False, "gateway", "s@cret")
    assert Broker.from_url("mqtts://broker.city").port == 8883
    with pytest.raises(CommandError) as bad:
        Broker.from_url("http://gateway:s3cret@broker.city")
    assert "s3cret" not in str(bad.value)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto broker on a free local port, anonymous access, no persistence."""
    binary = shutil.which("mosquitto")
    if binary is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.025)
        yield Broker("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def _publish(broker: Broker, payload: bytes, node: int = NODE) -> None:
    publish.single(topics.topic(node, messages.BIRTH), payload, qos=1, hostname=broker.host,
                   port=broker.port)


@pytest.mark.broker
def test_the_birth_arrives_through_the_broker(mosquitto: Broker) -> None:
    with MqttBirthSource(mosquitto).watch(NODE, KEY) as wait:
        _publish(mosquitto, birth_message(node=NODE + 1), node=NODE + 1)  # another node
        _publish(mosquitto, birth_message())
        birth = wait(10)
    assert birth is not None and birth.verified
    assert differences(birth, EXPECTED) == []


@pytest.mark.broker
def test_a_birth_under_another_key_is_reported(mosquitto: Broker) -> None:
    with MqttBirthSource(mosquitto).watch(NODE, KEY) as wait:
        _publish(mosquitto, birth_message(key=bytes(range(2, 34))))
        with pytest.raises(CommandError, match="holds another key"):
            wait(1)


@pytest.mark.broker
def test_no_birth_in_time_is_none(mosquitto: Broker) -> None:
    with MqttBirthSource(mosquitto).watch(NODE, KEY) as wait:
        assert wait(0.3) is None


def test_an_unreachable_broker_is_named() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = MqttBirthSource(Broker("127.0.0.1", port))
    with pytest.raises(CommandError, match=f"cannot reach the MQTT broker at 127.0.0.1:{port}"):
        source.watch(NODE, KEY).__enter__()
