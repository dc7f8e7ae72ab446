"""The gateway parts the API works with, handed over by the service that runs it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from citisense_gateway.api.accounts import Accounts
from citisense_gateway.commands import Commands
from citisense_gateway.parking import Parking
from citisense_gateway.reconcile import Reconciler
from citisense_gateway.store.base import Store


@dataclass
class Services:
    store: Store
    commands: Commands
    reconciler: Reconciler
    parking: Parking
    accounts: Accounts
    clock: Callable[[], float] = field(default=time.time)
    stale_after: float = 900.0  # seconds of silence before an online node counts as stale
    session_ttl: float = 12 * 3600.0
    # Called after a node is added or removed, so the gateway's keyring and broker accounts
    # follow at once instead of at their next periodic refresh.
    registry_changed: Callable[[], Awaitable[None]] | None = None

    async def node_registry_changed(self) -> None:
        if self.registry_changed is not None:
            await self.registry_changed()
