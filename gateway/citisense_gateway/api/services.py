"""The gateway parts the API works with, handed over by the service that runs it."""

from __future__ import annotations

import time
from collections.abc import Callable
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
