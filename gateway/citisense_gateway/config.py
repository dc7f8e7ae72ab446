"""Gateway configuration: embedded defaults < TOML file < CITISENSE_* environment < flags.

Every setting has a dotted name (`mqtt.url`), a TOML key (`[mqtt] url = ...`) and an
environment variable (`CITISENSE_MQTT_URL`). A bad value fails at start with the setting,
where it came from and what is expected, e.g.
    mqtt.receive_maximum = 'many' (from CITISENSE_MQTT_RECEIVE_MAXIMUM): expected an integer
The defaults run on a fresh machine: SQLite under the data directory and, with no
mqtt.url, an embedded broker.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "CITISENSE_"


class ConfigError(ValueError):
    """A configuration value the gateway cannot run with."""


def default_data_dir(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "citisense")


@dataclass(frozen=True)
class GatewaySection:
    instance: str = "gw1"  # names this instance: MQTT client ids, logs
    data_dir: str = field(default_factory=default_data_dir)
    log_level: str = "info"
    log_format: str = "json"  # json | text


@dataclass(frozen=True)
class StoreSection:
    url: str = ""  # empty: sqlite:///<data_dir>/gateway.db
    sqlite_synchronous: str = "full"
    quarantine_limit: int = 10_000


@dataclass(frozen=True)
class MqttSection:
    url: str = ""  # mqtt://host:1883 or mqtts://host:8883; empty: embedded broker
    username: str = "gateway"
    password: str = ""
    password_file: str = ""  # first line is the password (keeps it out of env and argv)
    client_id: str = ""  # empty: citisense-<instance>
    share_group: str = "gateways"  # MQTT 5 shared subscription group; empty: plain subscription
    protocol: int = 5  # 5, or 4 (3.1.1) for brokers without MQTT 5 (no shared subscriptions)
    session_expiry: int = 86_400  # seconds the broker keeps our session and queue while we are away
    receive_maximum: int = 3000  # unacknowledged messages in flight: 3 batches
    keepalive: int = 30
    ca_file: str = ""


@dataclass(frozen=True)
class EmbeddedBrokerSection:
    host: str = "127.0.0.1"
    port: int = 1883


@dataclass(frozen=True)
class IngestSection:
    batch_size: int = 1000
    # Processes receiving MQTT uplinks, each a member of the share group (ingest_workers.py);
    # 1: the gateway process itself, plenty for a city's few hundred messages a second.
    workers: int = 1


@dataclass(frozen=True)
class SerialSection:
    ports: tuple[str, ...] = ()
    baudrate: int = 115_200


@dataclass(frozen=True)
class MetricsSection:
    host: str = "127.0.0.1"
    port: int = 9108  # 0: any free port (logged); -1: off


@dataclass(frozen=True)
class ApiSection:
    host: str = "127.0.0.1"
    port: int = 8080  # HTTP API and dashboard; 0: any free port (logged); -1: off
    session_ttl: int = 43_200  # seconds an operator's login stays valid


@dataclass(frozen=True)
class LivenessSection:
    stale_after: int = 900  # seconds without a message before an online node is stale


@dataclass(frozen=True)
class CommandsSection:
    ttl: int = 3600
    retry_base: float = 10.0
    retry_cap: float = 600.0
    max_attempts: int = 8


@dataclass(frozen=True)
class RetentionSection:
    raw_days: int = 30  # raw telemetry, then hourly summaries only
    hourly_days: int = 730
    status_days: int = 90  # births, health, acks, wills
    events_days: int = 365
    interval_s: int = 3600


@dataclass(frozen=True)
class GatewayConfig:
    gateway: GatewaySection = field(default_factory=GatewaySection)
    store: StoreSection = field(default_factory=StoreSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    embedded_broker: EmbeddedBrokerSection = field(default_factory=EmbeddedBrokerSection)
    ingest: IngestSection = field(default_factory=IngestSection)
    serial: SerialSection = field(default_factory=SerialSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    api: ApiSection = field(default_factory=ApiSection)
    liveness: LivenessSection = field(default_factory=LivenessSection)
    commands: CommandsSection = field(default_factory=CommandsSection)
    retention: RetentionSection = field(default_factory=RetentionSection)

    # -- derived --------------------------------------------------------------------------
    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{Path(self.gateway.data_dir) / 'gateway.db'}"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"citisense-{self.gateway.instance}"

    def mqtt_password(self) -> str:
        if self.mqtt.password_file:
            try:
                return Path(self.mqtt.password_file).read_text().splitlines()[0].strip()
            except (OSError, IndexError) as err:
                raise ConfigError(
                    f"mqtt.password_file {self.mqtt.password_file!r}: cannot read a password "
                    f"({err})"
                ) from err
        return self.mqtt.password


# Allowed values of settings with a closed set of choices.
CHOICES: dict[str, tuple[Any, ...]] = {
    "gateway.log_level": ("debug", "info", "warning", "error"),
    "gateway.log_format": ("json", "text"),
    "store.sqlite_synchronous": ("normal", "full", "extra"),
    "mqtt.protocol": (4, 5),
}
# Inclusive ranges of numeric settings.
RANGES: dict[str, tuple[float, float]] = {
    "store.quarantine_limit": (100, 10_000_000),
    "mqtt.session_expiry": (0, 0xFFFFFFFF),
    "mqtt.receive_maximum": (1, 65_535),
    "mqtt.keepalive": (5, 65_535),
    "embedded_broker.port": (0, 65_535),
    "ingest.batch_size": (1, 65_535),
    "ingest.workers": (1, 64),
    "serial.baudrate": (300, 4_000_000),
    "metrics.port": (-1, 65_535),
    "api.port": (-1, 65_535),
    "api.session_ttl": (60, 86_400 * 30),
    "liveness.stale_after": (10, 86_400 * 30),
    "commands.ttl": (10, 86_400 * 30),
    "commands.retry_base": (0.1, 3600),
    "commands.retry_cap": (1, 86_400),
    "commands.max_attempts": (1, 1000),
    "retention.raw_days": (1, 36_500),
    "retention.hourly_days": (1, 36_500),
    "retention.status_days": (1, 36_500),
    "retention.events_days": (1, 36_500),
    "retention.interval_s": (60, 86_400 * 7),
}


def _coerce(name: str, value: Any, default: Any, origin: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{name} = {value!r} (from {origin}): expected {expected}")

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false",
                                                        "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise bad("true or false")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise bad("an integer")
        try:
            result: Any = int(value) if isinstance(value, (int, str)) else None
        except ValueError:
            result = None
        if result is None:
            raise bad("an integer")
    elif isinstance(default, float):
        if isinstance(value, bool):
            raise bad("a number")
        try:
            result = float(value) if isinstance(value, (int, float, str)) else None
        except ValueError:
            result = None
        if result is None:
            raise bad("a number")
    elif isinstance(default, tuple):
        if isinstance(value, str):
            result = tuple(v.strip() for v in value.split(",") if v.strip())
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            result = tuple(value)
        else:
            raise bad("a list of strings (comma-separated in the environment)")
    else:
        if not isinstance(value, str):
            raise bad("a string")
        result = value
    if name in CHOICES and result not in CHOICES[name]:
        raise bad("one of " + ", ".join(str(c) for c in CHOICES[name]))
    if name in RANGES:
        lo, hi = RANGES[name]
        if not lo <= result <= hi:
            raise bad(f"a value in {lo:g}..{hi:g}")
    return result


def _sections() -> list[str]:
    return [f.name for f in fields(GatewayConfig)]


def known_settings() -> list[str]:
    config = GatewayConfig()
    return [f"{s}.{f.name}" for s in _sections() for f in fields(getattr(config, s))]


def _apply(config: GatewayConfig, values: Mapping[str, tuple[Any, str]]) -> GatewayConfig:
    """Set dotted settings; `values` maps name -> (raw value, where it came from)."""
    known = set(known_settings())
    updates: dict[str, dict[str, Any]] = {}
    for name, (raw, origin) in values.items():
        if name not in known:
            close = [k for k in known if k.split(".")[-1] == name.split(".")[-1]]
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown setting {name} (from {origin}){hint}")
        section, key = name.split(".", 1)
        default = getattr(getattr(config, section), key)
        updates.setdefault(section, {})[key] = _coerce(name, raw, default, origin)
    for section, changes in updates.items():
        config = replace(config, **{section: replace(getattr(config, section), **changes)})
    return config


def from_toml(path: Path) -> dict[str, tuple[Any, str]]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"configuration file {path} is not valid TOML: {err}") from err
    values: dict[str, tuple[Any, str]] = {}
    sections = _sections()
    for section, table in data.items():
        if section not in sections or not isinstance(table, dict):
            raise ConfigError(
                f"unknown section [{section}] in {path}; sections: {', '.join(sections)}"
            )
        for key, value in table.items():
            values[f"{section}.{key}"] = (value, str(path))
    return values


def from_env(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    values: dict[str, tuple[Any, str]] = {}
    names = {
        ENV_PREFIX + name.replace(".", "_").upper(): name for name in known_settings()
    }
    for variable, value in environ.items():
        if variable in names:
            values[names[variable]] = (value, variable)
        elif variable.startswith(ENV_PREFIX) and variable not in IGNORED_ENV:
            raise ConfigError(
                f"unknown setting in environment variable {variable}; known: "
                f"{', '.join(sorted(names))}"
            )
    return values


IGNORED_ENV = frozenset({"CITISENSE_CONFIG"})  # names the file, read by load()


def load(path: str | None = None, *, environ: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> GatewayConfig:
    """Defaults, then the TOML file (or $CITISENSE_CONFIG), environment, then overrides."""
    env = os.environ if environ is None else environ
    config = GatewayConfig(gateway=GatewaySection(data_dir=default_data_dir(env)))
    file = path or env.get("CITISENSE_CONFIG")
    if file:
        config = _apply(config, from_toml(Path(file)))
    config = _apply(config, from_env(env))
    if overrides:
        config = _apply(config, {k: (v, "command line") for k, v in overrides.items()})
    check(config)
    return config


def check(config: GatewayConfig) -> None:
    """Rules between settings and on URL syntax."""
    if config.mqtt.url:
        parts = urlsplit(config.mqtt.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(
                f"mqtt.url = {config.mqtt.url!r}: expected mqtt://host[:port] or "
                "mqtts://host[:port]"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as err:
            raise ConfigError(f"mqtt.url = {config.mqtt.url!r}: {err}") from err
        if not config.mqtt.password and not config.mqtt.password_file:
            raise ConfigError(
                "mqtt.url is set but the gateway has no broker password: set mqtt.password_file "
                "(or CITISENSE_MQTT_PASSWORD); there are no default credentials"
            )
    if config.mqtt.share_group and config.mqtt.protocol != 5:
        raise ConfigError("mqtt.share_group needs mqtt.protocol = 5 (shared subscriptions are "
                          "MQTT 5); set share_group = \"\" for an MQTT 3.1.1 broker")
    if config.ingest.workers > 1 and not (config.mqtt.url and config.mqtt.share_group):
        raise ConfigError("ingest.workers > 1 needs an external MQTT 5 broker (mqtt.url) and a "
                          "shared subscription (mqtt.share_group): the workers split the "
                          "stream as members of one share group")
    scheme = urlsplit(config.store_url).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(
            f"store.url = {config.store.url!r}: expected sqlite:///path/file.db or "
            "postgresql://user@host:5432/database"
        )
    if config.commands.retry_cap < config.commands.retry_base:
        raise ConfigError("commands.retry_cap must not be below commands.retry_base")


def broker_address(config: GatewayConfig) -> tuple[str, int, bool]:
    """(host, port, tls) of the external broker."""
    parts = urlsplit(config.mqtt.url)
    tls = parts.scheme == "mqtts"
    return parts.hostname or "", parts.port or (8883 if tls else 1883), tls
