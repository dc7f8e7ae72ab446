"""An MQTT 3.1.1 broker inside the gateway (amqtt), for a machine with nothing installed.

It enforces the same accounts and topic rules as the generated Mosquitto files (acl.py),
read from the node registry, plus a gateway account whose random password lives only in
this process. amqtt speaks MQTT 3.1.1: no shared subscriptions, so one gateway instance
per embedded broker; production runs Mosquitto or EMQX.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from citisense_gateway.acl import Account, allowed, verify_password

log = logging.getLogger("citisense.embedded_broker")


class AccountBook:
    """The broker accounts in force; replaced whenever the registry is reread."""

    def __init__(self) -> None:
        self._accounts: dict[str, Account] = {}

    def replace(self, accounts: Iterable[Account]) -> None:
        self._accounts = {a.user: a for a in accounts}

    def get(self, user: str | None) -> Account | None:
        return self._accounts.get(user or "")


@dataclass
class _BookConfig:
    book: Any = None


def _book(plugin: Any) -> AccountBook:
    book = plugin.context.config.book
    assert isinstance(book, AccountBook)
    return book


class RegistryAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    Config = _BookConfig

    async def authenticate(self, *, session: Session) -> bool | None:
        account = _book(self).get(session.username)
        return account is not None and verify_password(session.password or "",
                                                       account.password_hash)


class RegistryTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    Config = _BookConfig

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        account = _book(self).get(session.username if session else None)
        if account is None or not topic:
            return False
        return allowed(account, topic, write=action == Action.PUBLISH)


class EmbeddedBroker:
    def __init__(self, host: str, port: int, book: AccountBook) -> None:
        self.host = host
        self.port = port
        self.book = book
        self._broker: Broker | None = None

    async def start(self) -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}",
                                      "max_connections": 10_000}},
            "plugins": {
                f"{__name__}.RegistryAuthPlugin": {"book": self.book},
                f"{__name__}.RegistryTopicPlugin": {"book": self.book},
            },
        }
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded MQTT broker listening", extra={"bind": f"{self.host}:{self.port}"})

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
