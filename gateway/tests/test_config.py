"""Configuration: defaults run anywhere; file < environment < flags; bad values explained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from citisense_gateway.config import ConfigError, load


def test_defaults_need_no_setup(tmp_path: Path) -> None:
    cfg = load(environ={"XDG_DATA_HOME": str(tmp_path)})
    assert cfg.store_url == f"sqlite:///{tmp_path / 'citisense' / 'gateway.db'}"
    assert cfg.mqtt.url == ""  # embedded broker
    assert cfg.client_id == "citisense-gw1"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[ingest]\nbatch_size = 200\n[retention]\nraw_days = 7\n'
                    '[serial]\nports = ["/dev/ttyUSB0"]\n')
    cfg = load(str(path), environ={"CITISENSE_INGEST_BATCH_SIZE": "300",
                                   "CITISENSE_SERIAL_PORTS": "/dev/a, /dev/b"},
               overrides={"ingest.batch_size": "400"})
    assert (cfg.ingest.batch_size, cfg.retention.raw_days) == (400, 7)
    assert cfg.serial.ports == ("/dev/a", "/dev/b")
    assert load(environ={"CITISENSE_CONFIG": str(path)}).ingest.batch_size == 200


@pytest.mark.parametrize(("env", "message"), [
    ({"CITISENSE_MQTT_RECEIVE_MAXIMUM": "many"},
     "mqtt.receive_maximum = 'many' (from CITISENSE_MQTT_RECEIVE_MAXIMUM): expected an integer"),
    ({"CITISENSE_MQTT_RECEIVE_MAXIMUM": "0"}, "expected a value in 1..65535"),
    ({"CITISENSE_GATEWAY_LOG_LEVEL": "loud"}, "expected one of debug, info, warning, error"),
    ({"CITISENSE_MQTT_PORT": "1883"}, "unknown setting in environment variable"),
    ({"CITISENSE_MQTT_URL": "http://broker"}, "expected mqtt://host[:port]"),
    ({"CITISENSE_MQTT_URL": "mqtt://broker:1883"}, "no default credentials"),
    ({"CITISENSE_MQTT_PROTOCOL": "4"}, "share_group needs mqtt.protocol = 5"),
    ({"CITISENSE_STORE_URL": "mysql://db"}, "store.url = 'mysql://db'"),
    ({"CITISENSE_INGEST_WORKERS": "2"}, "ingest.workers > 1 needs an external MQTT 5 broker"),
    ({"CITISENSE_INGEST_WORKERS": "2", "CITISENSE_MQTT_URL": "mqtt://b", "CITISENSE_MQTT_PASSWORD":
      "x", "CITISENSE_MQTT_SHARE_GROUP": ""}, "and a shared subscription (mqtt.share_group)"),
])
def test_bad_values_are_explained(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(environ=env)


def test_file_errors_name_file_and_section(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[mqtt]\nurl = 5\n")
    with pytest.raises(ConfigError, match=r"mqtt.url = 5 \(from .*gw.toml\): expected a string"):
        load(str(path), environ={})
    path.write_text("[mqt]\nurl = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown section \[mqt\]"):
        load(str(path), environ={})
    path.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(path), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.toml"), environ={})
    with pytest.raises(ConfigError, match=r"did you mean ingest\.batch_size"):
        load(environ={}, overrides={"batch_size": "1"})


def test_password_file_keeps_the_secret_out_of_argv(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = load(environ={}, overrides={"mqtt.url": "mqtt://b:1883",
                                      "mqtt.password_file": str(tmp_path / "pw")})
    assert cfg.mqtt_password() == "s3cret"
